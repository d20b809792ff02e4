/**
 * Opens a published image for reading: manifest from the store, opened with
 * the user's key, behind the read path's tiers (disk cache, shared
 * erasure-coded tier) — the one place `serve`, `ls/cat/stat` and library
 * callers assemble store → tiers → block view.
 */
import { StoreByteSource } from '../convert/store-source.js';
import { fetchManifest } from '../convert/ref.js';
import { DiskCache } from '../cache/disk-cache.js';
import type { PolicyName } from '../cache/eviction.js';
import { ReadPathMetrics, type MetricsSnapshot } from '../cache/metrics.js';
import type { CacheTier } from '../cache/tier.js';
import { throwIfAborted } from '../errors.js';
import type { Keys } from '../keys/keys.js';
import { manifestSalt, openManifest } from '../manifest/seal.js';
import type { ManifestHeader } from '../manifest/schema.js';
import type { Digest } from '../source/digest.js';
import type { Store } from '../store/store.js';

export interface DiskCacheConfig {
  readonly dir: string;
  readonly capacityBytes: number;
  /** @default 'lru2' (bench/eviction.ts) */
  readonly policy?: PolicyName;
}

export interface SharedCacheConfig {
  /** Redis nodes: `redis://host:port`, `unix:///path.sock`; at least k + m. */
  readonly nodes: readonly string[];
  /** @default 4 */
  readonly k?: number;
  /** @default 1 */
  readonly m?: number;
  /** @default 1000 */
  readonly timeoutMs?: number;
}

export interface ReadPathConfig {
  readonly diskCache?: DiskCacheConfig;
  readonly sharedCache?: SharedCacheConfig;
  /** Decrypted chunks kept in memory. @default 64 */
  readonly memoryChunks?: number;
}

/** Opens the configured cache tiers, fastest first; on failure closes what it opened. */
export async function openCacheTiers(config: ReadPathConfig, signal?: AbortSignal): Promise<CacheTier[]> {
  const tiers: CacheTier[] = [];
  try {
    if (config.diskCache) {
      const { dir, capacityBytes, policy } = config.diskCache;
      tiers.push(await DiskCache.open({ dir, capacityBytes, ...(policy !== undefined ? { policy } : {}) }));
    }
    throwIfAborted(signal);
    if (config.sharedCache) {
      const { nodes, k, m, timeoutMs } = config.sharedCache;
      // Loaded on demand: the Redis client takes ~0.25 s to import, and most runs have no shared tier.
      const { RedisEcTier } = await import('../cache/redis-ec.js');
      tiers.push(await RedisEcTier.open({ nodes, ...(k !== undefined ? { k } : {}), ...(m !== undefined ? { m } : {}), ...(timeoutMs !== undefined ? { timeoutMs } : {}) }));
    }
    throwIfAborted(signal);
    return tiers;
  } catch (e) {
    await Promise.allSettled(tiers.map((t) => t.close()));
    throw e;
  }
}

export interface OpenPublishedOptions extends ReadPathConfig {
  readonly store: Store;
  /** A tag or `sha256:` manifest digest. */
  readonly ref: string;
  readonly keys: Keys;
  readonly signal?: AbortSignal;
  /** Close the store with the image. @default false */
  readonly ownsStore?: boolean;
}

/** A published image, open for reading through its tiers. */
export interface PublishedImage {
  readonly ref: string;
  readonly digest: Digest;
  readonly header: ManifestHeader;
  /** The bytes (ByteSource for the ext4 reader, and a read-only block device). */
  readonly view: StoreByteSource;
  readonly tiers: readonly CacheTier[];
  readonly metrics: ReadPathMetrics;
  snapshot(): MetricsSnapshot;
  /** Closes the view, the tiers and (if owned) the store. */
  close(): Promise<void>;
}

/** How long close() waits for pending tier fills before abandoning them. */
export const FILL_GRACE_MS = 5000;

async function settledWithin(fetcher: { settled(): Promise<void> }, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([fetcher.settled(), new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

export async function openPublished(options: OpenPublishedOptions): Promise<PublishedImage> {
  const { store, ref, keys, signal } = options;
  const closeStore = async (): Promise<void> => {
    if (options.ownsStore === true) await store.close();
  };
  let tiers: CacheTier[] = [];
  try {
    const { digest, manifest } = await fetchManifest(store, ref, signal);
    const opened = openManifest(manifest.bytes, keys.manifestKey);
    tiers = await openCacheTiers(options, signal);
    const metrics = new ReadPathMetrics();
    const view = new StoreByteSource(store, opened.header, opened.chunks, manifestSalt(opened.header, keys.salt), {
      name: ref === digest ? digest : `${ref} (${digest})`,
      tiers,
      metrics,
      manifestDigest: digest,
      ...(options.memoryChunks !== undefined ? { cacheChunks: options.memoryChunks } : {}),
    });
    let closing: Promise<void> | undefined;
    const owned = tiers;
    return {
      ref,
      digest,
      header: opened.header,
      view,
      tiers: owned,
      metrics,
      snapshot: () => metrics.snapshot(),
      close: () =>
        (closing ??= (async () => {
          // Let write-backs started by reads land (the next start finds them in the
          // tiers), but never hang a shutdown on a slow tier.
          await settledWithin(view.fetcher, FILL_GRACE_MS);
          await view.close();
          await Promise.allSettled(owned.map((t) => t.close()));
          await closeStore();
        })()),
    };
  } catch (e) {
    await Promise.allSettled(tiers.map((t) => t.close()));
    await closeStore();
    throw e;
  }
}
