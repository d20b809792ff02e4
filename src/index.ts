/**
 * chunkyard's library API. The CLI (src/cli/) is a thin layer over this; the
 * library never touches argv, the console or process.exit.
 */
import { UsageError } from './errors.js';
import { buildToFile, checkChunkSize, type BuildOptions, type BuildSummary } from './build/build.js';
import { parseImageReference } from './source/transports.js';
import { parsePlatform } from './source/platform.js';

export * from './errors.js';
export type { BuildOptions, BuildSummary, BuildProgress, ShadowedData } from './build/build.js';
export { buildToSink, buildToFile, DEFAULT_CHUNK_SIZE } from './build/build.js';
export { parseImageReference } from './source/transports.js';
import type { ImageSource } from './source/source.js';
import type { RegistryOptions } from './source/registry/client.js';
export type { RegistryOptions } from './source/registry/client.js';
export type { CredentialOptions } from './source/registry/auth.js';
export type { ImageSource, ImageReference, Layer, Platform } from './source/source.js';
export { convertImage, statsImages, manifestFromImage, S3_STANDARD_PRICES } from './convert/convert.js';
export type { ConvertOptions, ConvertResult, StatsReport, ImageReport, Prices } from './convert/convert.js';
export { verifyImage } from './convert/verify.js';
export type { VerifyOptions, VerifyReport, Problem } from './convert/verify.js';
export { extractImage } from './convert/extract.js';
export { resolveRef, fetchManifest } from './convert/ref.js';
export { StoreByteSource } from './convert/store-source.js';
export { openStore } from './store/open.js';
export type { Store } from './store/store.js';
export { generateKeys, loadKeys, writeKeyFile } from './keys/keys.js';
export type { Keys } from './keys/keys.js';
export { Ext4Reader } from './ext4/reader.js';
export { openFileByteSource } from './ext4/byte-source.js';
export type { ByteSource } from './ext4/byte-source.js';
export { VERSION } from './version.js';
// Read path: serve a published image, or read it through the same tiers.
export { serveImage } from './serve/serve.js';
export type { ServeOptions, ServeHandle, ServeSnapshot } from './serve/serve.js';
export { openPublished, openCacheTiers } from './serve/published.js';
export type { PublishedImage, OpenPublishedOptions, ReadPathConfig, DiskCacheConfig, SharedCacheConfig } from './serve/published.js';
export { NbdServer } from './serve/nbd/server.js';
export type { NbdListen, NbdAddress, NbdExport } from './serve/nbd/server.js';
export type { BlockDevice } from './blockdev/device.js';
export { fileBlockDevice } from './blockdev/device.js';
export { cowOverlay } from './blockdev/overlay.js';
export { ChunkView } from './blockdev/view.js';
export { TieredFetcher } from './cache/tiered.js';
export { DiskCache } from './cache/disk-cache.js';
export type { RedisEcTier } from './cache/redis-ec.js'; // value loaded on demand by openCacheTiers (the client costs ~0.25 s to import)
export type { CacheTier } from './cache/tier.js';
export { ReadPathMetrics, formatMetrics } from './cache/metrics.js';
export type { MetricsSnapshot } from './cache/metrics.js';

export interface BuildImageOptions extends Omit<BuildOptions, 'chunkSize'> {
  /** os/arch[/variant] @default 'linux/amd64' */
  readonly platform?: string;
  readonly chunkSize?: number;
  /** For `docker://` sources: TLS, credentials, retries. */
  readonly registry?: RegistryOptions;
}

/** Opens an image: a transport reference (`oci:DIR:TAG`, …) or a path that is detected. */
export async function openImage(
  source: string,
  options: { readonly platform?: string; readonly signal?: AbortSignal; readonly registry?: RegistryOptions } = {},
): Promise<ImageSource> {
  const ref = parseImageReference(source);
  return ref.open({
    platform: parsePlatform(options.platform ?? 'linux/amd64'),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.registry !== undefined ? { registry: options.registry } : {}),
  });
}

/** Opens `source` (a transport reference or a path) and builds its ext4 image into `outPath`. */
export async function buildImage(source: string, outPath: string, options: BuildImageOptions = {}): Promise<BuildSummary> {
  let chunkSize: number | undefined;
  try {
    if (options.chunkSize !== undefined) chunkSize = checkChunkSize(options.chunkSize);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const image = await openImage(source, options);
  try {
    const { platform: _p, registry: _r, ...rest } = options;
    return await buildToFile(image, outPath, { ...rest, ...(chunkSize !== undefined ? { chunkSize } : {}) });
  } finally {
    await image.close();
  }
}
