/**
 * Turning a verified manifest into an ImageSource: fetch and check the
 * config, match layers with diff_ids, locate and sniff every layer blob.
 * Shared by the OCI layout reader (directory or archive) and by
 * docker-archive's OCI route.
 */
import { InputError, NotFoundError, throwIfAborted } from '../errors.js';
import { blobName, locateBlob, MAX_CONFIG_BYTES, readJsonBlob } from './blobs.js';
import { checkSupported, SNIFF_BYTES, sniffCompression } from './decompress.js';
import type { Digest } from './digest.js';
import { type FileSet, readAt } from './files.js';
import { FileLayer } from './layer.js';
import { formatPlatform, platformMatches } from './platform.js';
import { isForeignLayer, type ManifestDoc, parseImageConfig } from './schema.js';
import type { ImageConfig, ImageReference, ImageSource, Layer, Platform } from './source.js';

export interface ImageParts {
  readonly reference: ImageReference;
  readonly manifestDigest: Digest;
  readonly configDigest: Digest;
  readonly config: ImageConfig;
  readonly layers: readonly Layer[];
}

export class LoadedImageSource implements ImageSource {
  readonly reference: ImageReference;
  readonly manifestDigest: Digest;
  readonly configDigest: Digest;
  readonly config: ImageConfig;
  readonly layers: readonly Layer[];
  readonly #release: (() => Promise<void>) | undefined;
  #closed: Promise<void> | undefined;

  constructor(parts: ImageParts, release?: () => Promise<void>) {
    this.reference = parts.reference;
    this.manifestDigest = parts.manifestDigest;
    this.configDigest = parts.configDigest;
    this.config = parts.config;
    this.layers = parts.layers;
    this.#release = release;
  }

  /** Sources over files hold nothing between reads; `release` is for those that do. */
  close(): Promise<void> {
    this.#closed ??= this.#release?.() ?? Promise.resolve();
    return this.#closed;
  }
}

/** Reads and verifies the config blob named by `desc`. */
export async function readConfig(files: FileSet, desc: { readonly digest: Digest; readonly size: number }, what: string): Promise<ImageConfig> {
  const { json } = await readJsonBlob(files, desc, `config of ${what}`, MAX_CONFIG_BYTES);
  return parseImageConfig(json, `config ${desc.digest} of ${what}`);
}

export function checkLayerCount(config: ImageConfig, layerCount: number, what: string): void {
  if (config.rootfs.diff_ids.length !== layerCount) {
    throw new InputError(`${what}: the manifest lists ${layerCount} layers but the config has ${config.rootfs.diff_ids.length} diff_ids`);
  }
}

/**
 * When the image was chosen through an index entry with a platform, the
 * config must agree with it (a mislabelled index would otherwise give the
 * wrong architecture silently).
 */
export function crossCheckPlatform(config: ImageConfig, labelled: Platform | undefined, what: string): void {
  if (labelled === undefined || config.os === undefined || config.architecture === undefined) return;
  const actual: Platform = { os: config.os, architecture: config.architecture };
  if (!platformMatches({ os: labelled.os, architecture: labelled.architecture }, actual)) {
    throw new InputError(`${what}: the index says ${formatPlatform(labelled)} but the image config says ${formatPlatform(actual)}`);
  }
}

/** Builds an ImageSource from a manifest whose blobs live in `files` (`config`: already read and verified). */
export async function loadImage(
  files: FileSet,
  reference: ImageReference,
  manifestDigest: Digest,
  manifest: ManifestDoc,
  options: { readonly platformFromIndex?: Platform; readonly signal?: AbortSignal; readonly config?: ImageConfig },
): Promise<ImageSource> {
  const what = reference.toString();
  const config = options.config ?? (await readConfig(files, manifest.config, what));
  checkLayerCount(config, manifest.layers.length, `${what} (manifest ${manifestDigest})`);
  crossCheckPlatform(config, options.platformFromIndex, what);
  const layers: Layer[] = [];
  for (const [i, desc] of manifest.layers.entries()) {
    throwIfAborted(options.signal);
    const diffId = config.rootfs.diff_ids[i] as Digest;
    if (isForeignLayer(desc.mediaType) && (await files.locate(blobName(desc.digest))) === undefined) {
      const urls = desc.urls !== undefined && desc.urls.length > 0 ? ` (urls: ${desc.urls.join(', ')})` : '';
      throw new InputError(`${what}: layer ${i} ${desc.digest} is a foreign (non-distributable) layer whose blob is not included${urls}; downloading foreign layers is not supported`);
    }
    const range = await locateBlob(files, desc, `layer ${i} of ${what}`).catch((e: unknown) => {
      if (e instanceof NotFoundError) throw new NotFoundError(`${what}: layer ${i} blob ${desc.digest} not found in ${files.location}`);
      throw e;
    });
    const head = await readAt(range, 0, SNIFF_BYTES);
    const compression = checkSupported(sniffCompression(head), `layer ${i} ${desc.digest} of ${what}`);
    layers.push(new FileLayer({ index: i, mediaType: desc.mediaType, digest: desc.digest, size: desc.size, diffId, range, compression }));
  }
  return new LoadedImageSource({ reference, manifestDigest, configDigest: manifest.config.digest, config, layers });
}
