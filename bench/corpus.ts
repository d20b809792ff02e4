/**
 * Reading an OCI layout just far enough for the benchmarks (tag → layer blob
 * files and diff_ids), and the decompression floor: the fastest
 * single-threaded gunzip of the same layer blobs, timed in the same run.
 */
import { createReadStream, existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { corpusDir, corpusPath } from '../src/testing/tools.js';
import { have, timeToNull, timed } from './util.js';

export const CORPUS_TAGS = ['base', 'py', 'py-app'] as const;

export interface BenchLayer {
  readonly digest: string;
  readonly diffId: string;
  readonly mediaType: string;
  /** The blob file. */
  readonly file: string;
  /** Compressed (stored) size. */
  readonly size: number;
}

export interface BenchImage {
  readonly layout: string;
  readonly tag: string;
  readonly layers: readonly BenchLayer[];
}

/** The corpus layout, or undefined (with the path it looked for) when absent. */
export function corpus(): { dir: string } | { missing: string } {
  const dir = corpusDir();
  return dir !== undefined ? { dir } : { missing: corpusPath() };
}

function blobFile(layout: string, digest: string): string {
  const [alg, hex] = digest.split(':');
  return path.join(layout, 'blobs', alg ?? 'sha256', hex ?? '');
}

async function readJson(file: string): Promise<any> {
  return JSON.parse(await readFile(file, 'utf8'));
}

/** The image tagged `tag` in the layout (single-platform indexes only, as the corpus and the big image are), or undefined. */
export async function readImage(layout: string, tag: string): Promise<BenchImage | undefined> {
  const index = await readJson(path.join(layout, 'index.json'));
  const desc = (index.manifests as any[]).find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (desc === undefined) return undefined;
  const manifest = await readJson(blobFile(layout, desc.digest));
  const config = await readJson(blobFile(layout, manifest.config.digest));
  const diffIds = config.rootfs.diff_ids as string[];
  const layers = (manifest.layers as any[]).map((l, i) => ({
    digest: l.digest as string,
    diffId: diffIds[i] ?? '',
    mediaType: l.mediaType as string,
    file: blobFile(layout, l.digest),
    size: l.size as number,
  }));
  for (const l of layers) if (!existsSync(l.file)) throw new Error(`${layout}:${tag}: layer blob ${l.file} is missing`);
  return { layout, tag, layers };
}

// --- decompression floor -------------------------------------------------------------

/** Uncompressed tar size per blob digest, learnt by the node gunzip floor (so dedup can reuse it). */
const uncompressed = new Map<string, number>();

function isGzip(l: BenchLayer): boolean {
  return /gzip/.test(l.mediaType);
}

/** node's zlib over each blob in turn, read with a large highWaterMark, output discarded. */
export async function nodeGunzip(layers: readonly BenchLayer[]): Promise<{ seconds: number; bytes: number }> {
  const { seconds, value: bytes } = await timed(async () => {
    let total = 0;
    for (const l of layers) {
      let n = 0;
      const sink = new Writable({
        highWaterMark: 1 << 20,
        write(chunk: Buffer, _enc, cb) {
          n += chunk.length;
          cb();
        },
      });
      const src = createReadStream(l.file, { highWaterMark: 1 << 20 });
      if (isGzip(l)) await pipeline(src, zlib.createGunzip({ chunkSize: 512 * 1024 }), sink);
      else await pipeline(src, sink);
      uncompressed.set(l.digest, n);
      total += n;
    }
    return total;
  });
  return { seconds, bytes };
}

/** Sum of the layers' uncompressed tar sizes (decompressing any not seen yet). */
export async function uncompressedBytes(layers: readonly BenchLayer[]): Promise<number> {
  const unknown = layers.filter((l) => !uncompressed.has(l.digest));
  if (unknown.length > 0) await nodeGunzip(unknown);
  return layers.reduce((s, l) => s + (uncompressed.get(l.digest) ?? 0), 0);
}

/** Command-line decompressors tried for the floor (each single-threaded), if installed. */
export function cliDecompressors(): { name: string; cmd: string; args: string[] }[] {
  const out = [{ name: 'gzip -dc', cmd: 'gzip', args: ['-dc'] }];
  if (have('pigz')) out.push({ name: 'pigz -p 1 -dc', cmd: 'pigz', args: ['-p', '1', '-dc'] });
  return out;
}

/** `cmd args BLOB > /dev/null` for each gzip blob in turn (plain tar blobs are read with cat). */
export async function cliGunzip(d: { cmd: string; args: string[] }, layers: readonly BenchLayer[]): Promise<number> {
  let seconds = 0;
  for (const l of layers) seconds += isGzip(l) ? await timeToNull(d.cmd, [...d.args, l.file]) : await timeToNull('cat', [l.file]);
  return seconds;
}
