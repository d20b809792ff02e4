import { open, rename, unlink } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { InputError, throwIfAborted } from '../errors.js';
import { BLOCK_SIZE } from '../ext4/constants.js';
import { DataArea, type StoredData } from '../ext4/data-area.js';
import { FileBlockSink, type BlockSink } from '../ext4/sink.js';
import { writeMetadata } from '../ext4/writer.js';
import { Flattener } from '../layers/flatten.js';
import { readLayerEntries } from '../layers/tar.js';
import type { Tree } from '../layers/tree.js';
import { whenProduced } from '../source/off-thread.js';
import type { ImageSource } from '../source/source.js';
import { fsIdentity } from './identity.js';

/** What happens to the bytes of files that a later layer deletes or replaces. */
export type ShadowedData =
  /** Left as the lower layer wrote them: the lower layer's chunks stay identical to its parent image's (default). */
  | 'keep'
  /** Overwritten with zeros: the image holds nothing its tree can't reach. */
  | 'zero';

export interface BuildOptions {
  /** Power of two, 64 KiB..4 MiB. @default 524288 */
  readonly chunkSize?: number;
  /** @default 'keep' */
  readonly shadowed?: ShadowedData;
  /** Free space as a fraction of used blocks and inodes. @default 0 */
  readonly headroom?: number;
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: BuildProgress) => void;
}

export interface BuildProgress {
  readonly layer: number; // 1-based
  readonly layers: number;
  /** Uncompressed tar bytes of this layer read so far. */
  readonly layerBytes: number;
}

export interface BuildSummary {
  readonly imageBytes: number;
  readonly blockSize: number;
  readonly chunkSize: number;
  readonly layers: number;
  readonly files: number;
  readonly inodes: number;
  /** Bytes of file data stored (all-zero blocks are holes and not counted). */
  readonly dataBytes: number;
  /** Bytes of data written for files no longer in the final tree. */
  readonly shadowedBytes: number;
  readonly uuid: string;
}

export const DEFAULT_CHUNK_SIZE = 512 * 1024;

export function checkChunkSize(n: number): number {
  if (!Number.isInteger(n) || n < 64 * 1024 || n > 4 * 1024 * 1024 || (n & (n - 1)) !== 0) {
    throw new RangeError(`Cannot use chunk size ${n}: want a power of two from 64 KiB to 4 MiB`);
  }
  return n;
}

/**
 * Flattens the image's layers into an ext4 image written to `sink`. One pass
 * over each layer: file bytes go straight to their place in the image as the
 * tar streams; only metadata is kept in memory.
 */
