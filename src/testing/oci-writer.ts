/**
 * Builds small synthetic images for tests from layer tars (make them with
 * `tarOf`, tar-writer.ts): OCI layouts as a directory or a tar
 * (`writeOciLayout`, `writeOciArchive`, optionally with multi-platform
 * indexes), and `docker save` archives in the classic or Docker 25+ form
 * (`writeDockerArchive`). Digests, sizes and diff_ids are computed, so the
 * result is valid unless a test asks for something broken (`layerBlobs`,
 * `config`, `editManifest`).
 *
 * Test-only code: everything is built in memory (test images are small).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { compress as zstdCompress } from 'zstd-napi';
import { type Digest, digestHex, sha256Digest } from '../source/digest.js';
import type { Platform } from '../source/source.js';
import { type TarEntrySpec, tarOf } from './tar-writer.js';

// --- blobs and layouts ------------------------------------------------------------

export type LayerCompression = 'gzip' | 'zstd' | 'none';

export function compressLayer(tar: Buffer, c: LayerCompression): Buffer {
  if (c === 'gzip') return zlib.gzipSync(tar);
  if (c === 'zstd') return zstdCompress(tar);
  return tar;
}

const LAYER_MEDIA_TYPE: Record<LayerCompression, string> = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  none: 'application/vnd.oci.image.layer.v1.tar',
};

export interface SyntheticImage {
  /** Uncompressed layer tars, base first (see tarOf). */
  readonly layers: readonly Buffer[];
  /** Default 'gzip'. */
  readonly compression?: LayerCompression;
  /** Stored as is instead of the compressed layer (e.g. truncated); diff_ids still come from `layers`. */
  readonly layerBlobs?: readonly (Buffer | undefined)[];
  /** Top-level keys replacing those of the generated config (e.g. `config`, `rootfs`, `architecture`). */
  readonly config?: Readonly<Record<string, unknown>>;
  /** Default linux/amd64; written into the config and, in a multi-platform index, the entry. */
  readonly platform?: Platform;
  /** Last chance to change the manifest JSON before it is stored. */
  readonly editManifest?: (m: Record<string, unknown>) => Record<string, unknown>;
}

export interface WrittenImage {
  readonly manifestDigest: Digest;
  readonly manifestSize: number;
  readonly configDigest: Digest;
  readonly layerDigests: readonly Digest[];
  readonly layerSizes: readonly number[];
  readonly diffIds: readonly Digest[];
  readonly config: Record<string, unknown>;
}

export type LayoutEntry =
  | (SyntheticImage & { readonly tag?: string })
  | {
      readonly tag?: string;
      /** A multi-platform image index; each member labelled with its platform. */
      readonly platforms: readonly SyntheticImage[];
      /** Add a BuildKit-style attestation entry (unknown/unknown) first. */
      readonly attestation?: boolean;
    };

export interface WrittenEntry {
  readonly tag?: string;
  /** Digest of what index.json points at (a manifest, or the nested index). */
  readonly digest: Digest;
  readonly mediaType: string;
  readonly size: number;
  readonly images: readonly WrittenImage[];
}

interface Desc {
  mediaType: string;
  digest: Digest;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os: string; architecture: string; variant?: string };
}

/** The files of a layout (or archive) being built, by relative path. */
class FileTree {
  readonly files = new Map<string, Buffer>();
  blob(bytes: Buffer): { digest: Digest; size: number } {
    const digest = sha256Digest(bytes);
    this.files.set(`blobs/sha256/${digestHex(digest)}`, bytes);
    return { digest, size: bytes.length };
  }
  json(v: unknown): Buffer {
    return Buffer.from(JSON.stringify(v));
  }
}

function platformJson(p: Platform): { os: string; architecture: string; variant?: string } {
  return p.variant !== undefined ? { os: p.os, architecture: p.architecture, variant: p.variant } : { os: p.os, architecture: p.architecture };
}

function buildImage(tree: FileTree, img: SyntheticImage, layerMediaType?: (c: LayerCompression) => string): WrittenImage {
  const compression = img.compression ?? 'gzip';
  const diffIds = img.layers.map((l) => sha256Digest(l));
  const platform = img.platform ?? { os: 'linux', architecture: 'amd64' };
  const config: Record<string, unknown> = {
    created: '1970-01-01T00:00:00Z',
    ...platformJson(platform),
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: img.layers.map((_, i) => ({ created: '1970-01-01T00:00:00Z', created_by: `synthetic layer ${i}` })),
    ...img.config,
  };
  const configBytes = tree.json(config);
  const configDesc = tree.blob(configBytes);
  const layerDescs = img.layers.map((tar, i) => {
    const bytes = img.layerBlobs?.[i] ?? compressLayer(tar, compression);
    return { mediaType: (layerMediaType ?? ((c) => LAYER_MEDIA_TYPE[c]))(compression), ...tree.blob(bytes) };
  });
  let manifest: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...configDesc },
    layers: layerDescs,
  };
  if (img.editManifest !== undefined) manifest = img.editManifest(manifest);
  const m = tree.blob(tree.json(manifest));
  return {
    manifestDigest: m.digest,
    manifestSize: m.size,
    configDigest: configDesc.digest,
    layerDigests: layerDescs.map((d) => d.digest),
    layerSizes: layerDescs.map((d) => d.size),
    diffIds,
    config,
  };
}

