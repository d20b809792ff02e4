/**
 * Every failure the library reports is one of these classes. The CLI maps
 * them to exit codes in one place (src/cli/exit.ts); the library never exits.
 */
export type ErrorCode = 'usage' | 'input' | 'not-found' | 'integrity' | 'store' | 'interrupted' | 'internal';

export abstract class ChunkyardError extends Error {
  abstract readonly code: ErrorCode;
  abstract readonly exitCode: number;
  /** The command already printed its own JSON report of this failure on stdout. */
  readonly reportedOnStdout: boolean;
  constructor(message: string, options?: { cause?: unknown; reportedOnStdout?: boolean }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = new.target.name;
    this.reportedOnStdout = options?.reportedOnStdout === true;
  }
}

/** Bad command line or option value. */
export class UsageError extends ChunkyardError {
  readonly code = 'usage';
  readonly exitCode = 2;
}

/** Malformed, unsupported or hostile input: a bad reference, corrupt JSON, an escaping tar path. */
export class InputError extends ChunkyardError {
  readonly code = 'input';
  readonly exitCode = 3;
}

/** Something named does not exist: a file, a tag, a blob, a path inside an image. */
export class NotFoundError extends ChunkyardError {
  readonly code = 'not-found';
  readonly exitCode = 4;
}

/** Data does not match what vouches for it: a digest, a diff_id, a checksum, a key. */
export class IntegrityError extends ChunkyardError {
  readonly code = 'integrity';
  readonly exitCode = 5;
}

/** A chunk or manifest store failed. */
export class StoreError extends ChunkyardError {
  readonly code = 'store';
  readonly exitCode = 6;
}

/** The operation was aborted through its AbortSignal. */
export class InterruptedError extends ChunkyardError {
  readonly code = 'interrupted';
  readonly exitCode = 130;
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new InterruptedError('interrupted');
}
