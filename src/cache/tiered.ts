/**
 * The chunk fetcher of the read path (DESIGN.md "The read path"): asks each
 * cache tier in turn, fastest first, then the origin store, and returns the
 * chunk's ciphertext checked against its name. Everything between the reader
 * and the origin is a cache that may be wrong or down, so:
 *
 * - a tier that fails is a miss (counted), never an error for the reader;
 * - a tier entry that does not match its name is counted, dropped (without
 *   waiting) and read from below;
 * - a hit in tier j, or at the origin, is copied into the tiers above it in
 *   the background — the reader never waits for a fill, and at most
 *   `maxPendingFills` fills are pending (more are skipped and counted), so a
 *   slow tier cannot make memory grow;
 * - only the origin's answer is final: missing or corrupt there is an
 *   IntegrityError naming the chunk and the store.
 *
 * Concurrent gets of one chunk share one fetch (single-flight.ts); origin
 * requests are bounded and demand reads go before prefetches (slots.ts).
 * The fetcher handles ciphertext only and never sees a key.
 */
import { checkChunkName } from '../chunks/seal.js';
import type { ChunkId } from '../chunks/id.js';
import { IntegrityError, InterruptedError } from '../errors.js';
import type { ChunkReader, OpOptions } from '../store/store.js';
import { ReadPathMetrics } from './metrics.js';
import { SingleFlight } from './single-flight.js';
import { PrioritySlots, type Priority, type SlotTicket } from './slots.js';
import type { CacheTier } from './tier.js';

export type { Priority } from './slots.js';

/**
 * Fills held at once: 128 × 512 KiB = 64 MiB at most. nbdcopy keeps 4 × 64
 * requests in flight; at 32 it dropped 9 of 269 disk fills of a cold copy.
 */
export const DEFAULT_MAX_PENDING_FILLS = 128;

export interface TieredFetcherOptions {
  /** Cache tiers, fastest first (disk, then shared). May be empty. The fetcher does not close them. */
  readonly tiers: readonly CacheTier[];
  /** Where every chunk is (a Store). The fetcher does not close it. */
  readonly origin: ChunkReader & { readonly url?: string };
  /** Names the origin in error messages. @default origin.url, else 'the origin store' */
  readonly originName?: string;
  /** Origin requests in flight at once. @default 16 */
  readonly originConcurrency?: number;
  /** Tier fills waiting or running at once; further fills are skipped (and counted as dropped). @default DEFAULT_MAX_PENDING_FILLS */
  readonly maxPendingFills?: number;
  /** Where to count. @default a new ReadPathMetrics */
  readonly metrics?: ReadPathMetrics;
}

export interface FetchOptions extends OpOptions {
  /** 'demand': a reader is waiting; 'prefetch': warming, goes behind every demand read. @default 'demand' */
  readonly priority?: Priority;
}

/** What a joiner can do to a running fetch: move it to the demand queue. */
interface Lane {
  priority: Priority;
  ticket: SlotTicket | undefined;
}

export class TieredFetcher {
  readonly metrics: ReadPathMetrics;
  readonly tiers: readonly CacheTier[];
  readonly originName: string;
  readonly #origin: ChunkReader;
  readonly #slots: PrioritySlots;
  readonly #flights = new SingleFlight<ChunkId, Buffer, Lane>();
  readonly #maxPendingFills: number;
  readonly #fills = new Set<Promise<void>>();
  /** Aborts fills still running at close(). */
  readonly #closing = new AbortController();

  constructor(options: TieredFetcherOptions) {
    this.tiers = [...options.tiers];
    this.#origin = options.origin;
    this.originName = options.originName ?? options.origin.url ?? 'the origin store';
    this.#slots = new PrioritySlots(options.originConcurrency ?? 16);
    this.#maxPendingFills = options.maxPendingFills ?? DEFAULT_MAX_PENDING_FILLS;
    if (!Number.isInteger(this.#maxPendingFills) || this.#maxPendingFills < 0) {
      throw new RangeError(`Cannot allow ${this.#maxPendingFills} pending fills: want an integer ≥ 0`);
    }
    this.metrics = options.metrics ?? new ReadPathMetrics();
    const names = new Set<string>();
    for (const t of this.tiers) {
      if (t.name === 'origin' || t.name === 'memory' || names.has(t.name)) {
        throw new RangeError(`Cannot use a second cache tier named ${JSON.stringify(t.name)}: tier names key the metrics`);
      }
      names.add(t.name);
      this.metrics.tier(t.name);
    }
    this.metrics.tier('origin');
  }

  /** Fills pending (queued or running). */
  get pendingFills(): number {
    return this.#fills.size;
  }

  /** Chunks being fetched right now. */
  get inFlight(): number {
    return this.#flights.size;
  }

  /**
   * The ciphertext of chunk `id`, checked against its name. Rejects with
   * IntegrityError when the origin lacks the chunk or holds other bytes,
   * InterruptedError when `signal` fires (other readers of the same chunk
   * carry on), StoreError when the origin fails. The buffer may be shared
   * with other readers and pending fills: do not modify it.
   */
  get(id: ChunkId, options: FetchOptions = {}): Promise<Buffer> {
    const priority = options.priority ?? 'demand';
    let joined;
    try {
      joined = this.#flights.run(id, options.signal, (signal) => {
        const lane: Lane = { priority, ticket: undefined };
        return { context: lane, promise: this.#fetch(id, signal, lane) };
      });
    } catch (e) {
      return Promise.reject(e);
    }
    if (priority === 'demand') promote(joined.context);
    return joined.result;
  }

