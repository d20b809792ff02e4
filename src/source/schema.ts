/**
 * OCI / Docker v2 JSON documents: media types, and validation of indexes,
 * manifests, descriptors and image configs (reference/oci.md §1–3). Parsers
 * take `unknown` (from JSON.parse) and return typed values or throw an
 * InputError naming `where` (the file or blob) and the offending field.
 */
import { InputError } from '../errors.js';
import { type Digest, parseDigest } from './digest.js';
import type { ImageConfig, Platform, RuntimeConfig } from './source.js';

export const MediaType = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

const INDEX_TYPES: ReadonlySet<string> = new Set([MediaType.ociIndex, MediaType.dockerList]);
const MANIFEST_TYPES: ReadonlySet<string> = new Set([MediaType.ociManifest, MediaType.dockerManifest]);
const SCHEMA1_TYPES: ReadonlySet<string> = new Set([
  'application/vnd.docker.distribution.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v1+prettyjws',
]);
const CONFIG_TYPES: ReadonlySet<string> = new Set([MediaType.ociConfig, MediaType.dockerConfig]);
const LAYER_TYPES: ReadonlySet<string> = new Set([
  MediaType.ociLayer,
  MediaType.ociLayerGzip,
  MediaType.ociLayerZstd,
  MediaType.dockerLayer,
  MediaType.dockerLayerGzip,
]);
const FOREIGN_LAYER_TYPES: ReadonlySet<string> = new Set([
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  'application/vnd.docker.image.rootfs.foreign.diff.tar',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
]);

export function isIndexMediaType(mediaType: string): boolean {
  return INDEX_TYPES.has(mediaType);
}

export function isForeignLayer(mediaType: string): boolean {
  return FOREIGN_LAYER_TYPES.has(mediaType);
}

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly platform?: Platform;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly urls?: readonly string[];
  readonly artifactType?: string;
}

export interface IndexDoc {
  readonly kind: 'index';
  readonly mediaType?: string;
  readonly manifests: readonly Descriptor[];
}

export interface ManifestDoc {
  readonly kind: 'manifest';
  readonly mediaType?: string;
  readonly artifactType?: string;
  readonly config: Descriptor;
  readonly layers: readonly Descriptor[];
}

type Json = Record<string, unknown>;

export function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** JSON.parse with an InputError naming `where`. */
export function parseJson(buf: Uint8Array, where: string): unknown {
  try {
    return JSON.parse(Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('utf8')) as unknown;
  } catch (e) {
    throw new InputError(`${where}: malformed JSON (${(e as Error).message})`, { cause: e });
  }
}

function optString(o: Json, key: string, where: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new InputError(`${where}: "${key}" must be a string`);
  return v;
}

function stringRecord(v: unknown, where: string, key: string): Record<string, string> {
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === 'string')) {
    throw new InputError(`${where}: "${key}" must be an object of strings`);
  }
  return v as Record<string, string>;
}

function stringArray(v: unknown, where: string, key: string): string[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new InputError(`${where}: "${key}" must be an array of strings`);
  return v as string[];
}

export function parseDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw new InputError(`${where}: descriptor is not an object`);
  // Old writers omit mediaType; the kind is then sniffed from the content.
  const mediaType = optString(v, 'mediaType', where) ?? '';
  const digest = parseDigest(v['digest'], `digest in ${where}`);
  const size = v['size'];
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw new InputError(`${where}: descriptor ${digest} has invalid size ${JSON.stringify(size)}`);
  }
  let platform: Platform | undefined;
  const p = v['platform'];
  if (p !== undefined && p !== null) {
    if (!isObject(p) || typeof p['os'] !== 'string' || typeof p['architecture'] !== 'string') {
      throw new InputError(`${where}: descriptor ${digest} has an invalid platform (want os and architecture strings)`);
    }
    const variant = optString(p, 'variant', where);
    platform = variant === undefined || variant === '' ? { os: p['os'], architecture: p['architecture'] } : { os: p['os'], architecture: p['architecture'], variant };
  }
  const annotations = v['annotations'] === undefined || v['annotations'] === null ? undefined : stringRecord(v['annotations'], where, 'annotations');
  const urls = v['urls'] === undefined || v['urls'] === null ? undefined : stringArray(v['urls'], where, 'urls');
  const artifactType = optString(v, 'artifactType', where);
  return {
    mediaType,
    digest,
    size,
    ...(platform !== undefined ? { platform } : {}),
    ...(annotations !== undefined ? { annotations } : {}),
    ...(urls !== undefined ? { urls } : {}),
    ...(artifactType !== undefined ? { artifactType } : {}),
  };
}

/**
 * What a manifest-ish document is: its own `mediaType`, else the one its
 * descriptor declared, else sniffed from its shape (as containers/image's
 * GuessMIMEType). schemaVersion 1 is always schema1.
 */
export function classify(doc: Json, declared: string): 'index' | 'manifest' | 'schema1' | 'unknown' {
  if (doc['schemaVersion'] === 1) return 'schema1';
  const mt = typeof doc['mediaType'] === 'string' ? doc['mediaType'] : declared;
  if (INDEX_TYPES.has(mt)) return 'index';
  if (MANIFEST_TYPES.has(mt)) return 'manifest';
  if (SCHEMA1_TYPES.has(mt)) return 'schema1';
  if (mt !== '') return 'unknown';
  if (Array.isArray(doc['manifests'])) return 'index';
  if (isObject(doc['config'])) return 'manifest';
  return 'unknown';
}

