/**
 * A cache tier on the read path: local disk (L1) or the shared erasure-coded
 * tier (L2), in front of the origin store (L3). Tiers hold chunk
 * *ciphertext* under the chunk's name, exactly as the origin does, so a tier
 * never sees a key and anything it returns can be checked against the name.
 *
 * A tier is a cache, not a store: it may forget anything at any time, a miss
 * is an answer (`undefined`), and `put` is best effort. Checking what comes
 * back is the fetcher's job (tiered.ts), which then calls `drop`.
 */
import type { ChunkId } from '../chunks/id.js';
import type { OpOptions } from '../store/store.js';

export interface CacheTier {
  /** Short name for metrics and messages: 'disk', 'shared'. */
  readonly name: string;
  /** The ciphertext held under `id`, or undefined. Never a partial object. */
  get(id: ChunkId, options?: OpOptions): Promise<Buffer | undefined>;
  /** Keeps `data` (the caller has checked that `id` names it). Resolves once kept or given up on. */
  put(id: ChunkId, data: Buffer, options?: OpOptions): Promise<void>;
  /** Forgets `id` (a corrupt entry). Missing is fine. */
  drop(id: ChunkId): Promise<void>;
  close(): Promise<void>;
}
