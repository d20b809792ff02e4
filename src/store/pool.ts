/**
 * Run `fn` over a source with at most `limit` calls in flight. The source is
 * pulled only when a slot is free, so a producer that reads or encrypts
 * chunks is held back (backpressure) and at most `limit` items are alive at
 * once. On the first failure no new item is started, the others are told to
 * stop (the AbortSignal handed to `fn`), and that first error is thrown once
 * every call has settled; the source is closed (`return()`).
 */
import { setMaxListeners } from 'node:events';
import { throwIfAborted } from '../errors.js';

export async function forEachBounded<T>(
  source: AsyncIterable<T> | Iterable<T>,
  limit: number,
  fn: (item: T, signal: AbortSignal) => Promise<void>,
  signal?: AbortSignal,
): Promise<void> {
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`Cannot run with concurrency ${limit}: want an integer >= 1`);
  const stop = new AbortController();
  // Every call in flight may listen on it (the SDK adds a listener or two per request): that is bounded by `limit`, not a leak.
  setMaxListeners(0, stop.signal);
  const onAbort = (): void => stop.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  const it: AsyncIterator<T> | Iterator<T> =
    Symbol.asyncIterator in source ? (source as AsyncIterable<T>)[Symbol.asyncIterator]() : (source as Iterable<T>)[Symbol.iterator]();
  const inFlight = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  let exhausted = false;
  const fail = (error: unknown): void => {
    if (failure === undefined) failure = { error };
    stop.abort();
  };
  try {
    while (failure === undefined) {
      throwIfAborted(signal);
      while (inFlight.size >= limit) await Promise.race(inFlight);
      if (failure !== undefined) break;
      const next = await it.next();
      if (next.done === true) {
        exhausted = true;
        break;
      }
      const p: Promise<void> = fn(next.value, stop.signal)
        .then(undefined, fail)
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
    }
  } catch (e) {
    fail(e);
  } finally {
    await Promise.all(inFlight);
    signal?.removeEventListener('abort', onAbort);
    if (!exhausted) {
      try {
        await it.return?.();
      } catch {
        // closing a failed source: the first error is the one to report
      }
    }
  }
  if (failure !== undefined) throw failure.error;
}
