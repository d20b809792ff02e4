/**
 * Reading `docker save` archives (reference/oci.md §5). manifest.json names
 * the images; for each:
 *
 * - Docker 25+ also writes an OCI layout. When its index reaches a manifest
 *   with this image's config, and that manifest's layer count matches the
 *   config's diff_ids, it is used (real manifest digest, media types,
 *   descriptors). Docker 25.0.0 wrote `"layers": []` there, hence the check.
 * - Otherwise (classic archives, or an inconsistent OCI half) the image is
 *   built from manifest.json: config path, layer paths. Classic layers are
 *   uncompressed `<id>/layer.tar` (a duplicate may be a symlink, followed one
 *   level by the tar index); their blob digest is their diff_id. A layer
 *   that is compressed (umoci writes such archives) and not stored under
 *   `blobs/sha256/` is hashed once at open to learn its digest.
 *   manifestDigest is then the config digest.
 */
import { InputError, IntegrityError, NotFoundError, throwIfAborted } from '../errors.js';
import { MAX_CONFIG_BYTES, readJsonFile } from './blobs.js';
import { checkSupported, SNIFF_BYTES, sniffCompression, type SupportedCompression } from './decompress.js';
import { type DockerArchiveSelector, familiarDockerName } from './docker-reference.js';
import { type Digest, sha256Digest } from './digest.js';
import { type ArchiveFiles, hashRange, readAt, readWhole } from './files.js';
import { checkLayerCount, LoadedImageSource, loadImage, readConfig } from './image.js';
import { FileLayer } from './layer.js';
import { readLayoutIndex, readManifestBlob, type ResolvedManifest } from './layout.js';
import { type Descriptor, isAttestation, isObject, MediaType, parseImageConfig, parseJson } from './schema.js';
import type { ImageReference, ImageSource, Layer, OpenOptions } from './source.js';
import { checkBuffer } from './verify.js';

const MAX_SAVE_MANIFEST_BYTES = 8 * 1024 * 1024;
const MAX_DEPTH = 8;

/** One item of manifest.json. */
export interface SaveManifestItem {
  readonly config: string;
  readonly repoTags: readonly string[];
  readonly layers: readonly string[];
  /** diff_id → descriptor, for foreign layers not in the archive. */
  readonly layerSources: Readonly<Record<string, unknown>>;
}

export function parseSaveManifest(v: unknown, where: string): SaveManifestItem[] {
  if (!Array.isArray(v)) throw new InputError(`${where}: expected a JSON array of images`);
  return v.map((item, i) => {
    const w = `${where} [${i}]`;
    if (!isObject(item)) throw new InputError(`${w}: not an object`);
    const config = item['Config'];
    if (typeof config !== 'string' || config === '') throw new InputError(`${w}: "Config" must be a path`);
    const tags = item['RepoTags'] ?? [];
    if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string')) throw new InputError(`${w}: "RepoTags" must be an array of strings`);
    const layers = item['Layers'] ?? [];
    if (!Array.isArray(layers) || !layers.every((t) => typeof t === 'string')) throw new InputError(`${w}: "Layers" must be an array of paths`);
    const sources = item['LayerSources'] ?? {};
    if (!isObject(sources)) throw new InputError(`${w}: "LayerSources" must be an object`);
    return { config, repoTags: tags as string[], layers: layers as string[], layerSources: sources };
  });
}

function describeNames(items: readonly SaveManifestItem[]): string {
  return items.map((it, i) => `@${i}${it.repoTags.length > 0 ? ` (${it.repoTags.join(', ')})` : ' (untagged)'}`).join(', ');
}

function selectItem(items: readonly SaveManifestItem[], selector: DockerArchiveSelector, what: string): SaveManifestItem {
  if (items.length === 0) throw new NotFoundError(`${what}: the archive holds no images`);
  switch (selector.kind) {
    case 'index': {
      const item = items[selector.index];
      if (item === undefined) throw new NotFoundError(`${what}: no image @${selector.index}; the archive holds ${items.length}: ${describeNames(items)}`);
      return item;
    }
    case 'name': {
      const item = items.find((it) => it.repoTags.some((t) => familiarDockerName(t) === selector.familiar));
      if (item === undefined) throw new NotFoundError(`${what}: no image named ${selector.name}; images: ${describeNames(items)}`);
      return item;
    }
    case 'only': {
      const [item] = items;
      if (items.length !== 1 || item === undefined) {
        throw new InputError(`${what}: the archive holds ${items.length} images, pick one with :NAME:TAG or :@N; images: ${describeNames(items)}`);
      }
      return item;
    }
  }
}

const BLOB_NAME_RE = /^blobs\/sha256\/([0-9a-f]{64})$/;
const LEGACY_CONFIG_RE = /^([0-9a-f]{64})\.json$/;

/** The digest a content-addressed archive path vouches for, if any. */
function digestOfName(name: string, kind: 'config' | 'layer'): Digest | undefined {
  const m = BLOB_NAME_RE.exec(name) ?? (kind === 'config' ? LEGACY_CONFIG_RE.exec(name) : null);
  return m !== null ? (`sha256:${m[1]}` as Digest) : undefined;
}

