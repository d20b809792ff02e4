/**
 * Bounded concurrency with two classes of work: demand reads (a client is
 * waiting) and prefetches (warming chunks someone may read later). A free
 * slot always goes to the oldest waiting demand first, and prefetches may
 * never hold the last quarter of the slots (at least one, when there are two
 * or more), so a queue of prefetches never stands between a reader and the
 * origin. A queued prefetch that a reader now wants is promoted.
 */
import { InterruptedError } from '../errors.js';

export type Priority = 'demand' | 'prefetch';

/** A place in the queue; resolves to a `release` function once a slot is held. */
export interface SlotTicket {
  readonly granted: Promise<() => void>;
  /** Moves a waiting prefetch to the back of the demand queue (no-op once granted or if already demand). */
  promote(): void;
}

interface Waiter {
  priority: Priority;
  grant(release: () => void): void;
}

export class PrioritySlots {
  readonly max: number;
  /** Most slots prefetches may hold at once. */
  readonly prefetchMax: number;
  #inUse = 0;
  #prefetchInUse = 0;
  readonly #demand: Waiter[] = [];
  readonly #prefetch: Waiter[] = [];

  constructor(max: number) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`Cannot allow ${max} concurrent requests: want an integer ≥ 1`);
    this.max = max;
    this.prefetchMax = max === 1 ? 1 : max - Math.max(1, Math.floor(max / 4));
  }

  get inUse(): number {
    return this.#inUse;
  }

  get waiting(): { readonly demand: number; readonly prefetch: number } {
    return { demand: this.#demand.length, prefetch: this.#prefetch.length };
  }

  /**
   * Waits for a slot. Rejects with InterruptedError (and leaves the queue)
   * when `signal` fires first; the caller must call the release function
   * exactly once after a grant.
   */
  acquire(priority: Priority, signal?: AbortSignal): SlotTicket {
    let waiter: Waiter | undefined;
    const granted = new Promise<() => void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(new InterruptedError('interrupted'));
        return;
      }
      const w: Waiter = {
        priority,
        grant: (release) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
      };
      const onAbort = (): void => {
        this.#remove(w);
        reject(new InterruptedError('interrupted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      waiter = w;
      (priority === 'demand' ? this.#demand : this.#prefetch).push(w);
      this.#dispatch();
    });
    return {
      granted,
      promote: () => {
        if (waiter === undefined || waiter.priority === 'demand') return;
        const i = this.#prefetch.indexOf(waiter);
        waiter.priority = 'demand';
        if (i < 0) return; // already granted as a prefetch
        this.#prefetch.splice(i, 1);
        this.#demand.push(waiter);
        this.#dispatch();
      },
    };
  }

  #remove(w: Waiter): void {
    for (const q of [this.#demand, this.#prefetch]) {
      const i = q.indexOf(w);
      if (i >= 0) q.splice(i, 1);
    }
  }

  #dispatch(): void {
    while (this.#inUse < this.max) {
      let w = this.#demand.shift();
      let asPrefetch = false;
      if (w === undefined) {
        if (this.#prefetchInUse >= this.prefetchMax) return;
        w = this.#prefetch.shift();
        if (w === undefined) return;
        asPrefetch = true;
      }
      this.#inUse++;
      if (asPrefetch) this.#prefetchInUse++;
      let released = false;
      w.grant(() => {
        if (released) return;
        released = true;
        this.#inUse--;
        if (asPrefetch) this.#prefetchInUse--;
        this.#dispatch();
      });
    }
  }
}
