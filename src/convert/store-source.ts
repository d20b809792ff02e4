import { ChunkView } from '../blockdev/view.js';
import type { ReadPathMetrics } from '../cache/metrics.js';
import type { CacheTier } from '../cache/tier.js';
import { TieredFetcher } from '../cache/tiered.js';
import type { ChunkRef } from '../chunks/seal.js';
import type { Salt } from '../chunks/salt.js';
import type { ManifestHeader } from '../manifest/schema.js';
import type { Digest } from '../source/digest.js';
import type { Store } from '../store/store.js';

export interface StoreByteSourceOptions {
  readonly name: string;
  /** Decrypted chunks kept in memory. @default 64 */
  readonly cacheChunks?: number;
  /** Cache tiers in front of the store, fastest first. @default none */
  readonly tiers?: readonly CacheTier[];
  /** @default a new ReadPathMetrics (see `metrics`) */
  readonly metrics?: ReadPathMetrics;
  readonly manifestDigest?: Digest;
}

/**
 * The bytes of a published image, read chunk by chunk from a store as they
 * are asked for: a ChunkView over its own TieredFetcher (no cache tiers
 * unless given), so `verify` and `ls/cat/stat` use the same read path as
 * `serve` — name check, decryption, key re-derivation, single flight, a
 * memory LRU, metrics. close() leaves the store open (its owner closes it).
 */
export class StoreByteSource extends ChunkView {
  readonly fetcher: TieredFetcher;

  constructor(store: Store, header: ManifestHeader, chunks: readonly (ChunkRef | null)[], salt: Salt, options: StoreByteSourceOptions) {
    const fetcher = new TieredFetcher({ tiers: options.tiers ?? [], origin: store, ...(options.metrics ? { metrics: options.metrics } : {}) });
    super({
      header,
      chunks,
      salt,
      fetcher,
      name: options.name,
      ...(options.cacheChunks !== undefined ? { memoryChunks: options.cacheChunks } : {}),
      ...(options.manifestDigest !== undefined ? { manifestDigest: options.manifestDigest } : {}),
    });
    this.fetcher = fetcher;
  }

  override async close(): Promise<void> {
    await super.close();
    await this.fetcher.close();
  }
}