export async function buildToSink(source: ImageSource, sink: BlockSink, options: BuildOptions = {}): Promise<BuildSummary> {
  const chunkSize = checkChunkSize(options.chunkSize ?? DEFAULT_CHUNK_SIZE);
  const shadowed = options.shadowed ?? 'keep';
  const headroom = options.headroom ?? 0;
  if (!(headroom >= 0 && headroom <= 100)) throw new RangeError(`Cannot use headroom ${headroom}: want a fraction from 0 to 100`);
  const signal = options.signal;
  const chunkBlocks = chunkSize / BLOCK_SIZE;
  // Chunk 0 holds only the superblock and group descriptors; data starts at chunk 1.
  const area = new DataArea(sink, { chunkSize, startBlock: chunkBlocks });
  const flattener = new Flattener<StoredData>();
  const placedAll: StoredData[] = [];
  const layers = source.layers;
  // Layer i+1 is opened as soon as layer i is decoded: its decoding starts on
  // the worker thread just freed (off-thread.ts) while this thread still
  // places the rest of layer i. Only one layer is ever ahead.
  const ahead: Readable[] = [];
  let opened = 0;
  let closed = false;
  const openNext = (): void => {
    if (closed || opened >= layers.length) return;
    const s = layers[opened]!.open(signal);
    // A layer opened ahead may fail before the loop reads it (its download
    // broke, the build was aborted): the error then waits for the reader
    // (readLayerEntries sees it through finished()), instead of being an
    // 'error' event nobody listens to yet.
    s.on('error', () => {});
    ahead.push(s);
    opened++;
  };
  try {
    for (const [i, layer] of layers.entries()) {
      throwIfAborted(signal);
      if (opened === i) openNext();
      const stream = ahead.shift()!;
      void whenProduced(stream).then(() => {
        try {
          if (opened === i + 1) openNext();
        } catch {
          // Opening failed: the loop opens it again when it gets there, and reports the error.
        }
      });
      flattener.beginLayer(layer.index);
      area.beginLayer();
      let layerBytes = 0;
      const entries = readLayerEntries(stream, {
        ...(signal ? { signal } : {}),
        // DataArea.place hands each chunk to the sink, which copies it, before taking the next.
        transientChunks: true,
        onBytes: (n: number) => {
          layerBytes += n;
          options.onProgress?.({ layer: layer.index + 1, layers: layers.length, layerBytes });
        },
      });
      try {
        for await (const entry of entries) {
          if (entry.type === 'file') {
            const data = await area.place(entry.data);
            placedAll.push(data);
            flattener.apply({ ...entry, data });
          } else {
            flattener.apply(entry);
          }
        }
      } finally {
        stream.destroy();
      }
    }
  } finally {
    closed = true;
    for (const s of ahead) s.destroy();
  }
  const tree = flattener.tree();
  const live = liveData(tree);
  let shadowedBytes = 0;
  for (const d of placedAll) {
    if (live.has(d)) continue;
    shadowedBytes += d.blocks * BLOCK_SIZE;
    if (shadowed === 'zero') {
      for (const e of d.extents) await sink.write(e.physical, Buffer.alloc(e.length * BLOCK_SIZE));
    }
  }
  const { uuid, hashSeed } = fsIdentity(source.config.rootfs.diff_ids);
  const meta = await writeMetadata(tree, area.end, sink, { chunkSize, uuid, hashSeed, headroom });
  let files = 0;
  let dataBytes = 0;
  for (const d of live) {
    files++;
    dataBytes += d.blocks * BLOCK_SIZE;
  }
  return {
    imageBytes: meta.totalBlocks * BLOCK_SIZE,
    blockSize: BLOCK_SIZE,
    chunkSize,
    layers: layers.length,
    files,
    inodes: meta.inodes,
    dataBytes,
    shadowedBytes,
    uuid: formatUuid(uuid),
  };
}

function liveData(tree: Tree<StoredData>): Set<StoredData> {
  const live = new Set<StoredData>();
  const stack = [tree.root];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const child of dir.children.values()) {
      if (child.kind === 'file') live.add(child.data);
      else if (child.kind === 'dir') stack.push(child);
    }
  }
  return live;
}

function formatUuid(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Early writeback while building (FileBlockSink): the closing fsync then finds little left to write. */
const SYNC_EVERY = 16 * 1024 * 1024;

/**
 * Builds into `outPath` atomically: the image is written under a temporary
 * name beside it and renamed only once complete, so a failed or interrupted
 * build never leaves something that looks like a good image.
 */
export async function buildToFile(source: ImageSource, outPath: string, options: BuildOptions = {}): Promise<BuildSummary> {
  const tmp = join(dirname(outPath), `.${basename(outPath)}.${randomBytes(6).toString('hex')}.partial`);
  const fh = await open(tmp, 'wx', 0o644);
  let ok = false;
  try {
    const summary = await buildToSink(source, new FileBlockSink(fh, { syncEveryBytes: SYNC_EVERY }), options);
    await fh.sync();
    await fh.close();
    await rename(tmp, outPath);
    ok = true;
    return summary;
  } catch (e) {
    if (e instanceof RangeError) throw new InputError(e.message, { cause: e });
    throw e;
  } finally {
    if (!ok) {
      await fh.close().catch(() => {});
      await unlink(tmp).catch(() => {});
    }
  }
}
