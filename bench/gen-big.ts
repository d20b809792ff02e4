/**
 * Generates (once, cached) an OCI layout holding one image of more than
 * 2 GiB uncompressed, for the memory benchmark:
 *   layer 1: 60,000 small files (0.5–64 KiB, log-uniform) in 2,000 nested dirs;
 *   layer 2: four files of 300–450 MiB (one with a 32 MiB zero run);
 *   layer 3: 10,000 more small files, 1,000 rewrites and 2,000 whiteouts of
 *            layer-1 files, and a whiteout of a whole layer-1 directory.
 * Everything streams: tar-stream pack → gzip level 1 → file, with sha256 of
 * the uncompressed (diff_id) and compressed (blob digest) bytes taken on the
 * way. Content comes from a seeded xorshift PRNG, half random and half
 * repeated text, so gzip has work to do and the result is deterministic.
 * Tags `big-files` and `big-bytes` (see BIG_PARTS) reuse layers 1 and 2 alone.
 */
import { createHash, type Hash } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { MiB, log, timed } from './util.js';

/** Bump when the content changes, so a stale cache is regenerated. */
const GEN_VERSION = 1;
export const BIG_TAG = 'big';
const MARKER = 'complete.json';
const MTIME = new Date(1_700_000_000_000);

export function bigDir(): string {
  return path.join(os.tmpdir(), 'chunkyard-bench-big');
}

// --- content ----------------------------------------------------------------------

/** xorshift32: fast, seeded, good enough to defeat gzip. */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  below(n: number): number {
    return this.next() % n;
  }
  /** Log-uniform integer in [lo, hi]. */
  logUniform(lo: number, hi: number): number {
    return Math.floor(lo * Math.pow(hi / lo, this.next() / 0x1_0000_0000));
  }
}

const WORDS = 'the quick brown fox jumps over lazy dog lorem ipsum dolor sit amet import export function return const class python3 lib usr share locale'.split(' ');

/** 1 MiB of word salad: the compressible half of the content. */
function makeText(rng: Rng): Buffer {
  const parts: string[] = [];
  let n = 0;
  while (n < MiB) {
    const w = WORDS[rng.below(WORDS.length)]!;
    const sep = rng.below(12) === 0 ? '\n' : ' ';
    parts.push(w, sep);
    n += w.length + 1;
  }
  return Buffer.from(parts.join('')).subarray(0, MiB);
}

class Content {
  private readonly text: Buffer;
  constructor(private readonly rng: Rng) {
    this.text = makeText(rng);
  }

  /** A fresh buffer of `size` bytes: 4 KiB pieces, each random or a slice of the text, half and half. */
  make(size: number): Buffer {
    // A fresh ArrayBuffer per call: it is 4-byte aligned for the Uint32Array
    // and never reused, since tar-stream may still hold it when we return.
    const ab = new ArrayBuffer((size + 3) & ~3);
    const u32 = new Uint32Array(ab);
    const buf = Buffer.from(ab, 0, size);
    for (let off = 0; off < size; off += 4096) {
      const end = Math.min(size, off + 4096);
      if (this.rng.next() & 1) {
        for (let i = off >>> 2, e = (end + 3) >>> 2; i < e; i++) u32[i] = this.rng.next();
      } else {
        const from = this.rng.below(MiB - 4096);
        this.text.copy(buf, off, from, from + (end - off));
      }
    }
    return buf;
  }
}

// --- streaming a layer ---------------------------------------------------------------

