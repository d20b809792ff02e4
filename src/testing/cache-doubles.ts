/**
 * Stand-ins for the read path's neighbours, for fetcher and view tests:
 * a CacheTier held in a Map that can be told to fail, to hold its puts, or
 * to corrupt an entry (the real disk and Redis tiers have their own tests),
 * and an origin that wraps a real Store, records the order of its gets and
 * can hold them at the door. Real behaviour, no canned answers. Test-only code.
 */
import type { ChunkId } from '../chunks/id.js';
import type { CacheTier } from '../cache/tier.js';
import { InterruptedError, StoreError } from '../errors.js';
import type { ChunkReader, OpOptions, Store } from '../store/store.js';

/** A promise plus its resolver, made once and opened once. */
class Gate {
  #open!: () => void;
  readonly opened = new Promise<void>((resolve) => {
    this.#open = resolve;
  });
  open(): void {
    this.#open();
  }
}

/** Waits for `gate` unless `signal` fires first. */
function pass(gate: Gate | undefined, signal: AbortSignal | undefined): Promise<void> {
  if (gate === undefined) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(new InterruptedError('interrupted'));
      return;
    }
    const onAbort = (): void => reject(new InterruptedError('interrupted'));
    signal?.addEventListener('abort', onAbort, { once: true });
    void gate.opened.then(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    });
  });
}

export class MemoryTier implements CacheTier {
  readonly name: string;
  readonly entries = new Map<ChunkId, Buffer>();
  /** Ids asked for, in order. */
  readonly gets: ChunkId[] = [];
  /** Ids put (completed), in order. */
  readonly puts: ChunkId[] = [];
  readonly drops: ChunkId[] = [];
  /** Make every get throw a StoreError. */
  failGets = false;
  /** Make every put reject. */
  failPuts = false;
  #putGate: Gate | undefined;
  #pendingPuts = 0;

  constructor(name: string) {
    this.name = name;
  }

  /** Puts started but held by holdPuts(). */
  get pendingPuts(): number {
    return this.#pendingPuts;
  }

  /** Puts wait until the returned function is called. */
  holdPuts(): () => void {
    const gate = new Gate();
    this.#putGate = gate;
    return () => {
      if (this.#putGate === gate) this.#putGate = undefined;
      gate.open();
    };
  }

  /** Flips one byte of the entry for `id` (as a bad disk would). */
  corrupt(id: ChunkId): void {
    const b = this.entries.get(id);
    if (b === undefined) throw new Error(`MemoryTier ${this.name}: no entry ${id} to corrupt`);
    const at = b.length >> 1;
    b[at] = b[at]! ^ 0xff;
  }

  async get(id: ChunkId, options: OpOptions = {}): Promise<Buffer | undefined> {
    this.gets.push(id);
    await Promise.resolve();
    if (options.signal?.aborted) throw new InterruptedError('interrupted');
    if (this.failGets) throw new StoreError(`cache tier ${this.name} is down`);
    const b = this.entries.get(id);
    return b === undefined ? undefined : Buffer.from(b);
  }

  async put(id: ChunkId, data: Buffer, options: OpOptions = {}): Promise<void> {
    this.#pendingPuts++;
    try {
      await pass(this.#putGate, options.signal);
      if (this.failPuts) throw new StoreError(`cache tier ${this.name} refused a put`);
      this.entries.set(id, Buffer.from(data));
      this.puts.push(id);
    } finally {
      this.#pendingPuts--;
    }
  }

  async drop(id: ChunkId): Promise<void> {
    this.drops.push(id);
    this.entries.delete(id);
  }

  async close(): Promise<void> {}
}

/**
 * A Store's chunk reads, recorded in the order they reach the store, with
 * an optional door: while `pause()` is in force, gets wait (abortably) at
 * the door until `resume()`.
 */
export class RecordingOrigin implements ChunkReader {
  readonly url: string;
  readonly #store: Store;
  /** Ids in the order their gets passed the door and went to the store. */
  readonly order: ChunkId[] = [];
  /** Ids in the order their gets arrived (before the door). */
  readonly arrived: ChunkId[] = [];
  /** Gets that were aborted (at the door or in the store). */
  aborted = 0;
  #door: Gate | undefined;

  constructor(store: Store) {
    this.#store = store;
    this.url = store.url;
  }

  pause(): void {
    this.#door ??= new Gate();
  }

  resume(): void {
    const d = this.#door;
    this.#door = undefined;
    d?.open();
  }

  async get(id: ChunkId, options: OpOptions = {}): Promise<Buffer | undefined> {
    this.arrived.push(id);
    try {
      // Several gets may wait at one door; each re-checks in case the door closed again after it opened.
      while (this.#door !== undefined) await pass(this.#door, options.signal);
      this.order.push(id);
      return await this.#store.get(id, options);
    } catch (e) {
      if (options.signal?.aborted) this.aborted++;
      throw e;
    }
  }

  has(id: ChunkId, options: OpOptions = {}): Promise<boolean> {
    return this.#store.has(id, options);
  }
}

/** Resolves once `cond()` holds, checking after each turn of the event loop (gives up after a minute). */
export async function until(cond: () => boolean, what = 'condition'): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
