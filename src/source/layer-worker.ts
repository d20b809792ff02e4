/**
 * Worker-thread entry (see off-thread.ts): reads a layer blob, checks its
 * size and digest and decompresses it, off the main thread, and ships the
 * tar bytes back in large transferred ArrayBuffers. (The main thread hashes
 * what it receives for the diff_id: it has time to spare while we decode.)
 * A worker takes one job (layer) at a time and stays for the next, so a
 * multi-layer build starts one thread, not one per layer.
 *
 * The decoders (sync-decode.ts) write straight into the batch that is then
 * transferred: the bytes are written once and never copied on either thread.
 * File reads are asynchronous and one slice ahead, so the disk (or page
 * cache copy) overlaps decoding.
 *
 * Same checks, order and messages as the in-thread pipeline
 * (layer-pipeline.ts): a size overrun fails at once; at the blob's end its
 * size, then its digest (IntegrityError), then a decode error held back
 * since it happened (InputError: a flipped byte is reported as a digest
 * mismatch, not as corrupt gzip), then truncation.
 *
 * Flow control is by credits: at most `credits` batches of a job are sent
 * and not yet taken by the main thread's consumer; with none left the job
 * waits, so memory stays bounded whatever the layer's size.
 *
 * A blob may still be being written (a registry download, see
 * registry/downloads.ts): then the job says how many bytes are there, 'grown'
 * messages tell of more, and reads wait for them. Its compression may be
 * left to sniff from the first bytes, as for any blob whose first bytes were
 * not at hand when the job was made.
 */
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { parentPort } from 'node:worker_threads';
import { IntegrityError } from '../errors.js';
import { checkSupported, SNIFF_BYTES, sniffCompression, type SupportedCompression } from './decompress.js';
import { Digester } from './digest.js';
import { fsError } from './files.js';
import { type LayerBlob, openLayerPipeline } from './layer-pipeline.js';
import { createSyncDecoder, type SyncDecoder, syncGunzipAvailable } from './sync-decode.js';

/** A LayerBlob whose compression may be unknown yet ('sniff': from its first bytes). */
export type WorkerBlob = Omit<LayerBlob, 'compression'> & { readonly compression: SupportedCompression | 'sniff' };

/** How much of a blob file being written is there. */
export interface Growth {
  /** Bytes written so far (from the range's start). */
  readonly available: number;
  /** Writing finished: the whole range is there. */
  readonly complete: boolean;
}

export interface LayerJob {
  readonly id: number;
  readonly blob: WorkerBlob;
  /** Present while the blob file is still being written; 'grown' messages follow. */
  readonly growth?: Growth;
  /** Bytes per batch sent to the main thread. */
  readonly batchBytes: number;
  /** Batches that may be in flight before the main thread returns credit. */
  readonly credits: number;
}

/** Worker → main; `job` is the LayerJob id. */
export type WorkerMessage =
  | { readonly type: 'data'; readonly job: number; readonly buffer: ArrayBuffer; readonly length: number }
  | { readonly type: 'end'; readonly job: number }
  | { readonly type: 'error'; readonly job: number; readonly name: string; readonly message: string };

/** Main → worker: a job; credit for `n` more batches of a job; or a batch's memory, done with, to fill again. */
export type MainMessage =
  | { readonly type: 'job'; readonly job: LayerJob }
  | { readonly type: 'grown'; readonly job: number; readonly available: number; readonly complete: boolean }
  | { readonly type: 'credit'; readonly job: number; readonly n: number }
  | { readonly type: 'recycle'; readonly buffer: ArrayBuffer };

/** Compressed bytes per read. */
const READ_BYTES = 1024 * 1024;
/** Recycled batch buffers kept at most (only batches we sent come back, so this is a backstop). */
const MAX_FREE = 16;

const port = parentPort;
if (port === null) throw new Error('layer-worker.js must run as a worker thread');

/** A job being run, with its flow-control state and, for a blob being written, how far that is. */
interface JobState {
  readonly job: LayerJob;
  credits: number;
  wake: (() => void) | undefined;
  growth: Growth | undefined;
  grown: (() => void) | undefined;
}

/** The job being run. */
let current: JobState | undefined;
/** Batch memory handed back by the main thread, reused across jobs. */
const free: ArrayBuffer[] = [];