/**
 * An image index (index.json or a nested index / manifest list).
 * `"manifests": null` (early Docker 25 `docker save`) reads as empty.
 */
export function parseIndex(v: unknown, where: string): IndexDoc {
  if (!isObject(v)) throw new InputError(`${where}: not a JSON object`);
  if (v['schemaVersion'] !== 2) throw new InputError(`${where}: unsupported schemaVersion ${JSON.stringify(v['schemaVersion'])} (want 2)`);
  const mediaType = optString(v, 'mediaType', where);
  if (mediaType !== undefined && !INDEX_TYPES.has(mediaType)) throw new InputError(`${where}: media type ${mediaType} is not an image index`);
  const list = v['manifests'] ?? [];
  if (!Array.isArray(list)) throw new InputError(`${where}: "manifests" must be an array`);
  const manifests = list.map((d, i) => parseDescriptor(d, `${where} manifests[${i}]`));
  return { kind: 'index', ...(mediaType !== undefined ? { mediaType } : {}), manifests };
}

/** An image manifest; refuses artifacts and non-image layers with a clear message. */
export function parseManifest(v: unknown, where: string): ManifestDoc {
  if (!isObject(v)) throw new InputError(`${where}: not a JSON object`);
  if (v['schemaVersion'] === 1) throw new InputError(`${where}: Docker schema1 manifests are not supported (re-push or convert the image)`);
  if (v['schemaVersion'] !== 2) throw new InputError(`${where}: unsupported schemaVersion ${JSON.stringify(v['schemaVersion'])} (want 2)`);
  const mediaType = optString(v, 'mediaType', where);
  const artifactType = optString(v, 'artifactType', where);
  const config = parseDescriptor(v['config'], `${where} config`);
  if (artifactType !== undefined) {
    throw new InputError(`${where}: is an artifact (artifactType ${artifactType}), not a container image`);
  }
  if (config.mediaType !== '' && !CONFIG_TYPES.has(config.mediaType)) {
    throw new InputError(`${where}: is an artifact (config media type ${config.mediaType}), not a container image`);
  }
  const list = v['layers'] ?? [];
  if (!Array.isArray(list)) throw new InputError(`${where}: "layers" must be an array`);
  const layers = list.map((d, i) => {
    const desc = parseDescriptor(d, `${where} layers[${i}]`);
    if (desc.mediaType !== '' && !LAYER_TYPES.has(desc.mediaType) && !FOREIGN_LAYER_TYPES.has(desc.mediaType)) {
      throw new InputError(`${where}: layer ${i} (${desc.digest}) has media type ${desc.mediaType}, not a container image layer`);
    }
    return desc;
  });
  return {
    kind: 'manifest',
    ...(mediaType !== undefined ? { mediaType } : {}),
    ...(artifactType !== undefined ? { artifactType } : {}),
    config,
    layers,
  };
}

/** Entries BuildKit adds to describe other entries (provenance, SBOM): never images. */
export function isAttestation(d: Descriptor): boolean {
  return d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest' || (d.platform?.os === 'unknown' && d.platform.architecture === 'unknown');
}

export const REF_NAME = 'org.opencontainers.image.ref.name';

function runtimeConfig(v: unknown, where: string): RuntimeConfig | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw new InputError(`${where}: "config" must be an object`);
  const w = `${where} config`;
  const out: Record<string, unknown> = { ...v };
  for (const key of ['User', 'WorkingDir', 'StopSignal']) {
    if (out[key] === null) delete out[key];
    else optString(v, key, w);
  }
  for (const key of ['Env']) {
    if (out[key] === null) delete out[key];
    else if (out[key] !== undefined) stringArray(out[key], w, key);
  }
  for (const key of ['Entrypoint', 'Cmd']) {
    if (out[key] !== undefined && out[key] !== null) stringArray(out[key], w, key);
  }
  if (out['Labels'] !== undefined && out['Labels'] !== null) stringRecord(out['Labels'], w, 'Labels');
  for (const key of ['ExposedPorts', 'Volumes']) {
    if (out[key] === null) delete out[key];
    else if (out[key] !== undefined && !isObject(out[key])) throw new InputError(`${w}: "${key}" must be an object`);
  }
  return out as RuntimeConfig;
}

/**
 * An image config. Keeps every field of the JSON (history etc.) but checks
 * the types of those ImageConfig names, and drops `null` where the type has
 * no room for it.
 */
export function parseImageConfig(v: unknown, where: string): ImageConfig {
  if (!isObject(v)) throw new InputError(`${where}: not a JSON object`);
  for (const key of ['architecture', 'os', 'variant']) optString(v, key, where);
  const rootfs = v['rootfs'];
  if (!isObject(rootfs)) throw new InputError(`${where}: missing "rootfs"`);
  if (rootfs['type'] !== 'layers') throw new InputError(`${where}: rootfs.type is ${JSON.stringify(rootfs['type'])}, expected "layers"`);
  const ids = rootfs['diff_ids'] ?? [];
  if (!Array.isArray(ids)) throw new InputError(`${where}: rootfs.diff_ids must be an array`);
  const diffIds = ids.map((d, i) => parseDigest(d, `rootfs.diff_ids[${i}] in ${where}`));
  const out: Record<string, unknown> = { ...v, rootfs: { ...rootfs, type: 'layers', diff_ids: diffIds } };
  const rc = runtimeConfig(v['config'], where);
  if (rc === undefined) delete out['config'];
  else out['config'] = rc;
  for (const key of ['architecture', 'os', 'variant']) if (out[key] === null) delete out[key];
  return out as unknown as ImageConfig;
}
