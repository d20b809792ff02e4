/**
 * Bounded retry with full-jitter exponential backoff (delay drawn uniformly
 * from [0, min(maxMs, baseMs·2^n)]), for the failures the AWS SDK's own
 * retry strategy cannot see: it retries a request until the response
 * headers arrive, but a body that breaks off afterwards reaches only us.
 */
import { InterruptedError, throwIfAborted } from '../errors.js';

export interface RetryOptions {
  /** Tries in all, the first included. @default 3 */
  readonly attempts?: number;
  /** @default 200 */
  readonly baseMs?: number;
  /** @default 5000 */
  readonly maxMs?: number;
  readonly signal?: AbortSignal;
  /** Whether `e` is worth another try; others are thrown at once. */
  readonly retryable: (e: unknown) => boolean;
  /** Random in [0, 1) (tests pass a fixed one). @default Math.random */
  readonly random?: () => number;
}

export async function withRetry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const attempts = Math.max(1, options.attempts ?? 3);
  const base = options.baseMs ?? 200;
  const max = options.maxMs ?? 5000;
  const random = options.random ?? Math.random;
  for (let attempt = 1; ; attempt++) {
    throwIfAborted(options.signal);
    try {
      return await fn(attempt);
    } catch (e) {
      if (attempt >= attempts || !options.retryable(e) || options.signal?.aborted) throw e;
    }
    await sleep(Math.floor(random() * Math.min(max, base * 2 ** (attempt - 1))), options.signal);
  }
}

/** Resolves after `ms`, or rejects with InterruptedError when `signal` fires first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new InterruptedError('interrupted'));
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new InterruptedError('interrupted'));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
