/**
 * A layer's uncompressed tar, produced by a worker thread (layer-worker.ts):
 * reading the blob, its digest and the decompression run there, so this
 * thread only hashes the tar for the diff_id, parses it and places file
 * data, and the two overlap on two cores. The stream keeps the in-thread
 * contract exactly (same bytes, same error classes and messages, errors at
 * EOF, early destroy stops the work and closes the file).
 *
 * Batches arrive as transferred ArrayBuffers that the worker never touches
 * again, so they are pushed as they are — no copy on this thread — and stay
 * valid for as long as a consumer keeps a view of them. A consumer that knows
 * it is done with a chunk may hand it back ([RECYCLE_CHUNK], which
 * ByteReader's `transient` mode does): its memory goes back to the worker to
 * be filled again, instead of a fresh buffer being allocated, page-faulted
 * in and later collected for every MiB.
 *
 * Starting a worker costs ~50-90 ms of CPU, so one that finished a layer can
 * take the next one opened right then (`whenProduced` tells a caller when
 * that is); otherwise it ends at once. A stream destroyed mid-layer ends its
 * worker (and so closes its file).
 *
 * The blob file may still be being written (a registry download): given a
 * GrowingFile, the worker is told how far the file is as it grows, and reads
 * no further; a failed download destroys the stream with its error.
 */
