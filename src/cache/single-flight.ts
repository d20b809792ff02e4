/**
 * One piece of work per key at a time, shared by everyone who asks while it
 * runs (desync's dedupqueue, Go's singleflight). What makes it more than a
 * Map of promises is leaving: each waiter may give up through its own
 * AbortSignal without disturbing the others, and the shared work is aborted
 * only when the last waiter has left — then the key is free at once, so a
 * later caller starts afresh instead of joining a dying flight.
 */
import { setMaxListeners } from 'node:events';
import { InterruptedError } from '../errors.js';

interface Flight<V, C> {
  readonly controller: AbortController;
  readonly promise: Promise<V>;
  readonly context: C;
  waiters: number;
  settled: boolean;
}

export interface Joined<V, C> {
  /** The shared result; rejects with InterruptedError if this waiter's signal fires first. */
  readonly result: Promise<V>;
  /** What `start` returned alongside its promise (lets a joiner act on the running work, e.g. promote it). */
  readonly context: C;
  /** Whether an existing flight was joined (false: this call started it). */
  readonly joined: boolean;
}

export class SingleFlight<K, V, C = undefined> {
  readonly #flights = new Map<K, Flight<V, C>>();

  /** Keys with work in flight. */
  get size(): number {
    return this.#flights.size;
  }

  has(key: K): boolean {
    return this.#flights.has(key);
  }

  /** The context of the flight for `key`, if one is running (without joining it). */
  context(key: K): C | undefined {
    return this.#flights.get(key)?.context;
  }

  /**
   * Joins the flight for `key`, or starts one with `start`, which gets a
   * signal that fires when every waiter has left. Throws InterruptedError
   * (without starting anything) if `signal` has already fired.
   */
  run(key: K, signal: AbortSignal | undefined, start: (signal: AbortSignal) => { readonly context: C; readonly promise: Promise<V> }): Joined<V, C> {
    if (signal?.aborted) throw new InterruptedError('interrupted');
    let f = this.#flights.get(key);
    const joined = f !== undefined;
    if (f === undefined) {
      const controller = new AbortController();
      // Each tier or store call of the flight listens on it; they are few and sequential, not a leak.
      setMaxListeners(0, controller.signal);
      const started = start(controller.signal);
      const flight: Flight<V, C> = { controller, promise: started.promise, context: started.context, waiters: 0, settled: false };
      const done = (): void => {
        flight.settled = true;
        if (this.#flights.get(key) === flight) this.#flights.delete(key);
      };
      // Also marks the rejection handled: a flight everyone left may fail unobserved.
      started.promise.then(done, done);
      this.#flights.set(key, flight);
      f = flight;
    }
    const flight = f;
    flight.waiters++;
    const result = new Promise<V>((resolve, reject) => {
      let finished = false;
      const onAbort = (): void => {
        if (finished) return;
        finished = true;
        this.#leave(key, flight);
        reject(new InterruptedError('interrupted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      flight.promise.then(
        (v) => {
          if (finished) return;
          finished = true;
          signal?.removeEventListener('abort', onAbort);
          resolve(v);
        },
        (e: unknown) => {
          if (finished) return;
          finished = true;
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      );
    });
    return { result, context: flight.context, joined };
  }

  #leave(key: K, flight: Flight<V, C>): void {
    flight.waiters--;
    if (flight.waiters > 0 || flight.settled) return;
    if (this.#flights.get(key) === flight) this.#flights.delete(key);
    flight.controller.abort(new InterruptedError('interrupted'));
  }
}
