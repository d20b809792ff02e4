/**
 * `docker://[HOST[:PORT]/]REPO[:TAG|@DIGEST]` — an image in a registry
 * (skopeo's docker transport). Opening fetches the manifest (walking an
 * index to the wanted platform, as the layout reader does), then the config;
 * layers are downloaded into temp files, a few ahead of the one being read
 * (downloads.ts), and read as they grow through the same checks as local
 * blobs, on the same worker thread: size+digest, sniffed decompression,
 * diff_id.
 */
import { pipeline, type Readable, PassThrough } from 'node:stream';
import { InputError, throwIfAborted } from '../../errors.js';
import { MAX_CONFIG_BYTES } from '../blobs.js';
import { checkSupported, SNIFF_BYTES, sniffCompression } from '../decompress.js';
import type { Digest } from '../digest.js';
import { destroyOnAbort, readAt } from '../files.js';
import { OFF_THREAD_MIN_BYTES } from '../layer.js';
import { openLayerPipeline } from '../layer-pipeline.js';
import { openOffThread, type WorkerBlob } from '../off-thread.js';
import { checkLayerCount, crossCheckPlatform, LoadedImageSource } from '../image.js';
import { parseManifestDoc, resolveManifestWith } from '../layout.js';
import { DEFAULT_PLATFORM } from '../platform.js';
import { type IndexDoc, isForeignLayer, isIndexMediaType, type ManifestDoc, parseImageConfig, parseJson } from '../schema.js';
import type { ImageReference, ImageSource, Layer, OpenOptions, Platform, Transport } from '../source.js';
import { type FetchedManifest, RegistryClient } from './client.js';
import { LayerDownloads } from './downloads.js';
import { type DockerImageName, parseDockerImageName } from './reference.js';

export class DockerReference implements ImageReference {
  readonly transport: Transport = dockerTransport;
  constructor(readonly name: DockerImageName) {}

  /** `//` + the familiar name, as containers/image writes it. */
  withinTransport(): string {
    return `//${this.name.familiar}`;
  }

  toString(): string {
    return `${this.transport.name}:${this.withinTransport()}`;
  }

  async open(options: OpenOptions = {}): Promise<ImageSource> {
    const client = new RegistryClient(this.name, options.registry ?? {});
    try {
      return await openRegistryImage(client, this, options);
    } catch (e) {
      client.close();
      throw e;
    }
  }
}

export const dockerTransport: Transport = {
  name: 'docker',
  parse(rest: string): DockerReference {
    if (!rest.startsWith('//')) throw new InputError(`invalid docker reference "docker:${rest}": want docker://[HOST[:PORT]/]REPO[:TAG|@DIGEST]`);
    return new DockerReference(parseDockerImageName(rest.slice(2)));
  },
};

/** Parses a fetched manifest, refusing one whose body contradicts its Content-Type. */
function parseFetched(m: FetchedManifest, where: string): IndexDoc | ManifestDoc {
  const json = parseJson(m.bytes, where);
  const own = typeof json === 'object' && json !== null ? (json as Record<string, unknown>)['mediaType'] : undefined;
  if (typeof own === 'string' && own !== '' && m.mediaType !== '' && own !== m.mediaType && (isIndexMediaType(m.mediaType) || isIndexMediaType(own) || m.mediaType.includes('manifest'))) {
    throw new InputError(`${where}: served as ${m.mediaType} but the document says ${own}`);
  }
  return parseManifestDoc(json, m.mediaType, where);
}

