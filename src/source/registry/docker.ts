/**
 * `docker://[HOST[:PORT]/]REPO[:TAG|@DIGEST]` — an image in a registry
 * (skopeo's docker transport). Opening fetches the manifest (walking an
 * index to the wanted platform, as the layout reader does), then the config;
 * layers stream from the registry each time they are opened, through the
 * same checks as local blobs: size+digest, sniffed decompression, diff_id.
 */
import { pipeline, type Readable, PassThrough } from 'node:stream';
import { InputError, throwIfAborted } from '../../errors.js';
import { MAX_CONFIG_BYTES } from '../blobs.js';
import { createDecompressor, checkSupported, SNIFF_BYTES, sniffCompression } from '../decompress.js';
import type { Digest } from '../digest.js';
import { destroyOnAbort } from '../files.js';
import { checkLayerCount, crossCheckPlatform, LoadedImageSource } from '../image.js';
import { parseManifestDoc, resolveManifestWith } from '../layout.js';
import { DEFAULT_PLATFORM } from '../platform.js';
import { type IndexDoc, isForeignLayer, isIndexMediaType, type ManifestDoc, parseImageConfig, parseJson } from '../schema.js';
import type { ImageReference, ImageSource, Layer, OpenOptions, Platform, Transport } from '../source.js';
import { createVerifier } from '../verify.js';
import { type FetchedManifest, RegistryClient } from './client.js';
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
  const layers: Layer[] = manifest.layers.map((desc, i) => {
    throwIfAborted(signal);
    if (isForeignLayer(desc.mediaType)) {
      throw new InputError(`${what}: layer ${i} ${desc.digest} is a foreign (non-distributable) layer; downloading foreign layers is not supported`);
    }
    return new RegistryLayer(client, { index: i, mediaType: desc.mediaType, digest: desc.digest, size: desc.size, diffId: config.rootfs.diff_ids[i] as Digest });
  });
  return new LoadedImageSource({ reference: ref, manifestDigest, configDigest: manifest.config.digest, config, layers }, async () => client.close());
}

interface LayerInit {
  readonly index: number;
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly diffId: Digest;
}

/** Resolves with the stream's first `n` bytes (fewer at EOF) and a stream of everything, those bytes included. */
function peek(s: Readable, n: number): Promise<{ head: Buffer; all: Readable }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let len = 0;
    let ended = false;
    const finish = (): void => {
      cleanup();
      const head = Buffer.concat(chunks);
      const all = new PassThrough({ highWaterMark: 1024 * 1024 });
      all.write(head);
      if (ended) all.end();
      else pipeline(s, all, () => {});
      resolve({ head: head.subarray(0, n), all });
    };
    const onReadable = (): void => {
      let c: Buffer | null;
      while (len < n && (c = s.read() as Buffer | null) !== null) {
        chunks.push(c);
        len += c.length;
      }
      if (len >= n) finish();
    };
    const onEnd = (): void => {
      ended = true;
      finish();
    };
    const onError = (e: Error): void => {
      cleanup();
      reject(e);
    };
    const cleanup = (): void => {
      s.off('readable', onReadable);
      s.off('end', onEnd);
      s.off('error', onError);
    };
    s.on('readable', onReadable);
    s.once('end', onEnd);
    s.once('error', onError);
  });
}

/**
 * A layer in a registry. `open()` downloads afresh each call:
 *   HTTP blob (resumed on breaks) → size+digest check → decompress (sniffed) → diff_id check
 */
export class RegistryLayer implements Layer {
  readonly index: number;
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly diffId: Digest;
  readonly #client: RegistryClient;

  constructor(client: RegistryClient, init: LayerInit) {
    this.#client = client;
    this.index = init.index;
    this.mediaType = init.mediaType;
    this.digest = init.digest;
    this.size = init.size;
    this.diffId = init.diffId;
  }

  open(signal?: AbortSignal): Readable {
    const name = `layer ${this.index} ${this.digest}`;
    const blob = this.#client.openBlob({ digest: this.digest, size: this.size }, `layer ${this.index}`, signal);
    const out = new PassThrough({ highWaterMark: 1024 * 1024 });
    out.once('close', () => blob.destroy());
    peek(blob, SNIFF_BYTES).then(
      ({ head, all }) => {
        if (out.destroyed) {
          all.destroy();
          return;
        }
        let compression;
        try {
          compression = checkSupported(sniffCompression(head), `${name} of ${this.#client.name.familiar}`);
        } catch (e) {
          all.destroy();
          out.destroy(e as Error);
          return;
        }
        const stages: (Readable | NodeJS.ReadWriteStream)[] = [all];
        if (compression !== 'none') stages.push(createDecompressor(compression, name));
        if (compression !== 'none' || this.digest !== this.diffId) stages.push(createVerifier({ digest: this.diffId, what: name, kind: 'diff_id' }));
        stages.push(out);
        pipeline(stages, () => {});
      },
      (e: unknown) => out.destroy(e as Error),
    );
    if (signal !== undefined) destroyOnAbort(out, signal);
    return out;
  }
}