port.on('message', (m: MainMessage) => {
  switch (m.type) {
    case 'job':
      run(m.job);
      break;
    case 'credit':
      if (current !== undefined && current.job.id === m.job) {
        current.credits += m.n;
        const w = current.wake;
        current.wake = undefined;
        w?.();
      }
      break;
    case 'grown':
      if (current !== undefined && current.job.id === m.job) {
        current.growth = { available: m.available, complete: m.complete };
        const w = current.grown;
        current.grown = undefined;
        w?.();
      }
      break;
    case 'recycle':
      if (free.length < MAX_FREE) free.push(m.buffer);
      break;
  }
});

function post(msg: WorkerMessage, transfer?: ArrayBuffer[]): void {
  port!.postMessage(msg, transfer);
}

function run(job: LayerJob): void {
  // The main thread sends a job only to an idle worker; a second one would be its bug.
  if (current !== undefined) throw new Error(`layer worker: job ${job.id} sent while job ${current.job.id} runs`);
  const state: JobState = { job, credits: job.credits, wake: undefined, growth: job.growth, grown: undefined };
  current = state;
  const go = (job.blob.compression === 'gzip' || job.blob.compression === 'sniff') && !syncGunzipAvailable() ? pumpStreams : pump;
  go(job, state).then(
    () => {
      current = undefined;
      post({ type: 'end', job: job.id });
    },
    (e: Error) => {
      current = undefined;
      post({ type: 'error', job: job.id, name: e.name, message: e.message });
    },
  );
}

/** Batches out, each transferred once full (or at the end); waits for the job's credit. */
class Batcher {
  readonly #state: JobState;
  #buf: Buffer;
  #fill = 0;

  constructor(state: JobState) {
    this.#state = state;
    this.#buf = this.#newBatch();
  }

