/**
 * A small real image published into a real file store, for read-path tests:
 * an OCI layout (noise files, so every data chunk is distinct, and a run of
 * zeros, so there are holes) built to ext4 by `buildImage` (the plaintext to
 * compare against) and converted by `convertImage` in 64 KiB chunks (the
 * store and manifest to read from). Test-only code.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Salt } from '../chunks/salt.js';
import { fetchManifest } from '../convert/ref.js';
import { buildImage, convertImage, generateKeys, openImage, openStore, type Keys, type Store } from '../index.js';
import { sealChunk, type ChunkRef } from '../chunks/seal.js';
import { manifestSalt, openManifest, sealManifest, type OpenedManifest } from '../manifest/seal.js';
import type { Digest } from '../source/digest.js';
import { writeOciLayout } from './oci-writer.js';
import { tarOf } from './tar-writer.js';
import { tmpDir, type TmpDir } from './tools.js';

const T = 1_700_000_000;
export const PUBLISHED_CHUNK = 64 * 1024;
/** Free space as a fraction of what is used: all-zero chunks, so the manifest has holes. */
const HEADROOM = 1;

/** Deterministic bytes that do not repeat. */
export function noise(n: number, seed: string): Buffer {
  const out = Buffer.alloc(n);
  for (let at = 0, i = 0; at < n; i++) at += createHash('sha256').update(`${seed}/${i}`).digest().copy(out, at);
  return out;
}

export interface PublishedImage {
  readonly dir: TmpDir;
  /** The file store directory. */
  readonly storeDir: string;
  readonly keys: Keys;
  readonly digest: Digest;
  readonly opened: OpenedManifest;
  readonly salt: Salt;
  /** The whole ext4 image, as `build` makes it. */
  readonly plain: Buffer;
  readonly chunkSize: number;
  /** A new Store over `storeDir` (the caller closes it). */
  openStore(): Promise<Store>;
  cleanup(): Promise<void>;
}

export async function publishSmallImage(prefix: string): Promise<PublishedImage> {
  const dir = await tmpDir(prefix);
  try {
    const layout = path.join(dir.path, 'layout');
    await writeOciLayout(layout, [
      {
        tag: 'v1',
        layers: [
          tarOf([
            { name: 'etc/', type: 'dir', mtime: T },
            { name: 'etc/hostname', data: 'view\n', mtime: T },
            { name: 'data/', type: 'dir', mtime: T },
            { name: 'data/a.bin', data: noise(700_000, 'a'), mtime: T },
            { name: 'data/zeros.bin', data: Buffer.alloc(300_000), mtime: T },
            { name: 'data/b.bin', data: noise(300_000, 'b'), mtime: T },
          ]),
        ],
      },
    ]);
    const source = `oci:${layout}:v1`;
    const imageFile = path.join(dir.path, 'image.ext4');
    await buildImage(source, imageFile, { chunkSize: PUBLISHED_CHUNK, headroom: HEADROOM });
    const plain = await readFile(imageFile);
    const keys = generateKeys();
    const storeDir = path.join(dir.path, 'store');
    const store = await openStore(storeDir);
    let digest: Digest;
    let opened: OpenedManifest;
    try {
      const image = await openImage(source);
      try {
        digest = (await convertImage(image, { store, keys, chunkSize: PUBLISHED_CHUNK, headroom: HEADROOM })).manifest as Digest;
      } finally {
        await image.close();
      }
      const { manifest } = await fetchManifest(store, digest);
      opened = openManifest(manifest.bytes, keys.manifestKey);
    } finally {
      await store.close();
    }
    return {
      dir,
      storeDir,
      keys,
      digest,
      opened,
      salt: manifestSalt(opened.header, keys.salt),
      plain,
      chunkSize: PUBLISHED_CHUNK,
      openStore: () => openStore(storeDir),
      cleanup: () => dir.cleanup(),
    };
  } catch (e) {
    await dir.cleanup();
    throw e;
  }
}

export interface SealedRandomImage {
  readonly digest: Digest;
  readonly opened: OpenedManifest;
  readonly salt: Salt;
  /** The image bytes (holes are zeros). */
  readonly plain: Buffer;
}

/**
 * Random bytes of `size` (need not be a whole number of chunks), with the
 * chunks at `holes` all zero, sealed chunk by chunk (sealChunk) into `store`
 * with a manifest (sealManifest) that marks those chunks as holes.
 */
export async function sealRandomImage(
  store: Store,
  keys: Keys,
  options: { readonly size: number; readonly chunkSize: number; readonly holes: ReadonlySet<number>; readonly seed: string },
): Promise<SealedRandomImage> {
  const { size, chunkSize, holes, seed } = options;
  const plain = noise(size, seed);
  const count = Math.ceil(size / chunkSize);
  const refs: (ChunkRef | null)[] = [];
  for (let i = 0; i < count; i++) {
    const start = i * chunkSize;
    const end = Math.min(size, start + chunkSize);
    if (holes.has(i)) {
      plain.fill(0, start, end);
      refs.push(null);
      continue;
    }
    // The last chunk is zero-padded to the chunk size, as the chunker does.
    const chunk = Buffer.alloc(chunkSize);
    plain.copy(chunk, 0, start, end);
    const sealed = sealChunk(chunk, keys.salt);
    await store.put(sealed.id, sealed.ciphertext);
    refs.push({ id: sealed.id, key: sealed.key });
  }
  const d = (c: string): Digest => `sha256:${c.repeat(64)}` as Digest;
  const bytes = sealManifest(
    {
      createdBy: 'chunkyard test',
      source: { manifestDigest: d('a'), configDigest: d('b'), diffIds: [d('c')], platform: 'linux/amd64' },
      runtime: { entrypoint: null, cmd: null, env: [], workingDir: '/', user: '', labels: {} },
      filesystem: { type: 'ext4', size, blockSize: 4096, uuid: '00000000-0000-5000-8000-000000000000' },
      chunkSize,
      saltEpoch: keys.salt.epoch,
    },
    refs,
    keys.manifestKey,
  );
  const digest = await store.putManifest(bytes);
  const opened = openManifest(bytes, keys.manifestKey);
  return { digest, opened, salt: manifestSalt(opened.header, keys.salt), plain };
}
