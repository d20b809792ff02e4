import type { FileHandle } from 'node:fs/promises';
import { BLOCK_SIZE } from './constants.js';

/**
 * Where the writer puts blocks. Writes arrive in increasing block order except
 * for chunk 0 (superblock and group descriptors), written last — so a streaming
 * consumer (the chunker) can take every chunk as soon as the next one starts.
 */
export interface BlockSink {
  /** `data` is the caller's again once the promise settles (callers reuse buffers): copy what is kept. */
  write(block: number, data: Buffer): Promise<void>;
  /** Everything written so far is handed on; `totalBlocks` fixes the image size. */
  finish(totalBlocks: number): Promise<void>;
}

const COALESCE_BYTES = 1 << 20;

export interface FileBlockSinkOptions {
  /**
   * Start the disk writing back (fdatasync, not waited for) every this many
   * bytes, so the final sync of a large image has little left to do and the
   * disk works while the build computes. 0 = never. @default 0
   */
  readonly syncEveryBytes?: number;
}

/**
 * A BlockSink over a file: coalesces contiguous writes into ~1 MiB positional
 * writes. Two buffers take turns: while one is being written (on libuv's
 * thread pool) the other fills, so the caller waits on the disk only when it
 * is a whole buffer ahead of it.
 */
export class FileBlockSink implements BlockSink {
  readonly #fh: FileHandle;
  readonly #syncEvery: number;
  #unsynced = 0;
  #syncing: Promise<void> | undefined;
  #buf = Buffer.allocUnsafe(COALESCE_BYTES);
  /** The other buffer, free once `#inflight` settles. */
  #spare = Buffer.allocUnsafe(COALESCE_BYTES);
  #inflight: Promise<void> | undefined;
  #start = 0; // block number of #buf[0]
  #len = 0; // bytes pending

  constructor(fh: FileHandle, options: FileBlockSinkOptions = {}) {
    this.#fh = fh;
    this.#syncEvery = options.syncEveryBytes ?? 0;
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

  /** Starts writing the pending bytes and swaps buffers; waits only for the write before it. */
  async #flush(): Promise<void> {
    if (this.#len === 0) return;
    await this.#inflight;
    const buf = this.#buf;
    const len = this.#len;
    const pos = this.#start * BLOCK_SIZE;
    this.#buf = this.#spare;
    this.#spare = buf;
    this.#len = 0;
    const p = writeAll(this.#fh, buf, len, pos);
    // Rejections are seen by whoever awaits #inflight next (a write, or finish).
    p.catch(() => {});
    this.#inflight = p;
    this.#unsynced += len;
    if (this.#syncEvery > 0 && this.#unsynced >= this.#syncEvery && this.#syncing === undefined) {
      this.#unsynced = 0;
      const fh = this.#fh;
      const s = p.then(() => fh.datasync()).finally(() => {
        if (this.#syncing === s) this.#syncing = undefined;
      });
      s.catch(() => {}); // a failing disk fails the writes and the final sync too
      this.#syncing = s;
    }
  }

  async finish(totalBlocks: number): Promise<void> {
    await this.#flush();
    await this.#inflight;
    this.#inflight = undefined;
    await this.#syncing?.catch(() => {});
    await this.#fh.truncate(totalBlocks * BLOCK_SIZE);
  }
}

async function writeAll(fh: FileHandle, buf: Buffer, len: number, position: number): Promise<void> {
  let done = 0;
  while (done < len) {
    const { bytesWritten } = await fh.write(buf, done, len - done, position + done);
    done += bytesWritten;
  }
}