function buildLayout(tree: FileTree, entries: readonly LayoutEntry[]): WrittenEntry[] {
  const written: WrittenEntry[] = [];
  const indexEntries: Desc[] = [];
  for (const e of entries) {
    const annotations = e.tag !== undefined ? { 'org.opencontainers.image.ref.name': e.tag } : undefined;
    if ('platforms' in e) {
      const images = e.platforms.map((p) => buildImage(tree, p));
      const members: Desc[] = images.map((img, i) => ({
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: img.manifestDigest,
        size: img.manifestSize,
        platform: platformJson(e.platforms[i]?.platform ?? { os: 'linux', architecture: 'amd64' }),
      }));
      if (e.attestation === true) {
        const att = tree.blob(tree.json({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.empty.v1+json', ...tree.blob(Buffer.from('{}')) }, layers: [] }));
        members.unshift({
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...att,
          platform: { os: 'unknown', architecture: 'unknown' },
          annotations: { 'vnd.docker.reference.type': 'attestation-manifest', 'vnd.docker.reference.digest': images[0]?.manifestDigest ?? '' },
        });
      }
      const idx = tree.blob(tree.json({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: members }));
      const desc: Desc = { mediaType: 'application/vnd.oci.image.index.v1+json', ...idx, ...(annotations !== undefined ? { annotations } : {}) };
      indexEntries.push(desc);
      written.push({ ...(e.tag !== undefined ? { tag: e.tag } : {}), digest: idx.digest, mediaType: desc.mediaType, size: idx.size, images });
    } else {
      const img = buildImage(tree, e);
      const desc: Desc = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: img.manifestDigest, size: img.manifestSize, ...(annotations !== undefined ? { annotations } : {}) };
      indexEntries.push(desc);
      written.push({ ...(e.tag !== undefined ? { tag: e.tag } : {}), digest: img.manifestDigest, mediaType: desc.mediaType, size: img.manifestSize, images: [img] });
    }
  }
  tree.files.set('oci-layout', tree.json({ imageLayoutVersion: '1.0.0' }));
  tree.files.set('index.json', tree.json({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: indexEntries }));
  return written;
}

async function writeTree(dir: string, tree: FileTree): Promise<void> {
  for (const [name, bytes] of tree.files) {
    const file = path.join(dir, ...name.split('/'));
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, bytes);
  }
}

/** An entry packTree adds as it is, beside the files (a docker layer.tar symlink). */
type ExtraEntry = TarEntrySpec & { readonly name: string };

/** Packs files (directories implied by paths are added first) into a tar. */
function packTree(files: ReadonlyMap<string, Buffer>, extra: readonly ExtraEntry[] = [], dotSlash = false): Buffer {
  const dirs = new Set<string>();
  for (const name of [...files.keys(), ...extra.map((f) => f.name)]) {
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  const p = (n: string): string => (dotSlash ? `./${n}` : n);
  return tarOf([
    ...[...dirs].sort().map((d): TarEntrySpec => ({ name: `${p(d)}/`, type: 'dir' })),
    ...[...files].sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, data]): TarEntrySpec => ({ name: p(name), data })),
    ...extra.map((f) => ({ ...f, name: p(f.name) })),
  ]);
}

/** Writes an OCI image layout directory holding `entries` (created if missing). */
export async function writeOciLayout(dir: string, entries: readonly LayoutEntry[]): Promise<WrittenEntry[]> {
  const tree = new FileTree();
  const written = buildLayout(tree, entries);
  await mkdir(dir, { recursive: true });
  await writeTree(dir, tree);
  return written;
}

/** The same layout packed as a tar (an oci-archive). `dotSlash` names entries `./blobs/…` as some tools do. */
export async function writeOciArchive(file: string, entries: readonly LayoutEntry[], options: { readonly dotSlash?: boolean } = {}): Promise<WrittenEntry[]> {
  const tree = new FileTree();
  const written = buildLayout(tree, entries);
  await writeFile(file, packTree(tree.files, [], options.dotSlash === true));
  return written;
}

/** Stores `bytes` as a blob of the layout in `dir`; returns its descriptor fields. */
export async function writeBlob(dir: string, bytes: Buffer): Promise<{ digest: Digest; size: number }> {
  const digest = sha256Digest(bytes);
  const file = path.join(dir, 'blobs', 'sha256', digestHex(digest));
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, bytes);
  return { digest, size: bytes.length };
}

/** Path of a blob file in a layout directory. */
export function blobFile(dir: string, digest: Digest): string {
  return path.join(dir, 'blobs', 'sha256', digestHex(digest));
}