function normalName(name: string): string {
  return name.replace(/^(?:\.\/|\/)+/, '');
}

/**
 * Depth-first search of the OCI index for the manifest whose config is
 * `configDigest`. Entries whose blobs are absent (other platforms in a
 * containerd export) or are not images are skipped; corrupt blobs are not.
 */
async function findOciManifest(files: ArchiveFiles, configDigest: Digest, what: string, signal: AbortSignal | undefined): Promise<ResolvedManifest | undefined> {
  let entries: readonly Descriptor[];
  try {
    entries = (await readLayoutIndex(files)).manifests;
  } catch (e) {
    if (e instanceof InputError || e instanceof NotFoundError) return undefined;
    throw e;
  }
  const visit = async (list: readonly Descriptor[], depth: number): Promise<ResolvedManifest | undefined> => {
    if (depth > MAX_DEPTH) return undefined;
    for (const d of list) {
      throwIfAborted(signal);
      if (isAttestation(d)) continue;
      let doc;
      try {
        doc = await readManifestBlob(files, d, what);
      } catch (e) {
        if (e instanceof IntegrityError) throw e;
        if (e instanceof InputError || e instanceof NotFoundError) continue;
        throw e;
      }
      if (doc.kind === 'manifest') {
        if (doc.config.digest === configDigest) return { digest: d.digest, manifest: doc };
      } else {
        const found = await visit(doc.manifests, depth + 1);
        if (found !== undefined) return found;
      }
    }
    return undefined;
  };
  return visit(entries, 0);
}

const MEDIA_TYPE_BY_COMPRESSION: Record<SupportedCompression, string> = {
  none: MediaType.dockerLayer,
  gzip: MediaType.dockerLayerGzip,
  zstd: MediaType.ociLayerZstd,
};

/** The image from manifest.json alone. */
async function loadFromSaveManifest(files: ArchiveFiles, reference: ImageReference, item: SaveManifestItem, signal: AbortSignal | undefined): Promise<ImageSource> {
  const what = reference.toString();
  const configName = normalName(item.config);
  const configRange = await files.locate(configName);
  if (configRange === undefined) throw new NotFoundError(`${what}: config ${item.config} named in manifest.json is not in the archive`);
  const configBytes = await readWhole(configRange, MAX_CONFIG_BYTES, `config of ${what}`);
  const vouched = digestOfName(configName, 'config');
  if (vouched !== undefined) checkBuffer(configBytes, { digest: vouched, what: `config of ${what} (${configRange.where})` });
  const configDigest = vouched ?? sha256Digest(configBytes);
  const config = parseImageConfig(parseJson(configBytes, configRange.where), `config ${configDigest} of ${what}`);
  checkLayerCount(config, item.layers.length, `${what} (manifest.json)`);
  const layers: Layer[] = [];
  for (const [i, raw] of item.layers.entries()) {
    throwIfAborted(signal);
    const name = normalName(raw);
    const diffId = config.rootfs.diff_ids[i] as Digest;
    const range = await files.locate(name);
    if (range === undefined) {
      if (item.layerSources[diffId] !== undefined) {
        throw new InputError(`${what}: layer ${i} (${diffId}) is a foreign layer that is not included in the archive; downloading foreign layers is not supported`);
      }
      throw new NotFoundError(`${what}: layer ${i} ${raw} named in manifest.json is not in the archive`);
    }
    const compression = checkSupported(sniffCompression(await readAt(range, 0, SNIFF_BYTES)), `layer ${i} of ${what} (${range.where})`);
    const digest = digestOfName(name, 'layer') ?? (compression === 'none' ? diffId : await hashRange(range, signal));
    layers.push(new FileLayer({ index: i, mediaType: MEDIA_TYPE_BY_COMPRESSION[compression], digest, size: range.size, diffId, range, compression }));
  }
  return new LoadedImageSource({ reference, manifestDigest: configDigest, configDigest, config, layers });
}

export async function openDockerSave(files: ArchiveFiles, reference: ImageReference, selector: DockerArchiveSelector, options: OpenOptions): Promise<ImageSource> {
  const what = reference.toString();
  if (!files.index.has('manifest.json')) {
    if (files.index.has('oci-layout')) {
      throw new InputError(`${what}: no manifest.json in the archive; it is an OCI layout, open it as oci-archive:`);
    }
    throw new InputError(`${what}: no manifest.json in the archive (not a docker save archive)`);
  }
  const items = parseSaveManifest(await readJsonFile(files, 'manifest.json', MAX_SAVE_MANIFEST_BYTES), `${files.location}:manifest.json`);
  const item = selectItem(items, selector, what);
  const configDigest = digestOfName(normalName(item.config), 'config');
  if (configDigest !== undefined && files.index.has('index.json') && files.index.has('oci-layout')) {
    const found = await findOciManifest(files, configDigest, what, options.signal);
    if (found !== undefined) {
      const config = await readConfig(files, found.manifest.config, what);
      if (found.manifest.layers.length === config.rootfs.diff_ids.length) {
        return loadImage(files, reference, found.digest, found.manifest, { config, ...(options.signal !== undefined ? { signal: options.signal } : {}) });
      }
    }
  }
  return loadFromSaveManifest(files, reference, item, options.signal);
}
