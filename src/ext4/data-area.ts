import { BLOCK_SIZE } from './constants.js';
import type { Extent } from './extent.js';
import { MAX_EXTENT_LEN } from './extent.js';
import type { BlockSink } from './sink.js';

/** Where a regular file's bytes sit in the image. */
export interface StoredData {
  readonly size: number;
  /** Sorted by logical block; blocks not covered are holes (all zeros). */
  readonly extents: readonly Extent[];
  /** Allocated data blocks (sum of extent lengths). */
  readonly blocks: number;
}

export interface FileBody {
  readonly size: number;
  readonly chunks: AsyncIterable<Buffer>;
}

const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);

/**
 * Allocates file data in the order files arrive — layer by layer, tar order —
 * writing each file's bytes straight to the sink: nothing is spooled. This is
 * the dedup-aware layout (DESIGN.md §4):
 *  - each layer starts on a chunk boundary, so a layer shared by two images
 *    gives the same chunks whatever came before it;
 *  - a file of a chunk or more starts on a chunk boundary, so the same large
 *    file dedupes across unrelated layers;
 *  - all-zero blocks become holes and take no space.
 */
export class DataArea {
  readonly #sink: BlockSink;
  readonly #chunkBlocks: number;
  #cursor: number;
  readonly #block = Buffer.alloc(BLOCK_SIZE);

  constructor(sink: BlockSink, options: { chunkSize: number; startBlock: number }) {
    this.#sink = sink;
    this.#chunkBlocks = options.chunkSize / BLOCK_SIZE;
    this.#cursor = options.startBlock;
  }

  /** First block after all data placed so far. */
  get end(): number {
    return this.#cursor;
  }

  alignToChunk(): void {
    const rem = this.#cursor % this.#chunkBlocks;
    if (rem !== 0) this.#cursor += this.#chunkBlocks - rem;
  }

  beginLayer(): void {
    this.alignToChunk();
  }

  /**
   * Stores one file's bytes. Whole runs of non-zero blocks go to the sink in
   * one write each (slices of the body's own chunks, no copy here); only a
   * block split across two chunks is assembled in a scratch buffer.
   */
  async place(body: FileBody): Promise<StoredData> {
    if (body.size >= this.#chunkBlocks * BLOCK_SIZE) this.alignToChunk();
    const extents: Extent[] = [];
    let runLogical = 0;
    let runPhysical = 0;
    let runLength = 0;
    let logical = 0; // next logical block
    let fill = 0; // bytes in #block
    let seen = 0;
    const endRun = (): void => {
      if (runLength > 0) extents.push({ logical: runLogical, physical: runPhysical, length: runLength });
      runLength = 0;
    };
    /** Books a non-zero block at the cursor into the current extent (or a new one). */
    const take = (): void => {
      if (runLength === 0 || runLength === MAX_EXTENT_LEN) {
        endRun();
        runLogical = logical;
        runPhysical = this.#cursor;
      }
      this.#cursor++;
      runLength++;
      logical++;
    };
    const single = async (block: Buffer): Promise<void> => {
      if (isZeroBlock(block, 0)) {
        endRun();
        logical++;
        return;
      }
      const at = this.#cursor;
      take();
      await this.#sink.write(at, block);
    };
    for await (const chunk of body.chunks) {
      seen += chunk.length;
      if (seen > body.size) throw new RangeError(`Cannot store file: body longer than its size ${body.size}`);
      let off = 0;
      if (fill > 0) {
        const n = Math.min(BLOCK_SIZE - fill, chunk.length);
        chunk.copy(this.#block, fill, 0, n);
        fill += n;
        off = n;
        if (fill === BLOCK_SIZE) {
          await single(this.#block);
          fill = 0;
        }
      }
      while (chunk.length - off >= BLOCK_SIZE) {
        if (isZeroBlock(chunk, off)) {
          endRun();
          logical++;
          off += BLOCK_SIZE;
          continue;
        }
        // A run of non-zero blocks lands on consecutive physical blocks
        // (extents may split it at MAX_EXTENT_LEN; the write need not).
        const at = this.#cursor;
        const start = off;
        do {
          take();
          off += BLOCK_SIZE;
        } while (chunk.length - off >= BLOCK_SIZE && !isZeroBlock(chunk, off));
        await this.#sink.write(at, chunk.subarray(start, off));
      }
      if (off < chunk.length) {
        chunk.copy(this.#block, 0, off);
        fill = chunk.length - off;
      }
    }
    if (seen !== body.size) throw new RangeError(`Cannot store file: body ended at ${seen} of ${body.size} bytes`);
    if (fill > 0) {
      this.#block.fill(0, fill);
      await single(this.#block);
    }
    endRun();
    return { size: body.size, extents, blocks: extents.reduce((n, e) => n + e.length, 0) };
  }
}

/** True if the block at `off` is all zeros. Data blocks nearly always fail on the first bytes, before the full compare. */
function isZeroBlock(b: Buffer, off: number): boolean {
  for (let i = off, end = off + 16; i < end; i++) if (b[i] !== 0) return false;
  return ZERO_BLOCK.compare(b, off, off + BLOCK_SIZE) === 0;
}
