/**
 * Reads exact byte counts from a stream socket: the NBD framing is all
 * "n bytes, then n more", so the handshake and request loops are written as
 * straight-line `await reader.read(n)`.
 *
 * Backpressure: incoming data is buffered up to `highWater` bytes (or the
 * size of the pending read, if larger); beyond that the socket is paused, so
 * the kernel's receive window pushes back on the client. A caller that stops
 * calling `read` (the request loop at its in-flight limit) therefore stops
 * the client.
 *
 * One read at a time: the protocol is sequential in each direction.
 */
import type { Socket } from 'node:net';

/** The peer closed (or the socket failed) before the bytes asked for arrived. */
export class SocketClosedError extends Error {
  constructor(
    message: string,
    /** Bytes that were buffered but too few for the read (0 for a clean close between messages). */
    readonly partial: number,
  ) {
    super(message);
    this.name = 'SocketClosedError';
  }
}

interface Waiter {
  readonly n: number;
  resolve(b: Buffer): void;
  reject(e: Error): void;
}

export class SocketReader {
  readonly #socket: Socket;
  readonly #highWater: number;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #waiter: Waiter | undefined;
  #ended: Error | undefined;
  #paused = false;

  constructor(socket: Socket, options: { highWater?: number } = {}) {
    this.#socket = socket;
    this.#highWater = options.highWater ?? 256 * 1024;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('end', () => this.#end(new SocketClosedError('peer closed the connection', 0)));
    socket.on('close', () => this.#end(new SocketClosedError('connection closed', 0)));
    socket.on('error', (e) => this.#end(new SocketClosedError(`connection failed: ${e.message}`, 0)));
  }

  /** Bytes received but not yet read. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Exactly `n` bytes; rejects with SocketClosedError if the stream ends first. */
  read(n: number): Promise<Buffer> {
    if (this.#waiter !== undefined) return Promise.reject(new Error('SocketReader: one read at a time'));
    if (n === 0) return Promise.resolve(Buffer.alloc(0));
    if (this.#buffered >= n) return Promise.resolve(this.#take(n));
    if (this.#ended !== undefined) return Promise.reject(this.#closedError());
    return new Promise((resolve, reject) => {
      this.#waiter = { n, resolve, reject };
      this.#resume(); // room is needed now, whatever the high-water mark says
    });
  }

  /** Reads and discards `n` bytes, at most `highWater` at a time. */
  async skip(n: number): Promise<void> {
    while (n > 0) {
      const step = Math.min(n, this.#highWater);
      await this.read(step);
      n -= step;
    }
  }

  /** Fails the pending read (if any) and every later one with `error`. */
  cancel(error: Error): void {
    this.#end(error);
  }

  #onData(chunk: Buffer): void {
    if (this.#ended !== undefined) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    const w = this.#waiter;
    if (w !== undefined && this.#buffered >= w.n) {
      this.#waiter = undefined;
      w.resolve(this.#take(w.n));
    }
    if (this.#waiter === undefined && this.#buffered >= this.#highWater && !this.#paused) {
      this.#paused = true;
      this.#socket.pause();
    }
  }

  #take(n: number): Buffer {
    let out: Buffer;
    const first = this.#chunks[0]!;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const c = this.#chunks[0]!;
        const k = Math.min(c.length, n - filled);
        c.copy(out, filled, 0, k);
        filled += k;
        if (k === c.length) this.#chunks.shift();
        else this.#chunks[0] = c.subarray(k);
      }
    }
    this.#buffered -= n;
    if (this.#buffered < this.#highWater) this.#resume();
    return out;
  }

  #resume(): void {
    if (this.#paused && this.#ended === undefined) {
      this.#paused = false;
      this.#socket.resume();
    }
  }

  #end(error: Error): void {
    if (this.#ended !== undefined) return;
    this.#ended = error;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(this.#closedError());
  }

  #closedError(): Error {
    const e = this.#ended!;
    if (e instanceof SocketClosedError && this.#buffered > 0) return new SocketClosedError(`${e.message} in the middle of a message`, this.#buffered);
    return e;
  }
}
