/**
 * Registry layer blobs fetched into temp files ahead of the build, so the
 * network overlaps the flatten and the decompression runs on the layer
 * worker thread like a local blob's (off-thread.ts):
 *
 *   HTTP (resumed on breaks) → temp file ← worker reads as it grows
 *                                          (size, digest, decompress) → diff_id
 *
 * Opening layer i starts its download if it is not under way, and the
 * downloads of the next `ahead` layers not yet read (3 by default), all at
 * once. A reader may start on a file still being written: it is told how far
 * the file is (GrowingFile) and reads no further. Bytes are not hashed here —
 * the reader checks size and digest as for any blob file — but the download
 * stops at the declared size, so a hostile registry cannot fill the disk.
 *
 * Disk use is bounded: a file is deleted as soon as its last reader is done
 * (opening the layer again downloads it again), and downloads ahead stop at
 * `ahead` layers past the one being read. Everything is removed on close()
 * (which aborts downloads under way), so after an error or an interrupt too;
 * only a process killed outright leaves its `chunkyard-pull-*` directory.
 */
import { mkdtemp, open, rm, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { InputError, IntegrityError, InterruptedError } from '../../errors.js';
import type { Digest } from '../digest.js';
import type { GrowingFile } from '../off-thread.js';
import type { RegistryClient } from './client.js';

export interface DownloadsOptions {
  /** Layers fetched ahead of the one being read. @default 3 */
  readonly ahead?: number;
  /** Where the temp directory goes. @default os.tmpdir() */
  readonly tempDir?: string;
}

export interface BlobToFetch {
  readonly index: number;
  readonly digest: Digest;
  readonly size: number;
}

/** Bytes gathered before a write: large writes, and readers told of progress in useful steps. */
const WRITE_BYTES = 256 * 1024;

/** One blob being (or having been) written to a temp file. */
export class Download implements GrowingFile {
  readonly file: string;
  available = 0;
  complete = false;
  failure: Error | undefined;
  /** Streams reading the file now. */
  readers = 0;
  readonly #listeners = new Set<(failure?: Error) => void>();
  readonly controller = new AbortController();
  /** Settles (never rejects) when the download has ended, well or not. */
  settled: Promise<void> = Promise.resolve();

  constructor(file: string) {
    this.file = file;
  }

  watch(listener: (failure?: Error) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  emit(failure?: Error): void {
    for (const l of [...this.#listeners]) l(failure);
  }

  /** Resolves when the whole blob is written; rejects with the download's error. */
  whenComplete(): Promise<void> {
    if (this.complete) return Promise.resolve();
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const stop = this.watch((failure) => {
        if (failure !== undefined) {
          stop();
          reject(failure);
        } else if (this.complete) {
          stop();
          resolve();
        }
      });
    });
  }
}

export class LayerDownloads {
  readonly #client: RegistryClient;
  readonly #blobs: readonly BlobToFetch[];
  readonly #dir: string;
  /** For messages: `docker://host/repo:tag`. */
  readonly #where: string;
  readonly #ahead: number;
  readonly #downloads: (Download | undefined)[];
  /** Layers whose file a reader has finished with (not fetched ahead again). */
  readonly #read: boolean[];
  readonly #all = new Set<Download>();
  #closed = false;
  #closing: Promise<void> | undefined;
  #seq = 0;

  private constructor(client: RegistryClient, blobs: readonly BlobToFetch[], dir: string, where: string, ahead: number) {
    this.#client = client;
    this.#blobs = blobs;
    this.#dir = dir;
    this.#where = where;
    this.#ahead = ahead;
    this.#downloads = blobs.map(() => undefined);
    this.#read = blobs.map(() => false);
  }

  /** Makes the temp directory; nothing is fetched until a layer is opened. */
  static async create(client: RegistryClient, blobs: readonly BlobToFetch[], where: string, options: DownloadsOptions = {}): Promise<LayerDownloads> {
    const ahead = options.ahead ?? 3;
    if (!Number.isInteger(ahead) || ahead < 0) throw new InputError(`layers to fetch ahead must be a non-negative integer, not ${ahead}`);
    const parent = options.tempDir ?? os.tmpdir();
    let dir: string;
    try {
      dir = await mkdtemp(path.join(parent, 'chunkyard-pull-'));
    } catch (e) {
      throw new InputError(`cannot make a temp directory for downloads in ${parent}: ${(e as Error).message}`, { cause: e });
    }
    return new LayerDownloads(client, blobs, dir, where, ahead);
  }

  get directory(): string {
    return this.#dir;
  }

  /** Where messages say a layer's bytes come from. */
  get where(): string {
    return this.#where;
  }

  /**
   * The download of layer `i`, started if need be (again, if an earlier one
   * failed), with the next layers fetched ahead. The
   * caller reads the file and then calls release().
   */
  acquire(i: number): Download {
    if (this.#closed) throw new InputError(`${this.#where}: the image source is closed`);
    let d = this.#downloads[i];
    // A failed download is tried afresh (its readers, if any, already have the error).
    if (d === undefined || d.failure !== undefined) d = this.#start(i);
    d.readers++;
    this.#fetchAhead(i);
    return d;
  }

  /** A reader of layer `i` is done: with no reader left, the file goes (and its download stops, if still running). */
  release(i: number, d: Download): void {
    d.readers--;
    if (d.readers > 0) return;
    this.#read[i] = true;
    if (this.#downloads[i] === d) this.#downloads[i] = undefined;
    d.controller.abort();
    void d.settled.then(() => unlink(d.file).catch(() => {}));
  }

  #fetchAhead(from: number): void {
    let n = 0;
    for (let j = from + 1; j < this.#blobs.length && n < this.#ahead; j++) {
      if (this.#read[j] === true) continue;
      const d = this.#downloads[j];
      if (d === undefined) this.#start(j);
      n++;
    }
  }

  #start(i: number): Download {
    const blob = this.#blobs[i] as BlobToFetch;
    const d = new Download(path.join(this.#dir, `layer-${i}-${this.#seq++}`));
    this.#downloads[i] = d;
    this.#all.add(d);
    d.settled = this.#run(blob, d).then(() => {
      this.#all.delete(d);
    });
    return d;
  }

  async #run(blob: BlobToFetch, d: Download): Promise<void> {
    const what = `layer ${blob.index} ${blob.digest} (${this.#where})`;
    const signal = d.controller.signal;
    let fh: FileHandle | undefined;
    try {
      fh = await open(d.file, 'w', 0o600);
      const file = fh;
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      const flush = async (): Promise<void> => {
        if (pendingBytes === 0) return;
        const bufs = pending;
        const n = pendingBytes;
        pending = [];
        pendingBytes = 0;
        let done = (await file.writev(bufs)).bytesWritten;
        // A short write: the rest, piece by piece.
        while (done < n) {
          const rest = Buffer.concat(bufs).subarray(done);
          done += (await file.write(rest)).bytesWritten;
        }
        d.available += n;
        d.emit();
      };
      for await (const chunk of this.#client.blobChunks(blob, `layer ${blob.index}`, signal)) {
        if (d.available + pendingBytes + chunk.length > blob.size) throw new IntegrityError(`${what}: more than the expected ${blob.size} bytes`);
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (pendingBytes >= WRITE_BYTES) await flush();
      }
      await flush();
      if (d.available !== blob.size) throw new IntegrityError(`${what}: ${d.available} bytes, expected ${blob.size}`);
      d.complete = true;
      d.emit();
    } catch (e) {
      const err = signal.aborted ? new InterruptedError('interrupted') : e instanceof Error ? e : new Error(String(e));
      d.failure = err;
      d.emit(err);
    } finally {
      await fh?.close().catch(() => {});
    }
  }

  /** Stops every download and removes the temp directory. Idempotent. */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      this.#closed = true;
      const running = [...this.#all];
      for (const d of running) d.controller.abort();
      this.#closing = Promise.all(running.map((d) => d.settled)).then(() => rm(this.#dir, { recursive: true, force: true }));
    }
    return this.#closing;
  }
}
