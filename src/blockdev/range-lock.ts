/**
 * A readers–writer lock over ranges of integers (block numbers), granted in
 * arrival order: a request waits only for earlier requests it conflicts with
 * (overlapping, and at least one of the two exclusive). So operations on
 * disjoint ranges run concurrently, reads of the same range share, and
 * overlapping operations take effect in the order they were issued — which
 * makes a device built on it linearisable in call order.
 *
 * `acquire` registers the request synchronously (before its first await), so
 * "issued" means "called". Waiters are few (bounded by the callers' own
 * in-flight limits), so a linear scan is fine.
 */
import { InterruptedError } from '../errors.js';

export type LockMode = 'shared' | 'exclusive';

interface Entry {
  readonly start: number;
  readonly end: number;
  readonly exclusive: boolean;
  granted: boolean;
  grant(): void;
}

export class RangeLock {
  /** Held and waiting requests, oldest first. */
  readonly #queue: Entry[] = [];

  /** Number of requests held or waiting (for tests and metrics). */
  get size(): number {
    return this.#queue.length;
  }

  /**
   * Waits until `[start, end)` is free for `mode`, then resolves with the
   * release function (call it exactly once). An abort while waiting rejects
   * with InterruptedError and gives up the place in the queue.
   */
  acquire(start: number, end: number, mode: LockMode, signal?: AbortSignal): Promise<() => void> {
    if (!(end > start)) throw new RangeError(`Cannot lock the empty range [${start}, ${end})`);
    if (signal?.aborted) return Promise.reject(new InterruptedError('interrupted while waiting for a block range lock'));
    return new Promise((resolve, reject) => {
      let onAbort: (() => void) | undefined;
      const entry: Entry = {
        start,
        end,
        exclusive: mode === 'exclusive',
        granted: false,
        grant: () => {
          if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
          let released = false;
          resolve(() => {
            if (released) return;
            released = true;
            this.#remove(entry);
          });
        },
      };
      this.#queue.push(entry);
      this.#grantReady();
      if (!entry.granted && signal !== undefined) {
        onAbort = () => {
          if (entry.granted) return;
          this.#remove(entry);
          reject(new InterruptedError('interrupted while waiting for a block range lock'));
        };
        signal.addEventListener('abort', onAbort, { once: true });
      }
    });
  }

  #remove(entry: Entry): void {
    const i = this.#queue.indexOf(entry);
    if (i >= 0) this.#queue.splice(i, 1);
    this.#grantReady();
  }

  /** Grants every waiting request that no earlier request conflicts with. */
  #grantReady(): void {
    for (let i = 0; i < this.#queue.length; i++) {
      const e = this.#queue[i]!;
      if (e.granted) continue;
      let blocked = false;
      for (let j = 0; j < i && !blocked; j++) blocked = conflicts(this.#queue[j]!, e);
      if (!blocked) {
        e.granted = true;
        e.grant();
      }
    }
  }
}

function conflicts(a: Entry, b: Entry): boolean {
  return (a.exclusive || b.exclusive) && a.start < b.end && b.start < a.end;
}