import { finished, Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { type ChunkyardError, InputError, IntegrityError, InterruptedError, NotFoundError } from '../errors.js';
import { RECYCLE_CHUNK } from '../layers/byte-reader.js';
import { Digester } from './digest.js';
import type { LayerJob, MainMessage, WorkerBlob, WorkerMessage } from './layer-worker.js';

export type { WorkerBlob } from './layer-worker.js';

/** A blob file still being written (a download): how far it is, and news of more. */
export interface GrowingFile {
  /** Bytes written so far. */
  readonly available: number;
  /** All of it is written. */
  readonly complete: boolean;
  /** Calls `listener` after each change (more bytes, complete) or with the error that ended the writing; returns an unsubscribe function. */
  watch(listener: (failure?: Error) => void): () => void;
}

/** Tell the worker of growth in steps of at least this much (it reads 1 MiB at a time). */
const GROWN_STEP = 1024 * 1024;

export interface OffThreadOptions {
  /** Bytes per batch handed across. @default 1 MiB */
  readonly batchBytes?: number;
  /** Batches the worker may run ahead of the consumer. @default 8 */
  readonly credits?: number;
  /** The blob file is still being written. */
  readonly growth?: GrowingFile;
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

// --- reuse ---------------------------------------------------------------------
//
// A worker that finished a layer is offered to the next stream opened in the
// same turn of the event loop (the build opens layer i+1 from a whenProduced
// callback, which runs then), and ended otherwise: no idle thread lingers,
// and a build starts one worker, not one per layer.

let spare: { readonly worker: Worker; readonly claimed: () => void } | undefined;
let nextJob = 1;

function newWorker(): Worker {
  const worker = new Worker(WORKER_URL, { stdout: false, stderr: false });
  // Between owners nobody else listens: a worker failing then just ends (and is no longer offered).
  worker.on('error', () => {});
  worker.once('exit', () => {
    if (spare?.worker !== worker) return;
    const s = spare;
    spare = undefined;
    s.claimed();
  });
  return worker;
}

function acquire(): Worker {
  const s = spare;
  spare = undefined;
  if (s === undefined) return newWorker();
  s.claimed();
  s.worker.ref();
  return s.worker;
}

/**
 * Starts a layer worker now, for the first layer opened later: a CLI about
 * to build calls this before loading the rest of itself, and the thread boots
 * (~50-90 ms) meanwhile, on the other core. Until taken it does not keep the
 * process alive.
 */
export function prestartLayerWorker(): void {
  if (spare !== undefined) return;
  const worker = newWorker();
  worker.unref();
  spare = { worker, claimed: () => {} };
}

/**
 * A worker between jobs: the next acquire() in this turn takes it, else it
 * ends. Settles once it is taken or has exited.
 */
function offer(worker: Worker): Promise<void> {
  return new Promise((resolve) => {
    const end = (): void => {
      worker.terminate().then(
        () => resolve(),
        () => resolve(),
      );
    };
    if (spare !== undefined) {
      const older = spare;
      spare = undefined;
      void older.worker.terminate().then(older.claimed, older.claimed);
    }
    const mine = { worker, claimed: resolve };
    spare = mine;
    setImmediate(() => {
      if (spare !== mine) return;
      spare = undefined;
      end();
    });
  });
}

// --- the stream -----------------------------------------------------------------

class OffThreadLayerStream extends Readable {
  readonly #worker: Worker;
  readonly #job: LayerJob;
  /** Hashes the tar as it arrives, for the diff_id check (undefined when the blob digest already is it). */
  readonly #diff: Digester | undefined;
  /** Batches pushed but not yet credited back (their consumer has not asked for more). */
  #owed = 0;
  /** The worker has finished this job (its last message came): it is no longer ours. */
  #done = false;
  /** Settles when the worker, offered on to the next layer, was taken or has ended. */
  #handedOn: Promise<void> | undefined;
  /** Stops listening to a GrowingFile. */
  #unwatch: (() => void) | undefined;
  readonly produced: Promise<void>;
  #producedNow!: () => void;
  readonly #onMessage = (m: WorkerMessage): void => this.#message(m);
  readonly #onError = (e: Error): void => {
    this.destroy(new InputError(`${this.#job.blob.name}: layer worker failed (${e.message})`, { cause: e }));
  };
  readonly #onExit = (code: number): void => {
    if (!this.#done && !this.destroyed) this.destroy(new InputError(`${this.#job.blob.name}: layer worker exited (code ${code}) before the end of the layer`));
  };

  constructor(blob: WorkerBlob, options: OffThreadOptions) {
    const batchBytes = options.batchBytes ?? 1024 * 1024;
    super({ highWaterMark: batchBytes });
    this.produced = new Promise((resolve) => (this.#producedNow = resolve));
    // An uncompressed blob whose digest is its diff_id is checked once (by the worker); one still to be sniffed always here.
    this.#diff = blob.compression !== 'none' || blob.digest !== blob.diffId ? new Digester() : undefined;
    const growth = options.growth;
    const growing = growth !== undefined && !growth.complete;
    this.#job = { id: nextJob++, blob, batchBytes, credits: options.credits ?? 8, ...(growing ? { growth: { available: growth.available, complete: false } } : {}) };
    this.#worker = acquire();
    this.#worker.on('message', this.#onMessage);
    this.#worker.on('error', this.#onError);
    this.#worker.on('exit', this.#onExit);
    const msg: MainMessage = { type: 'job', job: this.#job };
    this.#worker.postMessage(msg);
    if (growing) {
      let told = growth.available;
      this.#unwatch = growth.watch((failure) => {
        if (this.#done || this.destroyed) return;
        if (failure !== undefined) {
          this.destroy(failure);
          return;
        }
        if (!growth.complete && growth.available - told < GROWN_STEP) return;
        told = growth.available;
        const m: MainMessage = { type: 'grown', job: this.#job.id, available: growth.available, complete: growth.complete };
        this.#worker.postMessage(m);
      });
    }
  }

  /** The job is over on the worker's side: stop listening and hand the worker back. */
  #finish(): void {
    this.#done = true;
    this.#unwatch?.();
    this.#worker.off('message', this.#onMessage);
    this.#worker.off('error', this.#onError);
    this.#worker.off('exit', this.#onExit);
    this.#handedOn = offer(this.#worker);
    this.#producedNow();
  }

  #message(m: WorkerMessage): void {
    if (m.job !== this.#job.id) return;
    switch (m.type) {
      case 'data': {
        if (this.destroyed) return;
        this.#owed++;
        const chunk = Buffer.from(m.buffer, 0, m.length);
        this.#diff?.update(chunk);
        if (this.push(chunk)) this.#credit();
        break;
      }
      case 'end': {
        this.#finish();
        if (this.destroyed) return;
        // The worker's checks (size, digest, decoding) passed; the diff_id is ours.
        const actual = this.#diff?.digest();
        const blob = this.#job.blob;
        if (actual !== undefined && actual !== blob.diffId) {
          this.destroy(new IntegrityError(`${blob.name}: uncompressed content hashes to ${actual}, but the config's diff_id is ${blob.diffId}`));
        } else {
          this.push(null);
        }
        break;
      }
      case 'error':
        this.#finish();
        this.destroy(revive(m.name, m.message));
        break;
    }
  }

  #credit(): void {
    if (this.#owed === 0 || this.#done) return;
    const msg: MainMessage = { type: 'credit', job: this.#job.id, n: this.#owed };
    this.#owed = 0;
    this.#worker.postMessage(msg);
  }

  /** Takes back a chunk this stream emitted; the caller must hold no view of it (it is detached here). */
  [RECYCLE_CHUNK](chunk: Buffer): void {
    const ab = chunk.buffer;
    // Only whole batches of ours; a view of part of one (or anything else) is left alone.
    if (chunk.byteOffset !== 0 || !(ab instanceof ArrayBuffer) || ab.byteLength !== this.#job.batchBytes) return;
    const msg: MainMessage = { type: 'recycle', buffer: ab };
    this.#worker.postMessage(msg, [ab]);
  }

  override _read(): void {
    this.#credit();
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    if (this.#done) {
      // 'close' comes once our worker works for another layer or has exited: no thread outlives us unowned.
      const after = (): void => cb(err);
      if (this.#handedOn === undefined) after();
      else void this.#handedOn.then(after);
      return;
    }
    // Mid-layer: the worker cannot be reused; ending it stops the work and closes its file.
    this.#done = true;
    this.#unwatch?.();
    this.#worker.off('message', this.#onMessage);
    this.#worker.off('error', this.#onError);
    this.#worker.off('exit', this.#onExit);
    this.#producedNow();
    this.#worker.terminate().then(
      () => cb(err),
      () => cb(err),
    );
  }
}

/** Opens `blob`'s uncompressed stream on a worker thread (one just freed by another layer, else a new one). */
export function openOffThread(blob: WorkerBlob, options: OffThreadOptions = {}): Readable {
  return new OffThreadLayerStream(blob, options);
}

/**
 * Settles when everything upstream of `stream` is done: for a worker-backed
 * layer stream, when its worker has produced the last batch (and is free for
 * the next layer), which may be well before the consumer has read it all;
 * for any other stream, when it ends, fails or is destroyed.
 */
export function whenProduced(stream: Readable): Promise<void> {
  if (stream instanceof OffThreadLayerStream) return stream.produced;
  return new Promise((resolve) => finished(stream, () => resolve()));
}
