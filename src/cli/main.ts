import { Command, CommanderError } from 'commander';
import type { Writable } from 'node:stream';
import { reportError } from './exit.js';
import type { CliIO } from './io.js';
import { buildCommand } from './commands/build.js';
import { lsCommand, catCommand, statCommand } from './commands/inspect.js';
import { convertCommand, statsCommand } from './commands/convert.js';
import { verifyCommand, extractCommand } from './commands/verify.js';
import { keygenCommand } from './commands/keygen.js';
import { serveCommand } from './commands/serve.js';
import { VERSION } from '../version.js';

export interface MainIO {
  readonly stdout: Writable & { isTTY?: boolean };
  readonly stderr: Writable & { isTTY?: boolean };
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Defaults to one tied to SIGINT/SIGTERM. */
  readonly signal?: AbortSignal;
}

/** Runs the CLI on `argv` (without node and script) and returns the exit code. */
export async function main(argv: readonly string[], mainIO: MainIO): Promise<number> {
  const controller = new AbortController();
  const onSignal = (): void => controller.abort();
  if (!mainIO.signal) {
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  }
  const io: CliIO = { stdout: mainIO.stdout, stderr: mainIO.stderr, env: mainIO.env, signal: mainIO.signal ?? controller.signal };
  const json = argv.includes('--json');
  const program = new Command('chunkyard')
    .description('Turn container images into deterministic, chunked ext4 block images for on-demand loading')
    .version(VERSION)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      outputError: () => {}, // reported once by reportError
    })
    .showHelpAfterError(false);
  for (const cmd of [buildCommand(io), convertCommand(io), statsCommand(io), verifyCommand(io), extractCommand(io), keygenCommand(io), lsCommand(io), catCommand(io), statCommand(io), serveCommand(io)]) {
    // addCommand() copies no settings: every command must throw, not exit, and print through io.
    cmd.exitOverride().configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      outputError: () => {},
    });
    program.addCommand(cmd);
  }
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError && (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help')) {
      return 0;
    }
    return reportError(err, io, json);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
