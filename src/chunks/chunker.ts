import { open } from 'node:fs/promises';
import { throwIfAborted } from '../errors.js';
import { BLOCK_SIZE } from '../ext4/constants.js';
import type { BlockSink } from '../ext4/sink.js';
import { InFlight } from './inflight.js';

/**
 * Cuts an image into fixed-size chunks. All-zero chunks are holes: the
 * consumer gets `null` for them and they are never stored.
 *
 * The consumer owns each `data` buffer it is given (it may transfer it to a
 * worker); the chunker never touches it again. Every buffer is exactly
 * `chunkSize` long: a partial last chunk is padded with zeros (the manifest
 * records the image's real size).
 */
export type ChunkConsumer = (index: number, data: Buffer | null) => Promise<void>;

export interface ChunkingOptions {
  /**
   * Consumer calls running at once. Memory held by the chunker is at most
   * this many chunks, plus the one being filled, plus chunk 0. @default 4
   */
  readonly maxInFlight?: number;
  readonly signal?: AbortSignal;
}

export interface ChunkingSummary {
  /** Chunks in the image, holes included. */
  readonly chunks: number;
  readonly holes: number;
  /** The image's size in bytes (before padding the last chunk). */
  readonly imageBytes: number;
}

export const MIN_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 4 * 1024 * 1024;
const DEFAULT_MAX_IN_FLIGHT = 4;

/** Chunk sizes are powers of two from 64 KiB to 4 MiB (so whole 4 KiB blocks). */
export function assertChunkSize(n: number): number {
  if (!Number.isInteger(n) || n < MIN_CHUNK_SIZE || n > MAX_CHUNK_SIZE || (n & (n - 1)) !== 0) {
    throw new RangeError(`Cannot use chunk size ${n}: want a power of two from 64 KiB to 4 MiB`);
  }
  return n;
}

/** True if every byte is zero. `zero` is a zero buffer at least as long as `b`. */
function isZero(b: Buffer, zero: Buffer): boolean {
  return b.length <= zero.length && zero.compare(b, 0, b.length, 0, b.length) === 0;
}

/**
 * A BlockSink that hands the image to `consumer` chunk by chunk while the
 * builder writes it, so the image never has to exist whole, on disk or in
 * memory.
 *
 * The builder's order (src/ext4/sink.ts): blocks in increasing order, except
 * chunk 0 (superblock and group descriptors), which comes last. So chunk i ≥ 1
 * is complete as soon as a write lands beyond it, and is handed on then;
 * chunk 0 is kept aside and handed on by `finish`, after all others. Chunks
 * nothing was written to are handed on as holes, in order. Consumer calls
 * start in index order 1, 2, …, n-1, 0 and may finish in any order.
 *
 * A write to a chunk already handed on (other than chunk 0) cannot be honoured
 * and throws: the build's `--shadowed zero` mode does that, and must go
 * through a file first.
 */
export class ChunkingSink implements BlockSink {
  readonly chunkSize: number;
  readonly #consumer: ChunkConsumer;
  readonly #signal: AbortSignal | undefined;
  readonly #inflight: InFlight;
  readonly #zero: Buffer;
  #chunk0: Buffer | null = null;
  /** Index of the chunk being filled (≥ 1), or 0 before the first write beyond chunk 0. */
  #cur = 0;
  #curBuf: Buffer | null = null;
  /** Chunks 1 .. next-1 have been handed on. */
  #next = 1;
  /** One past the last byte written. */
  #end = 0;
  #holes = 0;
  #summary: ChunkingSummary | null = null;
  /** Chunk buffers given back by the consumer (release), reused before allocating. */
  readonly #free: Buffer[] = [];
  readonly #maxFree: number;

  constructor(chunkSize: number, consumer: ChunkConsumer, options: ChunkingOptions = {}) {
    this.chunkSize = assertChunkSize(chunkSize);
    this.#consumer = consumer;
    this.#signal = options.signal;
    this.#inflight = new InFlight(options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT);
    this.#maxFree = (options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT) + 2;
    this.#zero = Buffer.alloc(chunkSize);
  }

  /**
   * Gives a chunk buffer back once the consumer is done with it (e.g. the
   * seal pool's `plain`), to be zeroed and reused for a later chunk. Optional:
   * unreleased buffers are simply garbage-collected.
   */
  release(buf: Buffer): void {
    if (buf.length === this.chunkSize && this.#free.length < this.#maxFree && !this.#free.includes(buf)) this.#free.push(buf);
  }

  #alloc(): Buffer {
    const b = this.#free.pop();
    return b ? b.fill(0) : Buffer.alloc(this.chunkSize);
  }

