import { createRequire } from 'node:module';

/**
 * A typed, promise-returning face on `@ronomon/reed-solomon` (a native addon
 * with no types). The addon runs the coding on libuv's thread pool, so a
 * 512 KiB chunk never blocks the event loop; the price is that every call is
 * asynchronous.
 *
 * The addon's rules (binding.c), which erasure.ts keeps: 1 <= k <= MAX_K,
 * 1 <= m <= MAX_M (no m = 0: erasure.ts never calls it without parity),
 * shard size a non-zero multiple of 8, `sources` holding at least k shards,
 * `targets` at most m and disjoint from `sources`. Shard bit i < k is data
 * shard i in `buffer`, bit k + j is parity shard j in `parity`.
 */

/** The part of the addon's API we use. */
interface ReedSolomonAddon {
  readonly MAX_K: number;
  readonly MAX_M: number;
  /** An encoding context for (k, m); can be cached and used concurrently. */
  create(k: number, m: number): Buffer;
  encode(
    context: Buffer,
    sources: number,
    targets: number,
    buffer: Buffer,
    bufferOffset: number,
    bufferSize: number,
    parity: Buffer,
    parityOffset: number,
    paritySize: number,
    callback: (error: Error | null | undefined) => void,
  ): void;
}

const addon = createRequire(import.meta.url)('@ronomon/reed-solomon') as ReedSolomonAddon;

export const RS_MAX_DATA_SHARDS = addon.MAX_K;
export const RS_MAX_PARITY_SHARDS = addon.MAX_M;

const contexts = new Map<string, Buffer>();

function context(k: number, m: number): Buffer {
  const key = `${k}+${m}`;
  let c = contexts.get(key);
  if (c === undefined) {
    c = addon.create(k, m);
    contexts.set(key, c);
  }
  return c;
}

export interface RsCodeArgs {
  readonly k: number;
  readonly m: number;
  /** Bit i set: shard i holds good bytes. */
  readonly sources: number;
  /** Bit i set: shard i is to be computed. */
  readonly targets: number;
  /** The k data shards, back to back, `shardSize` bytes each. */
  readonly data: Buffer;
  /** The m parity shards, back to back. */
  readonly parity: Buffer;
  readonly shardSize: number;
}

/** Computes the `targets` shards from the `sources` shards, in place. */
export function rsCode(a: RsCodeArgs): Promise<void> {
  return new Promise((resolve, reject) => {
    addon.encode(context(a.k, a.m), a.sources, a.targets, a.data, 0, a.k * a.shardSize, a.parity, 0, a.m * a.shardSize, (error) => {
      if (error) reject(error);
      else resolve();
    });
  });
}