  /** A reader now waits for `id`: if its fetch is queued as a prefetch, move it to the demand queue. */
  promote(id: ChunkId): void {
    const lane = this.#flights.context(id);
    if (lane) promote(lane);
  }

  /** Resolves once every pending fill has settled (fills started meanwhile included). */
  async settled(): Promise<void> {
    while (this.#fills.size > 0) await Promise.allSettled([...this.#fills]);
  }

  /** Stops starting fills, aborts those running, and waits for them. Gets still work (without fills). Tiers and origin stay open. */
  async close(): Promise<void> {
    this.#closing.abort(new InterruptedError('interrupted'));
    await this.settled();
  }

  async #fetch(id: ChunkId, signal: AbortSignal, lane: Lane): Promise<Buffer> {
    const m = this.metrics;
    /** Drops started for corrupt entries, by tier: a fill of that tier goes after its drop. */
    const drops = new Map<number, Promise<void>>();
    for (let i = 0; i < this.tiers.length; i++) {
      const tier = this.tiers[i]!;
      const tm = m.tier(tier.name);
      const t0 = m.nowUs();
      let data: Buffer | undefined;
      try {
        data = await tier.get(id, { signal });
      } catch {
        if (signal.aborted) {
          tm.miss('aborted');
          throw new InterruptedError('interrupted');
        }
        tm.miss('error');
        continue;
      }
      const us = m.sinceUs(t0);
      if (signal.aborted) {
        tm.miss('aborted');
        throw new InterruptedError('interrupted');
      }
      if (data === undefined) {
        tm.miss();
        continue;
      }
      try {
        checkChunkName(data, id);
      } catch {
        tm.miss('corrupt');
        // Not awaited: the reader goes on to the next tier meanwhile. A failed drop leaves a
        // corrupt entry that the next read finds (and drops) again; nothing else to do about it.
        drops.set(i, tier.drop(id).catch(() => undefined));
        continue;
      }
      tm.hit(data.length, us);
      this.#fill(id, data, i, drops);
      return data;
    }
    return this.#fromOrigin(id, signal, lane, drops);
  }

  async #fromOrigin(id: ChunkId, signal: AbortSignal, lane: Lane, drops: ReadonlyMap<number, Promise<void>>): Promise<Buffer> {
    const om = this.metrics.tier('origin');
    const ticket = this.#slots.acquire(lane.priority, signal);
    lane.ticket = ticket;
    const release = await ticket.granted;
    let data: Buffer | undefined;
    const t0 = this.metrics.nowUs();
    try {
      data = await this.#origin.get(id, { signal });
    } catch (e) {
      om.miss(signal.aborted ? 'aborted' : 'error');
      if (signal.aborted) throw new InterruptedError('interrupted', { cause: e });
      throw e;
    } finally {
      release();
    }
    const us = this.metrics.sinceUs(t0);
    if (data === undefined) {
      om.miss();
      throw new IntegrityError(`chunk ${id} is missing from ${this.originName}`);
    }
    try {
      checkChunkName(data, id);
    } catch (e) {
      om.miss('corrupt');
      throw new IntegrityError(`chunk ${id} in ${this.originName}: content does not match its name`, { cause: e });
    }
    om.hit(data.length, us);
    this.#fill(id, data, this.tiers.length, drops);
    return data;
  }

  /** Copies `data` into tiers 0..below-1 in the background. */
  #fill(id: ChunkId, data: Buffer, below: number, drops: ReadonlyMap<number, Promise<void>>): void {
    for (let i = 0; i < below; i++) {
      const tier = this.tiers[i]!;
      const tm = this.metrics.tier(tier.name);
      if (this.#closing.signal.aborted || this.#fills.size >= this.#maxPendingFills) {
        tm.fillsDropped++;
        continue;
      }
      const signal = this.#closing.signal;
      // setImmediate: a tier's put may do synchronous work before its first await; let the reader run first.
      const p: Promise<void> = new Promise<void>((resolve) => setImmediate(resolve))
        .then(() => drops.get(i))
        .then(() => tier.put(id, data, { signal }))
        .then(
          () => {
            tm.fillsDone++;
          },
          () => {
            tm.fillsFailed++;
          },
        )
        .finally(() => {
          this.#fills.delete(p);
        });
      this.#fills.add(p);
    }
  }
}

function promote(lane: Lane): void {
  if (lane.priority === 'demand') return;
  lane.priority = 'demand';
  lane.ticket?.promote();
}