  /** Set once `finish` has handed on every chunk. */
  get summary(): ChunkingSummary | null {
    return this.#summary;
  }

  async write(block: number, data: Buffer): Promise<void> {
    if (this.#summary) throw new Error(`Cannot write block ${block}: the chunker has finished`);
    if (!Number.isSafeInteger(block) || block < 0) throw new RangeError(`Cannot write block ${block}: not a block number`);
    if (data.length % BLOCK_SIZE !== 0) throw new RangeError(`Cannot write ${data.length} bytes: not a whole number of blocks`);
    throwIfAborted(this.#signal);
    const size = this.chunkSize;
    let pos = block * BLOCK_SIZE;
    let off = 0;
    while (off < data.length) {
      const index = Math.floor(pos / size);
      const within = pos - index * size;
      const n = Math.min(data.length - off, size - within);
      let target: Buffer;
      if (index === 0) {
        target = this.#chunk0 ??= this.#alloc();
      } else {
        if (index < this.#next) {
          throw new Error(
            `Cannot write block ${pos / BLOCK_SIZE}: chunk ${index} was already handed on (writes must move forward; only chunk 0 may come later)`,
          );
        }
        if (index !== this.#cur) await this.#advanceTo(index);
        target = this.#curBuf ??= this.#alloc();
      }
      data.copy(target, within, off, off + n);
      off += n;
      pos += n;
    }
    this.#end = Math.max(this.#end, pos);
  }

  async finish(totalBlocks: number): Promise<void> {
    if (this.#summary) throw new Error('Cannot finish the chunker twice');
    if (!Number.isSafeInteger(totalBlocks) || totalBlocks < 0) throw new RangeError(`Cannot finish at ${totalBlocks} blocks: not a block count`);
    const imageBytes = totalBlocks * BLOCK_SIZE;
    if (this.#end > imageBytes) {
      throw new Error(`Cannot finish at ${totalBlocks} blocks: block ${this.#end / BLOCK_SIZE - 1} was written beyond the end`);
    }
    const chunks = Math.ceil(imageBytes / this.chunkSize);
    if (chunks > 1) await this.#advanceTo(chunks);
    if (chunks > 0) {
      const c0 = this.#chunk0;
      this.#chunk0 = null;
      await this.#emit(0, c0);
    }
    await this.#inflight.drain();
    this.#summary = { chunks, holes: this.#holes, imageBytes };
  }

  /** Hands on the chunk being filled and the holes up to `index`, which becomes current. */
  async #advanceTo(index: number): Promise<void> {
    if (this.#curBuf) {
      const buf = this.#curBuf;
      this.#curBuf = null;
      await this.#emit(this.#cur, buf);
      this.#next = this.#cur + 1;
    }
    while (this.#next < index) {
      await this.#emit(this.#next, null);
      this.#next++;
    }
    this.#cur = index;
  }

  async #emit(index: number, buf: Buffer | null): Promise<void> {
    throwIfAborted(this.#signal);
    const data = buf && !isZero(buf, this.#zero) ? buf : null;
    if (data === null) {
      this.#holes++;
      if (buf) this.release(buf); // an all-zero chunk: the consumer never sees its buffer
    }
    const consumer = this.#consumer;
    await this.#inflight.run(() => consumer(index, data));
  }
}

/**
 * Chunks an existing image file (extract and verify round trips), in index
 * order 0, 1, …, with the same hole rule and backpressure as ChunkingSink.
 */
export async function chunkFile(
  path: string,
  chunkSize: number,
  consumer: ChunkConsumer,
  options: ChunkingOptions = {},
): Promise<ChunkingSummary> {
  const size = assertChunkSize(chunkSize);
  const signal = options.signal;
  const inflight = new InFlight(options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT);
  const zero = Buffer.alloc(size);
  const fh = await open(path, 'r');
  try {
    const imageBytes = (await fh.stat()).size;
    const chunks = Math.ceil(imageBytes / size);
    let holes = 0;
    for (let index = 0; index < chunks; index++) {
      throwIfAborted(signal);
      const buf = Buffer.allocUnsafe(size);
      let got = 0;
      while (got < size) {
        const { bytesRead } = await fh.read(buf, got, size - got, index * size + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      buf.fill(0, got);
      const data = isZero(buf, zero) ? null : buf;
      if (data === null) holes++;
      await inflight.run(() => consumer(index, data));
    }
    await inflight.drain();
    return { chunks, holes, imageBytes };
  } finally {
    await fh.close();
  }
}
