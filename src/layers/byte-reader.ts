import type { Readable } from 'node:stream';
import { InterruptedError } from '../errors.js';

/**
 * Pull-style reads over a Readable: exact reads for headers, bounded slices
 * for file data. Holds at most the stream's current chunk, so memory does not
 * grow with the layer. Slices it hands out are views of the stream's own
 * chunks (never reused by us), so consumers may keep them.
 */
export class ByteReader {
  readonly #it: AsyncIterator<unknown>;
  readonly #onBytes: ((n: number) => void) | undefined;
  readonly #signal: AbortSignal | undefined;
  #buf: Buffer = Buffer.alloc(0);
  #pos = 0;
  #eof = false;
  /** Bytes handed out so far: the offset of the next byte in the stream. */
  offset = 0;

  constructor(stream: Readable, options: { onBytes?: ((n: number) => void) | undefined; signal?: AbortSignal | undefined } = {}) {
    this.#it = stream[Symbol.asyncIterator]();
    this.#onBytes = options.onBytes;
    this.#signal = options.signal;
  }

  /** Makes sure a byte is buffered; false at the end of the stream. */
  async #fill(): Promise<boolean> {
    while (this.#pos >= this.#buf.length) {
      if (this.#eof) return false;
      if (this.#signal?.aborted) throw new InterruptedError('interrupted');
      const r = await this.#it.next();
      if (r.done === true) {
        this.#eof = true;
        return false;
      }
      const v = r.value;
      if (!(v instanceof Uint8Array)) throw new TypeError('tar stream must yield bytes, not strings or objects');
      this.#buf = Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      this.#pos = 0;
      this.#onBytes?.(this.#buf.length);
    }
    return true;
  }

  /** Up to `max` (> 0) bytes, no copy; null at the end of the stream. */
  async readSome(max: number): Promise<Buffer | null> {
    if (!(await this.#fill())) return null;
    const n = Math.min(max, this.#buf.length - this.#pos);
    const out = this.#buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    this.offset += n;
    return out;
  }

  /** Exactly `n` bytes, or fewer if the stream ends first (the caller decides what that means). */
  async readExact(n: number): Promise<Buffer> {
    const first = await this.readSome(n);
    if (first === null) return Buffer.alloc(0);
    if (first.length === n) return first;
    const parts = [first];
    let got = first.length;
    while (got < n) {
      const more = await this.readSome(n - got);
      if (more === null) break;
      parts.push(more);
      got += more.length;
    }
    return Buffer.concat(parts, got);
  }

  /** Skips `n` bytes; returns how many were actually there. */
  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      const b = await this.readSome(left);
      if (b === null) break;
      left -= b.length;
    }
    return n - left;
  }

  /** Reads to the end of the stream (e.g. the zero padding after a tar's footer), discarding it. */
  async drain(): Promise<void> {
    while ((await this.readSome(Number.MAX_SAFE_INTEGER)) !== null);
  }

  /** Stops reading: lets the stream's iterator clean up (it destroys the stream). */
  async close(): Promise<void> {
    await this.#it.return?.();
  }
}