  #newBatch(): Buffer {
    const size = this.#state.job.batchBytes;
    // Recycled memory of another batch size (an earlier job's) is dropped.
    for (let ab = free.pop(); ab !== undefined; ab = free.pop()) if (ab.byteLength === size) return Buffer.from(ab);
    return Buffer.allocUnsafeSlow(size);
  }

  /** Where the next decoded bytes go (never empty). */
  get room(): Buffer {
    return this.#buf.subarray(this.#fill);
  }

  async wrote(n: number): Promise<void> {
    this.#fill += n;
    if (this.#fill === this.#buf.length) await this.ship();
  }

  async ship(): Promise<void> {
    if (this.#fill === 0) return;
    const s = this.#state;
    while (s.credits === 0) await new Promise<void>((r) => (s.wake = r));
    s.credits--;
    const ab = this.#buf.buffer as ArrayBuffer;
    const length = this.#fill;
    this.#buf = this.#newBatch();
    this.#fill = 0;
    post({ type: 'data', job: s.job.id, buffer: ab, length }, [ab]);
  }
}

async function openBlob(blob: WorkerBlob): Promise<FileHandle> {
  try {
    return await open(blob.range.file, 'r');
  } catch (e) {
    throw fsError(e, blob.range.where);
  }
}

/**
 * Where reading at `pos` may go up to: the range's end, or for a blob still
 * being written what is there, once that is at least `need` bytes past `pos`
 * (waiting for 'grown' messages until it is, or writing is complete).
 */
async function readableEnd(state: JobState, pos: number, need: number): Promise<number> {
  const size = state.job.blob.range.size;
  for (;;) {
    const g = state.growth;
    if (g === undefined || g.complete || g.available >= Math.min(size, pos + need)) return g === undefined || g.complete ? size : Math.min(size, g.available);
    await new Promise<void>((r) => (state.grown = r));
  }
}

function readSlice(blob: WorkerBlob, fh: FileHandle, buf: Buffer, pos: number, end = blob.range.size): Promise<Buffer> {
  const len = Math.min(buf.length, end - pos);
  if (len <= 0) return Promise.resolve(buf.subarray(0, 0));
  return fh.read(buf, 0, len, blob.range.start + pos).then(
    ({ bytesRead }) => buf.subarray(0, bytesRead),
    (e: unknown) => {
      throw fsError(e, blob.range.where);
    },
  );
}

/** The decoder for the blob's compression; sniffed from `head` when the job left it open. */
function decoderFor(blob: WorkerBlob, head: Buffer): SyncDecoder {
  const compression = blob.compression === 'sniff' ? checkSupported(sniffCompression(head.subarray(0, SNIFF_BYTES)), `${blob.name} (${blob.range.where})`) : blob.compression;
  return createSyncDecoder(compression, blob.name);
}

async function pump(job: LayerJob, state: JobState): Promise<void> {
  const blob = job.blob;
  const what = `${blob.name} (${blob.range.where})`;
  const blobDigest = new Digester();
  const out = new Batcher(state);
  let decoder: SyncDecoder | undefined;
  let failure: Error | undefined; // a decode (or sniff) error, held back to the blob's end
  // A blob file being written may not even exist yet: wait for its first bytes.
  await readableEnd(state, 0, SNIFF_BYTES);
  const fh = await openBlob(blob);
  // Two read buffers take turns: one is decoded while the next is read.
  const bufs = [Buffer.allocUnsafe(READ_BYTES), Buffer.allocUnsafe(READ_BYTES)];
  const readAt = async (buf: Buffer, pos: number): Promise<Buffer> => readSlice(blob, fh, buf, pos, await readableEnd(state, pos, pos === 0 ? SNIFF_BYTES : 1));
  let next: Promise<Buffer> = readAt(bufs[0]!, 0);
  try {
    let pos = 0;
    let turn = 0;
    for (;;) {
      const input = await next;
      if (input.length === 0) break; // end of range, or the file is shorter (size check below)
      pos += input.length;
      turn ^= 1;
      next = readAt(bufs[turn]!, pos);
      blobDigest.update(input);
      if (blobDigest.bytes > blob.size) throw new IntegrityError(`${what}: more than the expected ${blob.size} bytes`);
      if (failure !== undefined) continue; // drain: the digest check needs every byte
      try {
        decoder ??= decoderFor(blob, input);
      } catch (e) {
        failure = e as Error;
        continue;
      }
      try {
        let rest = input;
        for (;;) {
          const step = decoder.decode(rest, out.room);
          rest = rest.subarray(step.consumed);
          await out.wrote(step.produced);
          if (!step.more) break;
        }
      } catch (e) {
        failure = e as Error;
      }
    }
    if (blobDigest.bytes !== blob.size) throw new IntegrityError(`${what}: ${blobDigest.bytes} bytes, expected ${blob.size}`);
    const actual = blobDigest.digest();
    if (actual !== blob.digest) throw new IntegrityError(`${what}: content hashes to ${actual}, expected ${blob.digest}`);
    if (failure !== undefined) throw failure;
    decoder ??= decoderFor(blob, Buffer.alloc(0)); // an empty blob
    for (;;) {
      const step = decoder.finish(out.room);
      await out.wrote(step.produced);
      if (!step.more) break;
    }
    await out.ship();
  } finally {
    decoder?.close();
    next.catch(() => {}); // a read still in flight when we failed: close waits for it, its error is moot
    await fh.close();
  }
}

/** Without the zlib internals sync-decode needs: the in-thread stream pipeline, copied into batches. */
async function pumpStreams(job: LayerJob, state: JobState): Promise<void> {
  const out = new Batcher(state);
  const blob = job.blob;
  // The stream pipeline reads a finished file: wait for a blob being written, then sniff if asked to.
  await readableEnd(state, 0, blob.range.size);
  let compression: SupportedCompression;
  if (blob.compression === 'sniff') {
    const fh = await openBlob(blob);
    let head: Buffer;
    try {
      head = await readSlice(blob, fh, Buffer.alloc(SNIFF_BYTES), 0);
    } finally {
      await fh.close();
    }
    try {
      compression = checkSupported(sniffCompression(head), `${blob.name} (${blob.range.where})`);
    } catch (e) {
      // As in pump: a digest mismatch is reported before what the bytes look like.
      for await (const _ of openLayerPipeline({ ...blob, compression: 'none', diffId: blob.digest })) void _;
      throw e;
    }
  } else {
    compression = blob.compression;
  }
  for await (const chunk of openLayerPipeline({ ...blob, compression })) {
    const c = chunk as Buffer;
    for (let off = 0; off < c.length; ) {
      const n = c.copy(out.room, 0, off);
      off += n;
      await out.wrote(n);
    }
  }
  await out.ship();
}
