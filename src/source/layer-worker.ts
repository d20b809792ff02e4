/**
 * Worker-thread entry (see off-thread.ts): reads a layer blob, checks its
 * size and digest, decompresses it and checks the diff_id, all off the main
 * thread, and ships the tar bytes back in large transferred ArrayBuffers.
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
 * mismatch, not as corrupt gzip), then truncation, then the diff_id.
 *
 * Flow control is by credits: at most `credits` batches are sent and not yet
 * taken by the main thread's consumer; with none left the worker waits, so
 * memory stays bounded whatever the layer's size.
 */
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { parentPort, workerData } from 'node:worker_threads';
import { IntegrityError } from '../errors.js';
import { Digester } from './digest.js';
import { fsError } from './files.js';
import { type LayerBlob, openLayerPipeline } from './layer-pipeline.js';
import { createSyncDecoder, type SyncDecoder, syncGunzipAvailable } from './sync-decode.js';

export interface LayerWorkerData {
  readonly blob: LayerBlob;
  /**
   * The main thread hashes the batches it receives for the diff_id check
   * (it has spare time while the worker decodes); the worker then skips it.
   */
  readonly diffIdOnMain: boolean;
  /** Bytes per batch sent to the main thread. */
  readonly batchBytes: number;
  /** Batches that may be in flight before the main thread returns credit. */
  readonly credits: number;
}

/** Worker → main. */
export type WorkerMessage =
  | { readonly type: 'data'; readonly buffer: ArrayBuffer; readonly length: number }
  | { readonly type: 'end' }
  | { readonly type: 'error'; readonly name: string; readonly message: string };

/** Main → worker: the consumer took `n` batches; or it is done with a batch's memory, to fill again. */
export type MainMessage = { readonly type: 'credit'; readonly n: number } | { readonly type: 'recycle'; readonly buffer: ArrayBuffer };

/** Compressed bytes per read. */
const READ_BYTES = 1024 * 1024;

const port = parentPort;
if (port === null) throw new Error('layer-worker.js must run as a worker thread');
const { blob, batchBytes, credits: initialCredits, diffIdOnMain } = workerData as LayerWorkerData;

let credits = initialCredits;
let wake: (() => void) | undefined;
/** Batch memory handed back by the main thread (bounded: only batches we sent come back). */
const free: ArrayBuffer[] = [];
port.on('message', (m: MainMessage) => {
  if (m.type === 'recycle') {
    if (m.buffer.byteLength === batchBytes && free.length < initialCredits + 4) free.push(m.buffer);
    return;
  }
  credits += m.n;
  const w = wake;
  wake = undefined;
  w?.();
});

function newBatch(): Buffer {
  const ab = free.pop();
  return ab !== undefined ? Buffer.from(ab) : Buffer.allocUnsafeSlow(batchBytes);
}

function post(msg: WorkerMessage, transfer?: ArrayBuffer[]): void {
  port!.postMessage(msg, transfer);
}

/** Batches out, each transferred once full (or at the end); waits for credit. */
class Batcher {
  #buf = newBatch();
  #fill = 0;
  /** Hashes what is shipped, for the diff_id check; undefined when not needed. */
  readonly digester: Digester | undefined;

  constructor(hash: boolean) {
    this.digester = hash ? new Digester() : undefined;
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
    while (credits === 0) await new Promise<void>((r) => (wake = r));
    credits--;
    const buf = this.#buf;
    const length = this.#fill;
    this.digester?.update(buf.subarray(0, length));
    this.#buf = newBatch();
    this.#fill = 0;
    post({ type: 'data', buffer: buf.buffer as ArrayBuffer, length }, [buf.buffer as ArrayBuffer]);
  }
}

async function openBlob(): Promise<FileHandle> {
  try {
    return await open(blob.range.file, 'r');
  } catch (e) {
    throw fsError(e, blob.range.where);
  }
}

function readSlice(fh: FileHandle, buf: Buffer, pos: number): Promise<Buffer> {
  const len = Math.min(buf.length, blob.range.size - pos);
  if (len <= 0) return Promise.resolve(buf.subarray(0, 0));
  return fh.read(buf, 0, len, blob.range.start + pos).then(
    ({ bytesRead }) => buf.subarray(0, bytesRead),
    (e: unknown) => {
      throw fsError(e, blob.range.where);
    },
  );
}

async function pump(): Promise<void> {
  const what = `${blob.name} (${blob.range.where})`;
  const blobDigest = new Digester();
  // An uncompressed blob whose digest is its diff_id is checked once.
  const checkDiffId = !diffIdOnMain && (blob.compression !== 'none' || blob.digest !== blob.diffId);
  const out = new Batcher(checkDiffId);
  const decoder: SyncDecoder = createSyncDecoder(blob.compression, blob.name);
  let failure: Error | undefined; // a decode error, held back to the blob's end
  const fh = await openBlob();
  // Two read buffers take turns: one is decoded while the next is read.
  const bufs = [Buffer.allocUnsafe(READ_BYTES), Buffer.allocUnsafe(READ_BYTES)];
  let next: Promise<Buffer> = readSlice(fh, bufs[0]!, 0);
  try {
    let pos = 0;
    let turn = 0;
    for (;;) {
      const input = await next;
      if (input.length === 0) break; // end of range, or the file is shorter (size check below)
      pos += input.length;
      turn ^= 1;
      next = readSlice(fh, bufs[turn]!, pos);
      blobDigest.update(input);
      if (blobDigest.bytes > blob.size) throw new IntegrityError(`${what}: more than the expected ${blob.size} bytes`);
      if (failure !== undefined) continue; // drain: the digest check needs every byte
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
    for (;;) {
      const step = decoder.finish(out.room);
      await out.wrote(step.produced);
      if (!step.more) break;
    }
    await out.ship();
    if (out.digester !== undefined) {
      const diff = out.digester.digest();
      if (diff !== blob.diffId) throw new IntegrityError(`${blob.name}: uncompressed content hashes to ${diff}, but the config's diff_id is ${blob.diffId}`);
    }
  } finally {
    decoder.close();
    next.catch(() => {}); // a read still in flight when we failed: close waits for it, its error is moot
    await fh.close();
  }
}

/** Without the zlib internals sync-decode needs: the in-thread stream pipeline, copied into batches. */
async function pumpStreams(): Promise<void> {
  const out = new Batcher(false);
  for await (const chunk of openLayerPipeline(blob)) {
    let off = 0;
    const c = chunk as Buffer;
    while (off < c.length) {
      const n = c.copy(out.room, 0, off);
      off += n;
      await out.wrote(n);
    }
  }
  await out.ship();
}

const run = blob.compression === 'gzip' && !syncGunzipAvailable() ? pumpStreams : pump;
run().then(
  () => post({ type: 'end' }),
  (e: Error) => post({ type: 'error', name: e.name, message: e.message }),
).finally(() => port.unref()); // nothing left to do: let the thread end