/** Passes bytes through, hashing and counting them. */
class Tap extends Transform {
  readonly hash: Hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

interface WrittenLayer {
  readonly digest: string;
  readonly size: number;
  readonly diffId: string;
  readonly tarBytes: number;
}

/** A tar header as the generator passes it (owner and mtime are filled in). */
type Hdr = Partial<tar.Header> & { name: string };

type Add = (header: Hdr, body?: Buffer) => Promise<void>;

/**
 * Streams one gzip layer into `blobs/sha256/`: `fill` adds entries through
 * `add` (which waits for each to be taken, so backpressure reaches it) or
 * `addStream` for entries too big to hold.
 */
async function writeLayer(
  dir: string,
  name: string,
  fill: (add: Add, addLarge: (header: Hdr, pieces: () => Buffer | undefined) => Promise<void>) => Promise<void>,
): Promise<WrittenLayer> {
  const pack = tar.pack();
  const raw = new Tap();
  const gz = new Tap();
  const tmp = path.join(dir, 'blobs', 'sha256', `.${name}.partial`);
  const done = pipeline(pack, raw, zlib.createGzip({ level: 1 }), gz, createWriteStream(tmp));
  const add: Add = (header, body) =>
    new Promise((resolve, reject) => {
      pack.entry({ ...header, mtime: MTIME, uid: 0, gid: 0 }, body ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
    });
  const addLarge = (header: Hdr, pieces: () => Buffer | undefined): Promise<void> =>
    new Promise((resolve, reject) => {
      const sink = pack.entry({ ...header, mtime: MTIME, uid: 0, gid: 0 }, (err) => (err ? reject(err) : resolve()));
      const pump = (): void => {
        for (;;) {
          const b = pieces();
          if (b === undefined) {
            sink.end(undefined);
            return;
          }
          if (!sink.write(b)) {
            sink.once('drain', pump);
            return;
          }
        }
      };
      pump();
    });
  await Promise.all([
    (async () => {
      await fill(add, addLarge);
      pack.finalize();
    })(),
    done,
  ]);
  const hex = gz.hash.digest('hex');
  await rename(tmp, path.join(dir, 'blobs', 'sha256', hex));
  return { digest: `sha256:${hex}`, size: gz.bytes, diffId: `sha256:${raw.hash.digest('hex')}`, tarBytes: raw.bytes };
}

// --- the three layers -----------------------------------------------------------------

const DIRS_A = 100;
const DIRS_B = 20;
const FILES_PER_DIR = 30; // 100 × 20 × 30 = 60,000

function smallName(a: number, b: number, f: number): string {
  return `data/d${String(a).padStart(2, '0')}/e${String(b).padStart(2, '0')}/f${String(f).padStart(3, '0')}.bin`;
}

async function layer1(add: Add, content: Content, rng: Rng): Promise<void> {
  await add({ name: 'data/', type: 'directory', mode: 0o755 });
  for (let a = 0; a < DIRS_A; a++) {
    await add({ name: `data/d${String(a).padStart(2, '0')}/`, type: 'directory', mode: 0o755 });
    for (let b = 0; b < DIRS_B; b++) {
      await add({ name: path.posix.dirname(smallName(a, b, 0)) + '/', type: 'directory', mode: 0o755 });
      for (let f = 0; f < FILES_PER_DIR; f++) {
        await add({ name: smallName(a, b, f), mode: 0o644 }, content.make(rng.logUniform(512, 64 * 1024)));
      }
    }
  }
}

async function layer2(addLarge: (h: Hdr, pieces: () => Buffer | undefined) => Promise<void>, add: Add, content: Content): Promise<void> {
  await add({ name: 'big/', type: 'directory', mode: 0o755 });
  const sizes = [300, 350, 400, 450].map((m) => m * MiB);
  for (const [i, size] of sizes.entries()) {
    let left = size;
    let off = 0;
    // File 2 has a 32 MiB run of zeros in the middle (a preallocated region): the build makes it a hole.
    const zeroFrom = i === 2 ? 128 * MiB : -1;
    const zeroTo = zeroFrom + 32 * MiB;
    await addLarge({ name: `big/blob${i}.dat`, size, mode: 0o644 }, () => {
      if (left === 0) return undefined;
      const n = Math.min(MiB, left);
      const b = off >= zeroFrom && off < zeroTo ? Buffer.alloc(n) : content.make(n);
      left -= n;
      off += n;
      return b;
    });
  }
}

async function layer3(add: Add, content: Content, rng: Rng): Promise<void> {
  await add({ name: 'data/', type: 'directory', mode: 0o755 });
  // Whiteout a whole layer-1 directory (600 files).
  await add({ name: 'data/.wh.d99', mode: 0o644 });
  for (let a = 0; a < 99; a++) {
    const da = `data/d${String(a).padStart(2, '0')}`;
    await add({ name: `${da}/`, type: 'directory', mode: 0o755 });
    for (let b = 0; b < DIRS_B; b++) {
      const dir = `${da}/e${String(b).padStart(2, '0')}`;
      await add({ name: `${dir}/`, type: 'directory', mode: 0o755 });
      // Per leaf dir: 1 whiteout, 1 rewrite (shadows the lower copy) and 5 new files, on average.
      const f0 = rng.below(FILES_PER_DIR);
      if (rng.below(2) === 0) await add({ name: `${dir}/.wh.f${String(f0).padStart(3, '0')}.bin`, mode: 0o644 });
      else await add({ name: smallName(a, b, f0), mode: 0o644 }, content.make(rng.logUniform(512, 64 * 1024)));
      if (rng.below(2) === 0) {
        const f1 = (f0 + 1) % FILES_PER_DIR;
        await add({ name: `${dir}/.wh.f${String(f1).padStart(3, '0')}.bin`, mode: 0o644 });
      }
      for (let k = 0; k < 5; k++) {
        await add({ name: `${dir}/new${k}.txt`, mode: 0o644 }, content.make(rng.logUniform(512, 64 * 1024)));
      }
    }
  }
}

// --- the layout ----------------------------------------------------------------------------

export interface BigImageInfo {
  readonly dir: string;
  readonly tag: string;
  readonly tarBytes: number;
  readonly blobBytes: number;
  readonly generateSeconds?: number;
}

async function writeJsonBlob(dir: string, value: unknown): Promise<{ digest: string; size: number }> {
  const bytes = Buffer.from(JSON.stringify(value));
  const hex = createHash('sha256').update(bytes).digest('hex');
  await writeFile(path.join(dir, 'blobs', 'sha256', hex), bytes);
  return { digest: `sha256:${hex}`, size: bytes.length };
}

/**
 * Tags written beside `big`, each a subset of its layers, to tell apart what
 * memory grows with: `big-files` is layer 1 alone (60,000 small files, 0.85
 * GB), `big-bytes` is layer 2 alone (4 files, 1.5 GiB).
 */
export const BIG_PARTS = [
  { tag: 'big-files', layers: [0], what: 'layer 1 only: 60,000 small files' },
  { tag: 'big-bytes', layers: [1], what: 'layer 2 only: 4 files of 300-450 MiB' },
] as const;

const GZIP_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';

/** Config, manifest and index.json for `big` and its parts (cheap; rewritten on every use). */
async function writeIndex(dir: string, layers: readonly WrittenLayer[]): Promise<void> {
  const images = [{ tag: BIG_TAG, layers: layers.map((_, i) => i) }, ...BIG_PARTS];
  const manifests = [];
  for (const img of images) {
    const ls = img.layers.map((i) => layers[i]!);
    const config = await writeJsonBlob(dir, {
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: ls.map((l) => l.diffId) },
      history: img.layers.map((i) => ({ created_by: `chunkyard bench gen-big layer ${i + 1}` })),
    });
    const manifest = await writeJsonBlob(dir, {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: ls.map((l) => ({ mediaType: GZIP_LAYER, digest: l.digest, size: l.size })),
    });
    manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': img.tag } });
  }
  await writeFile(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
}

/** The big image's layout, generated unless a complete one of this version is cached. */
export async function ensureBigImage(): Promise<BigImageInfo> {
  const dir = bigDir();
  const marker = path.join(dir, MARKER);
  if (existsSync(marker)) {
    const m = JSON.parse(await readFile(marker, 'utf8')) as BigImageInfo & { version: number; layers: WrittenLayer[] };
    if (m.version === GEN_VERSION) {
      log(`big: reusing ${dir}`);
      await writeIndex(dir, m.layers);
      return { dir, tag: BIG_TAG, tarBytes: m.tarBytes, blobBytes: m.blobBytes };
    }
  }
  log(`big: generating ${dir} (once; about a minute and a half)`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  const rng = new Rng(0x5eed);
  const content = new Content(rng);
  const { seconds, value: layers } = await timed(async () => [
    await writeLayer(dir, 'layer1', (add) => layer1(add, content, rng)),
    await writeLayer(dir, 'layer2', (add, addLarge) => layer2(addLarge, add, content)),
    await writeLayer(dir, 'layer3', (add) => layer3(add, content, rng)),
  ]);
  await writeIndex(dir, layers);
  const info = {
    dir,
    tag: BIG_TAG,
    tarBytes: layers.reduce((s, l) => s + l.tarBytes, 0),
    blobBytes: layers.reduce((s, l) => s + l.size, 0),
    generateSeconds: Math.round(seconds * 10) / 10,
  };
  // Written last: its presence means every blob above is complete.
  await writeFile(marker, JSON.stringify({ version: GEN_VERSION, ...info, layers }, null, 2));
  log(`big: generated ${(info.tarBytes / 2 ** 30).toFixed(2)} GiB of tar (${(info.blobBytes / 2 ** 30).toFixed(2)} GiB gzip) in ${info.generateSeconds}s`);
  return info;
}

// Run directly (`node dist/bench/gen-big.js`) to generate without benchmarking.
if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${path.resolve(process.argv[1])}`).href) {
  await ensureBigImage();
}
