/**
 * Runs the CLI in-process with captured output, for tests that drive it
 * end to end (the registry tests). Test-only code.
 */
import { main } from '../cli/main.js';
import { captureIO } from './capture.js';

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export async function runCli(argv: readonly string[], env: Readonly<Record<string, string | undefined>> = {}): Promise<CliResult> {
  const c = captureIO({ env });
  const code = await main(argv, c.io);
  return { code, stdout: c.stdoutText(), stderr: c.stderr() };
}
