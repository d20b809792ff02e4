import type { Writable } from 'node:stream';

/** What the CLI may touch of the outside world; tests pass their own. */
export interface CliIO {
  readonly stdout: Writable & { isTTY?: boolean };
  readonly stderr: Writable & { isTTY?: boolean };
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Aborted on SIGINT/SIGTERM by main(). */
  readonly signal: AbortSignal;
}
