import { CommanderError } from 'commander';
import { ChunkyardError } from '../errors.js';
import type { CliIO } from './io.js';

/**
 * The one place where failures become exit codes and one line on stderr
 * (or `{"error":{code,message}}` on stdout with --json).
 */
export function reportError(err: unknown, io: CliIO, json: boolean): number {
  let code: string;
  let exitCode: number;
  let message: string;
  if (err instanceof ChunkyardError) {
    ({ code, exitCode, message } = err);
  } else if (err instanceof CommanderError) {
    code = 'usage';
    exitCode = 2;
    message = err.message.replace(/^error: /, '');
  } else if (isNodeError(err) && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) {
    code = 'not-found';
    exitCode = 4;
    message = err.message;
  } else if (isNodeError(err) && (err.code === 'EACCES' || err.code === 'EPERM' || err.code === 'ENOSPC' || err.code === 'EROFS')) {
    code = 'io';
    exitCode = 1;
    message = err.message;
  } else {
    code = 'internal';
    exitCode = 1;
    message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  }
  const reported = err instanceof ChunkyardError && err.reportedOnStdout;
  if (json && !reported) io.stdout.write(JSON.stringify({ error: { code, message } }) + '\n');
  io.stderr.write(`chunkyard: ${firstLine(message, code === 'internal')}\n`);
  return exitCode;
}

function firstLine(message: string, keepStack: boolean): string {
  return keepStack ? message : (message.split('\n')[0] ?? message);
}

function isNodeError(e: unknown): e is NodeJS.ErrnoException {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string';
}
