import type { Readable } from 'node:stream';
import { finished } from 'node:stream';
import { InterruptedError } from '../errors.js';

/**
 * A stream that can take back a chunk it emitted once its consumer is done
 * with it, to fill again (off-thread.ts: saves allocating, page-faulting and
 * garbage-collecting a fresh buffer per MiB).
 */
export const RECYCLE_CHUNK = Symbol.for('chunkyard.recycleChunk');

interface Recycling {
  [RECYCLE_CHUNK](chunk: Buffer): void;
}

function canRecycle(s: object): s is Recycling {
  return typeof (s as Partial<Recycling>)[RECYCLE_CHUNK] === 'function';
}

export interface ByteReaderOptions {
  readonly onBytes?: ((n: number) => void) | undefined;
  readonly signal?: AbortSignal | undefined;
  /**
   * Slices handed out are valid only until the next read call (readSome,
   * readExact, skip, drain); after that their memory may be given back to
   * the stream for reuse. Default false: slices stay valid for good.
   */
  readonly transient?: boolean | undefined;
}

/**
 * Pull-style reads over a Readable: exact reads for headers, bounded slices
 * for file data. Holds at most the stream's current chunk, so memory does not
 * grow with the layer. Slices it hands out are views of the stream's own
 * chunks (never reused by us), so consumers may keep them — unless
 * `transient` is set (see ByteReaderOptions).
 *
 * Chunks are taken one 'data' event at a time, pausing in between, rather
 * than through the stream's async iterator: the iterator's `read()` returns
 * everything buffered at once, concatenated into a new buffer — a copy of
 * most of the layer when the producer runs ahead (a worker thread does).
 */
export class ByteReader {
  readonly #stream: Readable;
  readonly #onBytes: ((n: number) => void) | undefined;
  readonly #signal: AbortSignal | undefined;
  #buf: Buffer = Buffer.alloc(0);
  #pos = 0;
  /** A chunk that arrived while the consumer was busy (at most one: the stream is paused on each). */
  #next: Buffer | undefined;
  #eof = false;
  #error: Error | undefined;
  #wake: (() => void) | undefined;
  #closed = false;
  /** Set when chunks go back to the stream once the reader has moved past them. */
  readonly #recycler: Recycling | undefined;
  /** Chunks moved past, given back at the start of the next read call (a caller may still hold views until then). */
  readonly #retired: Buffer[] = [];
  /** Bytes handed out so far: the offset of the next byte in the stream. */
  offset = 0;

  constructor(stream: Readable, options: ByteReaderOptions = {}) {
    this.#stream = stream;
    this.#onBytes = options.onBytes;
    this.#signal = options.signal;
    this.#recycler = options.transient === true && canRecycle(stream) ? stream : undefined;
    stream.pause(); // attaching 'data' below must not start the flow
    stream.on('data', this.#onData);
    // Like the async iterator: EOF on 'end', the stream's error otherwise (premature close included).
    finished(stream, (err) => {
      if (err) this.#error ??= err;
      else this.#eof = true;
      this.#notify();
    });
  }

  readonly #onData = (v: unknown): void => {
    this.#stream.pause();
    if (!(v instanceof Uint8Array)) {
      this.#error ??= new TypeError('tar stream must yield bytes, not strings or objects');
    } else {
      this.#next = Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    }
    this.#notify();
  };

  #notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  /** Makes sure a byte is buffered; false at the end of the stream. */
  async #fill(): Promise<boolean> {
    while (this.#pos >= this.#buf.length) {
      if (this.#signal?.aborted) throw new InterruptedError('interrupted');
      if (this.#error !== undefined) throw this.#error;
      const next = this.#next;
      if (next !== undefined) {
        this.#next = undefined;
        if (this.#recycler !== undefined && this.#buf.length > 0) this.#retired.push(this.#buf);
        this.#buf = next;
        this.#pos = 0;
        this.#onBytes?.(next.length);
        continue;
      }
      if (this.#eof) return false;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        this.#stream.resume();
      });
    }
    return true;
  }

  /** Gives retired chunks back to the stream: called as a read call starts, when earlier slices are dead. */
  #release(): void {
    const r = this.#recycler;
    if (r === undefined) return;
    for (const b of this.#retired) r[RECYCLE_CHUNK](b);
    this.#retired.length = 0;
  }

  /** Up to `max` (> 0) bytes, no copy; null at the end of the stream. */
  async readSome(max: number): Promise<Buffer | null> {
    this.#release();
    return this.#readSome(max);
  }

  async #readSome(max: number): Promise<Buffer | null> {
    if (this.#pos >= this.#buf.length && !(await this.#fill())) return null;
    const n = Math.min(max, this.#buf.length - this.#pos);
    const out = this.#buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    this.offset += n;
    return out;
  }

  /** Exactly `n` bytes, or fewer if the stream ends first (the caller decides what that means). */
  async readExact(n: number): Promise<Buffer> {
    this.#release();
    const first = await this.#readSome(n);
    if (first === null) return Buffer.alloc(0);
    if (first.length === n) return first;
    const parts = [first];
    let got = first.length;
    while (got < n) {
      const more = await this.#readSome(n - got);
      if (more === null) break;
      parts.push(more);
      got += more.length;
    }
    return Buffer.concat(parts, got);
  }

  /** Skips `n` bytes; returns how many were actually there. */
  async skip(n: number): Promise<number> {
    this.#release();
    let left = n;
    while (left > 0) {
      const b = await this.#readSome(left);
      if (b === null) break;
      left -= b.length;
      this.#release(); // skipped bytes are nobody's views
    }
    return n - left;
  }

  /** Reads to the end of the stream (e.g. the zero padding after a tar's footer), discarding it. */
  async drain(): Promise<void> {
    this.#release();
    while ((await this.#readSome(Number.MAX_SAFE_INTEGER)) !== null) this.#release();
  }

  /**
   * Stops reading and destroys the stream (as leaving its async iterator
   * would). The `finished` listener stays, so an error the stream emits
   * while being torn down is not an uncaught one.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#stream.off('data', this.#onData);
    this.#stream.destroy();
  }
}
