/**
 * A layer's uncompressed tar, produced by a worker thread (layer-worker.ts):
 * reading the blob, both sha256s and the decompression all run there, so the
 * main thread only parses the tar and places file data, and the two overlap
 * on two cores. The stream keeps the in-thread contract exactly (same bytes,
 * same error classes and messages, errors at EOF, early destroy stops the
 * work and closes the file): the worker runs the same pipeline
 * (layer-pipeline.ts) and only the transport differs.
 *
 * Batches arrive as transferred ArrayBuffers that the worker never touches
 * again, so they are pushed as they are — no copy on this thread — and stay
 * valid for as long as a consumer keeps a view of them. A consumer that knows
 * it is done with a chunk may hand it back ([RECYCLE_CHUNK], which
 * ByteReader's `transient` mode does): its memory goes back to the worker to
 * be filled again, instead of a fresh buffer being allocated, page-faulted
 * in and later collected for every MiB.
 */
import { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { type ChunkyardError, InputError, IntegrityError, InterruptedError, NotFoundError } from '../errors.js';
import { Digester } from './digest.js';
import { RECYCLE_CHUNK } from '../layers/byte-reader.js';
import type { LayerBlob } from './layer-pipeline.js';
import type { LayerWorkerData, MainMessage, WorkerMessage } from './layer-worker.js';

export interface OffThreadOptions {
  /** Bytes per batch handed across. @default 1 MiB */
  readonly batchBytes?: number;
  /** Batches the worker may run ahead of the consumer. @default 8 */
  readonly credits?: number;
}

const WORKER_URL = new URL('./layer-worker.js', import.meta.url);

const ERRORS: Record<string, new (message: string) => ChunkyardError> = {
  InputError,
  IntegrityError,
  NotFoundError,
  InterruptedError,
};

/** The worker's error as the class it had there (messages are kept as they are). */
function revive(name: string, message: string): Error {
  const cls = ERRORS[name];
  return cls !== undefined ? new cls(message) : new Error(message);
}

class OffThreadLayerStream extends Readable {
  readonly #worker: Worker;
  readonly #what: string;
  readonly #batchBytes: number;
  readonly #blob: LayerBlob;
  /** Hashes the tar as it arrives, for the diff_id check (undefined when the blob digest already is it). */
  readonly #diff: Digester | undefined;
  /** Batches pushed but not yet credited back (their consumer has not asked for more). */
  #owed = 0;
  #done = false;

  constructor(blob: LayerBlob, options: OffThreadOptions) {
    const batchBytes = options.batchBytes ?? 1024 * 1024;
    super({ highWaterMark: batchBytes });
    this.#what = blob.name;
    this.#batchBytes = batchBytes;
    this.#blob = blob;
    // An uncompressed blob whose digest is its diff_id is checked once (by the worker).
    this.#diff = blob.compression !== 'none' || blob.digest !== blob.diffId ? new Digester() : undefined;
    const data: LayerWorkerData = { blob, batchBytes, credits: options.credits ?? 8, diffIdOnMain: true };
    this.#worker = new Worker(WORKER_URL, { workerData: data, stdout: false, stderr: false });
    this.#worker.on('message', (m: WorkerMessage) => this.#onMessage(m));
    this.#worker.on('error', (e: Error) => this.destroy(new InputError(`${this.#what}: layer worker failed (${e.message})`, { cause: e })));
    this.#worker.on('exit', (code: number) => {
      if (!this.#done && !this.destroyed) this.destroy(new InputError(`${this.#what}: layer worker exited (code ${code}) before the end of the layer`));
    });
  }

  #onMessage(m: WorkerMessage): void {
    if (this.destroyed) return;
    switch (m.type) {
      case 'data': {
        this.#owed++;
        const chunk = Buffer.from(m.buffer, 0, m.length);
        this.#diff?.update(chunk);
        if (this.push(chunk)) this.#credit();
        break;
      }
      case 'end': {
        this.#done = true;
        // The worker's checks (size, digest, decoding) passed; the diff_id is ours.
        const actual = this.#diff?.digest();
        if (actual !== undefined && actual !== this.#blob.diffId) {
          this.destroy(new IntegrityError(`${this.#blob.name}: uncompressed content hashes to ${actual}, but the config's diff_id is ${this.#blob.diffId}`));
        } else {
          this.push(null);
        }
        break;
      }
      case 'error':
        this.#done = true;
        this.destroy(revive(m.name, m.message));
        break;
    }
  }

  #credit(): void {
    if (this.#owed === 0 || this.#done) return;
    const msg: MainMessage = { type: 'credit', n: this.#owed };
    this.#owed = 0;
    this.#worker.postMessage(msg);
  }

  /** Takes back a chunk this stream emitted; the caller must hold no view of it (it is detached here). */
  [RECYCLE_CHUNK](chunk: Buffer): void {
    const ab = chunk.buffer;
    // Only whole batches of ours; a view of part of one (or anything else) is left alone.
    if (this.#done || this.destroyed || chunk.byteOffset !== 0 || !(ab instanceof ArrayBuffer) || ab.byteLength !== this.#batchBytes) return;
    const msg: MainMessage = { type: 'recycle', buffer: ab };
    this.#worker.postMessage(msg, [ab]);
  }

  override _read(): void {
    this.#credit();
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    // Stops the worker mid-layer if need be; its file is closed as its thread ends.
    this.#worker.terminate().then(
      () => cb(err),
      () => cb(err),
    );
  }
}

/** Opens `blob`'s uncompressed stream in a new worker thread. */
export function openOffThread(blob: LayerBlob, options: OffThreadOptions = {}): Readable {
  return new OffThreadLayerStream(blob, options);
}