async function openRegistryImage(client: RegistryClient, ref: DockerReference, options: OpenOptions): Promise<ImageSource> {
  const what = ref.toString();
  const signal = options.signal;
  const top = await client.getManifest(client.name.manifestRef, signal);
  const doc = parseFetched(top, `${what}: manifest ${top.digest}`);
  let manifestDigest: Digest = top.digest;
  let manifest: ManifestDoc;
  let platformFromIndex: Platform | undefined;
  if (doc.kind === 'index') {
    const resolved = await resolveManifestWith(
      async (desc) => {
        const m = await client.getManifest(desc.digest, signal);
        if (m.bytes.length !== desc.size) throw new InputError(`${what}: manifest ${desc.digest} is ${m.bytes.length} bytes, but the index says ${desc.size}`);
        return parseFetched(m.mediaType === '' ? { ...m, mediaType: desc.mediaType } : m, `${what}: manifest ${desc.digest}`);
      },
      doc.manifests,
      { platform: options.platform ?? DEFAULT_PLATFORM, what, ...(signal !== undefined ? { signal } : {}) },
    );
    manifestDigest = resolved.digest;
    manifest = resolved.manifest;
    platformFromIndex = resolved.platform;
  } else {
    manifest = doc;
  }
  const configBytes = await client.getBlob(manifest.config, 'config', MAX_CONFIG_BYTES, signal);
  const config = parseImageConfig(parseJson(configBytes, `config ${manifest.config.digest} of ${what}`), `config ${manifest.config.digest} of ${what}`);
  checkLayerCount(config, manifest.layers.length, `${what} (manifest ${manifestDigest})`);
  crossCheckPlatform(config, platformFromIndex, what);
  manifest.layers.forEach((desc, i) => {
    throwIfAborted(signal);
    if (isForeignLayer(desc.mediaType)) {
      throw new InputError(`${what}: layer ${i} ${desc.digest} is a foreign (non-distributable) layer; downloading foreign layers is not supported`);
    }
  });
  const o = client.options;
  const downloads = await LayerDownloads.create(
    client,
    manifest.layers.map((desc, i) => ({ index: i, digest: desc.digest, size: desc.size })),
    what,
    { ...(o.prefetchLayers !== undefined ? { ahead: o.prefetchLayers } : {}), ...(o.tempDir !== undefined ? { tempDir: o.tempDir } : {}) },
  );
  const layers: Layer[] = manifest.layers.map(
    (desc, i) => new RegistryLayer(downloads, { index: i, mediaType: desc.mediaType, digest: desc.digest, size: desc.size, diffId: config.rootfs.diff_ids[i] as Digest }),
  );
  // Aborting the open's signal stops the downloads too (close() still removes them).
  const stop = (): void => void downloads.close();
  signal?.addEventListener('abort', stop, { once: true });
  return new LoadedImageSource({ reference: ref, manifestDigest, configDigest: manifest.config.digest, config, layers }, async () => {
    signal?.removeEventListener('abort', stop);
    try {
      await downloads.close();
    } finally {
      client.close();
    }
  });
}

interface LayerInit {
  readonly index: number;
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly diffId: Digest;
}

/**
 * A layer in a registry. `open()` reads the blob's temp file (LayerDownloads
 * fetches it, and the next layers ahead) while it is written:
 *
 *   HTTP blob (resumed on breaks) → temp file → size+digest check → decompress (sniffed) → diff_id check
 *
 * Blobs of OFF_THREAD_MIN_BYTES or more are checked and decompressed on the
 * layer worker thread as the file grows; smaller ones once downloaded, here.
 */
export class RegistryLayer implements Layer {
  readonly index: number;
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly diffId: Digest;
  readonly #downloads: LayerDownloads;

  constructor(downloads: LayerDownloads, init: LayerInit) {
    this.#downloads = downloads;
    this.index = init.index;
    this.mediaType = init.mediaType;
    this.digest = init.digest;
    this.size = init.size;
    this.diffId = init.diffId;
  }

  open(signal?: AbortSignal): Readable {
    const d = this.#downloads.acquire(this.index);
    const blob: WorkerBlob = {
      range: { file: d.file, start: 0, size: this.size, where: this.#downloads.where },
      digest: this.digest,
      size: this.size,
      diffId: this.diffId,
      compression: 'sniff',
      name: `layer ${this.index} ${this.digest}`,
    };
    let out: Readable;
    if (this.size >= OFF_THREAD_MIN_BYTES) {
      out = openOffThread(blob, { growth: d });
    } else {
      const pass = new PassThrough({ highWaterMark: 1024 * 1024 });
      out = pass;
      d.whenComplete()
        .then(async () => {
          const head = await readAt(blob.range, 0, SNIFF_BYTES);
          if (pass.destroyed) return;
          const compression = checkSupported(sniffCompression(head), `${blob.name} (${blob.range.where})`);
          pipeline(openLayerPipeline({ ...blob, compression }), pass, () => {});
        })
        .catch((e: unknown) => pass.destroy(e as Error));
    }
    out.once('close', () => this.#downloads.release(this.index, d));
    if (signal !== undefined) destroyOnAbort(out, signal);
    return out;
  }
}