// --- docker save --------------------------------------------------------------------

export interface DockerArchiveImage {
  /** Uncompressed layer tars. A layer equal to an earlier one is written once (the duplicate is a symlink, as docker does). */
  readonly layers: readonly Buffer[];
  readonly repoTags?: readonly string[];
  readonly config?: Readonly<Record<string, unknown>>;
  readonly platform?: Platform;
}

export interface WrittenDockerImage {
  readonly configDigest: Digest;
  readonly diffIds: readonly Digest[];
  /** Docker 25+ form only. */
  readonly manifestDigest?: Digest;
}

/**
 * A `docker save` tarball. 'classic' (Docker ≤ 24): `<config-hex>.json`,
 * `<id>/layer.tar` + VERSION + json, manifest.json, repositories. 'oci'
 * (Docker 25+): an OCI layout with uncompressed layers stored under their
 * diff_id, plus manifest.json pointing into blobs/. `emptyOciLayers`
 * reproduces Docker 25.0.0's `"layers": []` bug.
 */
export async function writeDockerArchive(
  file: string,
  images: readonly DockerArchiveImage[],
  options: {
    readonly format?: 'classic' | 'oci';
    readonly emptyOciLayers?: boolean;
    /** Classic form: compress each layer.tar (as umoci's docker archives do). Default 'none'. */
    readonly layerCompression?: LayerCompression;
  } = {},
): Promise<WrittenDockerImage[]> {
  const tree = new FileTree();
  const extra: ExtraEntry[] = [];
  const manifest: unknown[] = [];
  const repositories: Record<string, Record<string, string>> = {};
  const written: WrittenDockerImage[] = [];
  if (options.format === 'oci') {
    const entries: LayoutEntry[] = images.map((img) => ({
      layers: img.layers,
      compression: 'none',
      ...(img.config !== undefined ? { config: img.config } : {}),
      ...(img.platform !== undefined ? { platform: img.platform } : {}),
      ...(img.repoTags?.[0] !== undefined ? { tag: img.repoTags[0].slice(img.repoTags[0].lastIndexOf(':') + 1) } : {}),
      ...(options.emptyOciLayers === true ? { editManifest: (m: Record<string, unknown>) => ({ ...m, layers: [] }) } : {}),
    }));
    const layout = buildLayout(tree, entries);
    for (const [i, e] of layout.entries()) {
      const img = e.images[0];
      if (img === undefined) continue;
      manifest.push({
        Config: `blobs/sha256/${digestHex(img.configDigest)}`,
        RepoTags: images[i]?.repoTags ?? null,
        Layers: img.diffIds.map((d) => `blobs/sha256/${digestHex(d)}`),
      });
      written.push({ configDigest: img.configDigest, diffIds: img.diffIds, manifestDigest: img.manifestDigest });
    }
  } else {
    for (const img of images) {
      const diffIds = img.layers.map((l) => sha256Digest(l));
      const platform = img.platform ?? { os: 'linux', architecture: 'amd64' };
      const config = {
        created: '1970-01-01T00:00:00Z',
        ...platformJson(platform),
        config: { Cmd: ['/bin/sh'] },
        rootfs: { type: 'layers', diff_ids: diffIds },
        ...img.config,
      };
      const configBytes = tree.json(config);
      const configDigest = sha256Digest(configBytes);
      tree.files.set(`${digestHex(configDigest)}.json`, configBytes);
      const layerPaths: string[] = [];
      const firstById = new Map<Digest, string>();
      let parent = '';
      for (const [i, tar] of img.layers.entries()) {
        // v1 ids chain over the parent, so the same content at another depth gets another id.
        const id = digestHex(sha256Digest(`${parent} ${diffIds[i]} ${i}`));
        const first = firstById.get(diffIds[i] as Digest);
        if (first === undefined) {
          tree.files.set(`${id}/layer.tar`, compressLayer(tar, options.layerCompression ?? 'none'));
          firstById.set(diffIds[i] as Digest, id);
        } else {
          extra.push({ name: `${id}/layer.tar`, type: 'symlink', linkname: `../${first}/layer.tar` });
        }
        tree.files.set(`${id}/VERSION`, Buffer.from('1.0'));
        tree.files.set(`${id}/json`, tree.json({ id, ...(parent !== '' ? { parent } : {}) }));
        layerPaths.push(`${id}/layer.tar`);
        parent = id;
      }
      manifest.push({ Config: `${digestHex(configDigest)}.json`, RepoTags: img.repoTags ?? null, Layers: layerPaths });
      for (const t of img.repoTags ?? []) {
        const c = t.lastIndexOf(':');
        (repositories[t.slice(0, c)] ??= {})[t.slice(c + 1)] = parent;
      }
      written.push({ configDigest, diffIds });
    }
  }
  tree.files.set('manifest.json', tree.json(manifest));
  tree.files.set('repositories', tree.json(repositories));
  await writeFile(file, packTree(tree.files, extra));
  return written;
}
