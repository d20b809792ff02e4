import type { FileHandle } from 'node:fs/promises';
import { BLOCK_SIZE } from './constants.js';

/**
 * Where the writer puts blocks. Writes arrive in increasing block order except
 * for chunk 0 (superblock and group descriptors), written last — so a streaming
 * consumer (the chunker) can take every chunk as soon as the next one starts.
 */
export interface BlockSink {
  write(block: number, data: Buffer): Promise<void>;
  /** Everything written so far is handed on; `totalBlocks` fixes the image size. */
  finish(totalBlocks: number): Promise<void>;
}

const COALESCE_BYTES = 1 << 20;

/** A BlockSink over a file: coalesces contiguous writes into ~1 MiB positional writes. */
export class FileBlockSink implements BlockSink {
  readonly #fh: FileHandle;
  readonly #buf = Buffer.allocUnsafe(COALESCE_BYTES);
  #start = 0; // block number of #buf[0]
  #len = 0; // bytes pending

  constructor(fh: FileHandle) {
    this.#fh = fh;
  }

  async write(block: number, data: Buffer): Promise<void> {
    if (data.length % BLOCK_SIZE !== 0) throw new RangeError(`Cannot write ${data.length} bytes: not a whole number of blocks`);
    if (this.#len > 0 && block !== this.#start + this.#len / BLOCK_SIZE) await this.#flush();
    if (this.#len === 0) this.#start = block;
    let off = 0;
    while (off < data.length) {
      const n = Math.min(data.length - off, COALESCE_BYTES - this.#len);
      data.copy(this.#buf, this.#len, off, off + n);
      this.#len += n;
      off += n;
      if (this.#len === COALESCE_BYTES) {
        await this.#flush();
        this.#start = block + off / BLOCK_SIZE;
      }
    }
  }

  async #flush(): Promise<void> {
    let done = 0;
    while (done < this.#len) {
      const { bytesWritten } = await this.#fh.write(this.#buf, done, this.#len - done, this.#start * BLOCK_SIZE + done);
      done += bytesWritten;
    }
    this.#len = 0;
  }

  async finish(totalBlocks: number): Promise<void> {
    await this.#flush();
    await this.#fh.truncate(totalBlocks * BLOCK_SIZE);
  }
}
