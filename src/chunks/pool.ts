import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { IntegrityError } from '../errors.js';
import { parseChunkId } from './id.js';
import { checkSalt, type Salt } from './salt.js';
import type { ChunkRef, SealedChunk } from './seal.js';
import type { WorkerInit, WorkerReply, WorkerRequest } from './seal-worker.js';
import { asBuffer, forTransfer } from './transfer.js';

/**
 * A pool of worker threads that seal and open chunks off the main thread, so
 * hashing and AES run on several cores while the main thread parses tar and
 * writes ext4.
 *
 * Buffers are transferred, not copied: `seal(index, plain)` and
 * `open(ciphertext, …)` take ownership of the buffer passed in (it is empty
 * afterwards in the caller), and the result's buffers are the worker's own.
 *
 * Backpressure: at most `maxInFlight` jobs are with the workers; a further
 * `seal`/`open` waits for a slot before it is sent. Results resolve as they
 * finish; each carries its index, and awaiting the promises in the order they
 * were made gives the results in order.
 */

export interface SealerOptions {
  /** Worker threads. @default min(os.availableParallelism(), 4) */
  readonly threads?: number;
  /** Jobs sent to workers at once (each holds one chunk in and one out). @default 2 × threads */
  readonly maxInFlight?: number;
}

export interface PooledSealedChunk extends SealedChunk {
  readonly index: number;
  /**
   * The plaintext buffer given to `seal`, handed back (same memory, contents
   * unchanged) so it can be reused — e.g. `ChunkingSink.release` — instead of
   * freed: allocating and freeing chunk-sized buffers across threads is what
   * costs most on some VMs (bench/hash.ts).
   */
  readonly plain: Buffer;
}

export interface SealerStats {
  readonly sealed: number;
  readonly opened: number;
  /** Jobs done per worker, by the threadId the worker reported. */
  readonly byThread: ReadonlyMap<number, number>;
}

export interface Sealer {
  readonly threads: number;
  seal(index: number, plain: Buffer): Promise<PooledSealedChunk>;
  /** openChunk on a worker: name check, decrypt, key re-derivation (IntegrityError on failure). */
  open(ciphertext: Buffer, expected: ChunkRef): Promise<Buffer>;
  stats(): SealerStats;
  /** Stops the workers; jobs still pending fail. Idempotent. */
  close(): Promise<void>;
}

export function defaultThreads(): number {
  return Math.max(1, Math.min(availableParallelism(), 4));
}

interface Pending {
  readonly worker: PoolWorker;
  readonly index: number;
  resolve(v: PooledSealedChunk | Buffer): void;
  reject(e: Error): void;
}

interface PoolWorker {
  readonly worker: Worker;
  busy: number;
}

const WORKER_URL = new URL('./seal-worker.js', import.meta.url);

export function createSealer(salt: Salt, options: SealerOptions = {}): Sealer {
  checkSalt(salt);
  const threads = options.threads ?? defaultThreads();
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`Cannot start ${threads} seal workers: want an integer ≥ 1`);
  const maxInFlight = options.maxInFlight ?? 2 * threads;
  if (!Number.isInteger(maxInFlight) || maxInFlight < 1) throw new RangeError(`Cannot keep ${maxInFlight} jobs in flight: want an integer ≥ 1`);

  const init: WorkerInit = { chunkyardSealWorker: 1, epoch: salt.epoch, secret: new Uint8Array(salt.secret) };
  const pending = new Map<number, Pending>();
  const waiters: (() => void)[] = [];
  const byThread = new Map<number, number>();
  let inFlight = 0;
  let nextJob = 0;
  let sealed = 0;
  let opened = 0;
  let failure: Error | null = null;
  let closed = false;

  const fail = (w: PoolWorker | null, e: Error): void => {
    failure ??= e;
    for (const [job, p] of pending) {
      if (w === null || p.worker === w) {
        pending.delete(job);
        p.reject(e);
      }
    }
    // Wake every waiter: they will see `failure` and reject.
    for (const wake of waiters.splice(0)) wake();
  };

  const done = (w: PoolWorker): void => {
    inFlight--;
    // Idle workers don't keep the process alive (a caller that forgets close() still exits).
    if (--w.busy === 0) w.worker.unref();
    waiters.shift()?.();
  };

  const pool: PoolWorker[] = [];
  for (let i = 0; i < threads; i++) {
    const w: PoolWorker = { worker: new Worker(WORKER_URL, { workerData: init }), busy: 0 };
    w.worker.unref();
    w.worker.on('message', (reply: WorkerReply) => {
      const p = pending.get(reply.job);
      if (!p) return;
      pending.delete(reply.job);
      byThread.set(reply.threadId, (byThread.get(reply.threadId) ?? 0) + 1);
      done(w);
      if (reply.ok === 'seal') {
        sealed++;
        p.resolve({ index: p.index, id: parseChunkId(reply.id), key: asBuffer(reply.key), ciphertext: asBuffer(reply.ciphertext), plain: asBuffer(reply.plain) });
      } else if (reply.ok === 'open') {
        opened++;
        p.resolve(asBuffer(reply.plain));
      } else {
        p.reject(reply.error.kind === 'integrity' ? new IntegrityError(reply.error.message) : new Error(reply.error.message));
      }
    });
    w.worker.on('error', (e: Error) => fail(w, new Error(`seal worker failed: ${e.message}`, { cause: e })));
    w.worker.on('exit', (code) => {
      if (!closed) fail(w, new Error(`seal worker exited unexpectedly (code ${code})`));
    });
    pool.push(w);
  }

  const submit = async <T extends PooledSealedChunk | Buffer>(index: number, make: (job: number) => { req: WorkerRequest; transfer: ArrayBuffer[] }): Promise<T> => {
    while (!failure && !closed && inFlight >= maxInFlight) await new Promise<void>((wake) => waiters.push(wake));
    if (closed) throw new Error('Cannot use the sealer: it is closed');
    if (failure) throw failure;
    inFlight++;
    let w = pool[0]!;
    for (const c of pool) if (c.busy < w.busy) w = c;
    if (w.busy++ === 0) w.worker.ref();
    const job = nextJob++;
    const { req, transfer } = make(job);
    return new Promise<T>((resolve, reject) => {
      pending.set(job, { worker: w, index, resolve: resolve as (v: PooledSealedChunk | Buffer) => void, reject });
      try {
        w.worker.postMessage(req, transfer);
      } catch {
        try {
          w.worker.postMessage(req); // memory Node marks untransferable: send a copy
        } catch (e) {
          pending.delete(job);
          done(w);
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      }
    });
  };

  return {
    threads,
    seal(index, plain) {
      return submit<PooledSealedChunk>(index, (job) => {
        const t = forTransfer(plain);
        return { req: { job, op: 'seal', plain: t.view }, transfer: t.transfer };
      });
    },
    open(ciphertext, expected) {
      return submit<Buffer>(-1, (job) => {
        const t = forTransfer(ciphertext);
        return { req: { job, op: 'open', ciphertext: t.view, id: expected.id, key: new Uint8Array(expected.key) }, transfer: t.transfer };
      });
    },
    stats: () => ({ sealed, opened, byThread: new Map(byThread) }),
    async close() {
      if (closed) return;
      closed = true;
      fail(null, new Error('Cannot finish the job: the sealer was closed'));
      await Promise.all(pool.map((w) => w.worker.terminate()));
    },
  };
}
