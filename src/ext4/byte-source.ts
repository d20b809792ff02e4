import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { InputError, InterruptedError } from '../errors.js';

/**
 * Random access to the bytes of an ext4 image. The reader reads only through
 * this, in block-sized or extent-sized ranges, so a chunk fetcher over a
 * remote store (fetching just the chunks that hold the asked-for bytes) can
 * stand behind it as well as a local file.
 */
export interface ByteSource {
  /** Total length in bytes; reads must stay inside [0, size). */
  readonly size: number;
  /** Names the source in error messages (a file path, a reference). */
  readonly name?: string;
  /**
   * Exactly `length` bytes from `offset`. A range outside [0, size) is a
   * RangeError (a caller bug, not bad input). Rejects with InterruptedError
   * when `signal` is aborted.
   */
  read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer>;
  close(): Promise<void>;
}

/** Throws RangeError unless [offset, offset+length) is a whole-number range inside [0, size). */
export function checkRange(src: { readonly size: number; readonly name?: string }, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > src.size) {
    throw new RangeError(`Cannot read ${length} bytes at offset ${offset} of ${src.name ?? 'byte source'}: size is ${src.size}`);
  }
}

class FileByteSource implements ByteSource {
  readonly #fh: FileHandle;
  readonly size: number;
  readonly name: string;

  constructor(fh: FileHandle, size: number, name: string) {
    this.#fh = fh;
    this.size = size;
    this.name = name;
  }

  async read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
    checkRange(this, offset, length);
    if (signal?.aborted) throw new InterruptedError('interrupted');
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    // Positional reads may return short counts; loop until the range is full.
    while (done < length) {
      const { bytesRead } = await this.#fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) {
        // The file shrank under us: we promised `size` bytes, so this is a caller-visible failure.
        throw new RangeError(`Cannot read ${length} bytes at offset ${offset} of ${this.name}: file ended at ${offset + done}`);
      }
      done += bytesRead;
      if (signal?.aborted) throw new InterruptedError('interrupted');
    }
    return buf;
  }

  close(): Promise<void> {
    return this.#fh.close();
  }
}

/** Opens a local file (an image) read-only as a ByteSource; its size is fixed at open. */
export async function openFileByteSource(path: string): Promise<ByteSource> {
  const fh = await open(path, 'r');
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new InputError(`${path}: not a regular file`);
    return new FileByteSource(fh, st.size, path);
  } catch (e) {
    await fh.close();
    throw e;
  }
}

/** A ByteSource over an in-memory buffer (tests, tiny images). */
export function bufferByteSource(buf: Buffer, name = 'buffer'): ByteSource {
  return {
    size: buf.length,
    name,
    async read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
      checkRange({ size: buf.length, name }, offset, length);
      if (signal?.aborted) throw new InterruptedError('interrupted');
      return Buffer.from(buf.subarray(offset, offset + length));
    },
    close: () => Promise.resolve(),
  };
}
