/**
 * A published image as a read-only block device: byte ranges in, chunks
 * fetched (TieredFetcher), checked, decrypted and authenticated, bytes out.
 * Holes read as zeros without a fetch. In front of the fetcher sits a small
 * LRU of decrypted chunks (the `memory` tier in the metrics): an ext4 walk or
 * a kernel's readahead asks for the same chunk many times in a row.
 *
 * Both the ext4 reader (as a ByteSource) and the NBD server (as a block
 * device: size, readOnly, read, close) read through this one class, so
 * `cat`, `verify` and `serve` share one read path and one set of metrics.
 *
 * Start-up traces: the order in which chunks are first read by demand reads
 * can be recorded and saved (trace.ts), and a later start can prefetch them
 * in that order, at prefetch priority, behind every demand read.
 */
import { setMaxListeners } from 'node:events';
import { openNamedChunk, type ChunkRef } from '../chunks/seal.js';
import type { Salt } from '../chunks/salt.js';
import { IntegrityError, InterruptedError, throwIfAborted } from '../errors.js';
import { checkRange, type ByteSource } from '../ext4/byte-source.js';
import type { ManifestHeader } from '../manifest/schema.js';
import type { Digest } from '../source/digest.js';
import { forEachBounded } from '../store/pool.js';
import type { ReadPathMetrics } from '../cache/metrics.js';
import { SingleFlight } from '../cache/single-flight.js';
import type { Priority, TieredFetcher } from '../cache/tiered.js';
import { pushExtent, type Extent } from './device.js';
import { chunkTableDigest, readTraceFile, writeTraceFile, type TraceIdentity } from './trace.js';

/** The largest single read (the NBD server caps requests at this too). */
export const MAX_VIEW_READ = 32 * 1024 * 1024;

export interface ChunkViewOptions {
  /** The opened manifest's header: image size and chunk size. */
  readonly header: ManifestHeader;
  /** Per chunk its name and key, or null for a hole (openManifest's `chunks`). */
  readonly chunks: readonly (ChunkRef | null)[];
  /** The salt the chunks were sealed under (manifestSalt). */
  readonly salt: Salt;
  readonly fetcher: TieredFetcher;
  /** Decrypted chunks kept in memory (LRU). 0 turns the memory tier off. @default 64 (32 MiB of 512 KiB chunks) */
  readonly memoryChunks?: number;
  /** Called once per stored chunk, the first time a demand read touches it (not for prefetches or holes). Must not throw. */
  readonly onFirstRead?: (index: number) => void;
  /** Names the image in messages. @default the manifest digest, else 'image' */
  readonly name?: string;
  /** The manifest's digest: recorded in traces, and a trace for another digest is refused. */
  readonly manifestDigest?: Digest;
}

export interface PrefetchOptions {
  readonly signal?: AbortSignal;
  /** Chunks fetched at once. @default 4 */
  readonly concurrency?: number;
}

export interface PrefetchProgress {
  readonly total: number;
  /** warmed + skipped + failed */
  readonly done: number;
  /** Fetched into the cache tiers (and into memory where there was room). */
  readonly warmed: number;
  /** Holes, chunks already in memory or already being read, and (with no cache tier and no room in memory) chunks there was nowhere to keep. */
  readonly skipped: number;
  readonly failed: number;
}

export interface PrefetchResult extends PrefetchProgress {
  /** Stopped (stop(), the signal, or close()) before the end. */
  readonly stopped: boolean;
  /** The first failure, if any (prefetch is best effort: a failure does not stop it; the demand read of that chunk will report it). */
  readonly firstError?: unknown;
}

export interface PrefetchHandle {
  /** Settles when the prefetch ends or is stopped; never rejects. */
  readonly done: Promise<PrefetchResult>;
  progress(): PrefetchProgress;
  /** Stops starting chunks and abandons those in flight (a demand read sharing one keeps it). */
  stop(): void;
}

interface MemoryEntry {
  readonly data: Buffer;
  /** 'prefetch' until a demand read uses it. */
  kind: Priority;
}

/** What a joiner of a load can change: a demand read arriving makes it a demand load. */
interface Load {
  priority: Priority;
}

export class ChunkView implements ByteSource {
  readonly size: number;
  readonly readOnly = true as const;
  readonly name: string;
  readonly chunkSize: number;
  readonly #chunks: readonly (ChunkRef | null)[];
  readonly #salt: Salt;
  readonly #fetcher: TieredFetcher;
  readonly #metrics: ReadPathMetrics;
  readonly #memoryChunks: number;
  readonly #onFirstRead: ((index: number) => void) | undefined;
  readonly #manifestDigest: Digest | null;
  /** Insertion order is recency: the first key is the least recently used. */
  readonly #memory = new Map<number, MemoryEntry>();
  readonly #loads = new SingleFlight<number, Buffer, Load>();
  readonly #firstRead: Uint8Array;
  #traced: Uint8Array | undefined;
  #trace: number[] = [];
  /** Running prefetches: their stop functions and results. */
  readonly #prefetches = new Map<() => void, Promise<PrefetchResult>>();
  #fetched = 0;
  #closed = false;
  #identity: TraceIdentity | undefined;

  constructor(options: ChunkViewOptions) {
    const { header, chunks } = options;
    this.size = header.filesystem.size;
    this.chunkSize = header.chunks.size;
    const want = Math.ceil(this.size / this.chunkSize);
    if (chunks.length !== want) {
      throw new RangeError(`Cannot view an image of ${this.size} bytes in ${this.chunkSize}-byte chunks with ${chunks.length} chunk entries: want ${want}`);
    }
    const memoryChunks = options.memoryChunks ?? 64;
    if (!Number.isInteger(memoryChunks) || memoryChunks < 0) throw new RangeError(`Cannot keep ${memoryChunks} chunks in memory: want an integer ≥ 0`);
    this.#chunks = chunks;
    this.#salt = options.salt;
    this.#fetcher = options.fetcher;
    this.#metrics = options.fetcher.metrics;
    this.#memoryChunks = memoryChunks;
    this.#onFirstRead = options.onFirstRead;
    this.#manifestDigest = options.manifestDigest ?? null;
    this.name = options.name ?? options.manifestDigest ?? 'image';
    this.#firstRead = new Uint8Array(chunks.length);
    this.#metrics.tier('memory');
    this.#metrics.chunks.total += chunks.length;
    this.#metrics.chunks.holes += chunks.reduce((n, c) => n + (c === null ? 1 : 0), 0);
  }

  /** Chunks this view asked the fetcher for (demand and prefetch; a chunk evicted from memory and read again counts twice). */
  get fetchedChunks(): number {
    return this.#fetched;
  }

  /** Where this view (memory tier, reads, chunks) and its fetcher count. */
  get metrics(): ReadPathMetrics {
    return this.#metrics;
  }

  /** Chunks in the image, holes included. */
  get totalChunks(): number {
    return this.#chunks.length;
  }

  /** Decrypted chunks held in memory now. */
  get memoryChunks(): number {
    return this.#memory.size;
  }

  /**
   * Exactly `length` bytes (≤ MAX_VIEW_READ) from `offset`. RangeError for a
   * range outside the image; IntegrityError when a chunk is missing from the
   * store, does not match its name, or does not authenticate under the
   * manifest's key (a wrong key or salt); InterruptedError when `signal`
   * fires (a chunk another read shares goes on being fetched).
   */
  async read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
    if (this.#closed) throw new Error(`Cannot read ${this.name}: the view is closed`);
    checkRange(this, offset, length);
    if (length > MAX_VIEW_READ) throw new RangeError(`Cannot read ${length} bytes of ${this.name} at once: at most ${MAX_VIEW_READ}`);
    throwIfAborted(signal);
    const m = this.#metrics;
    const t0 = m.nowUs();
    let unlink: (() => void) | undefined;
    try {
      // Zero-filled: holes need no more work.
      const out = Buffer.alloc(length);
      if (length > 0) {
        const first = Math.floor(offset / this.chunkSize);
        const last = Math.floor((offset + length - 1) / this.chunkSize);
        if (signal !== undefined && last > first) {
          // One listener on the caller's signal per read, not one per chunk (a 32 MiB read spans 64).
          const outer = signal;
          const inner = new AbortController();
          setMaxListeners(0, inner.signal);
          const onAbort = (): void => inner.abort(outer.reason);
          outer.addEventListener('abort', onAbort, { once: true });
          unlink = () => outer.removeEventListener('abort', onAbort);
          signal = inner.signal;
        }
        const copies: Promise<void>[] = [];
        for (let index = first; index <= last; index++) {
          const ref = this.#chunks[index];
          if (ref === null || ref === undefined) continue;
          this.#noteDemand(index);
          const start = index * this.chunkSize;
          const from = Math.max(offset, start);
          const to = Math.min(offset + length, start + this.chunkSize);
          copies.push(this.#demand(index, ref, signal).then((plain) => void plain.copy(out, from - offset, from - start, to - start)));
        }
        // All chunks of a read load at once; the fetcher bounds origin requests.
        await Promise.all(copies);
      }
      m.reads.count++;
      m.reads.bytes += length;
      m.reads.latency.record(m.sinceUs(t0));
      return out;
    } catch (e) {
      m.reads.errors++;
      throw e;
    } finally {
      unlink?.();
    }
  }

  /**
   * Holes and data in `[offset, offset + length)` from the chunk table alone
   * (no fetch): a hole chunk (all zeros when published) is `zero: true`,
   * a stored chunk data, adjacent runs merged. RangeError outside the image.
   */
  async extents(offset: number, length: number, signal?: AbortSignal): Promise<Extent[]> {
    if (this.#closed) throw new Error(`Cannot map ${this.name}: the view is closed`);
    checkRange(this, offset, length);
    throwIfAborted(signal);
    const runs: Extent[] = [];
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const index = Math.floor(pos / this.chunkSize);
      const to = Math.min(end, (index + 1) * this.chunkSize);
      pushExtent(runs, to - pos, this.#chunks[index] === null);
      pos = to;
    }
    return runs;
  }

  /** Stops prefetches, forgets the decrypted chunks. The fetcher (shared) stays open. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const running = [...this.#prefetches];
    for (const [stop] of running) stop();
    await Promise.all(running.map(([, done]) => done));
    this.#memory.clear();
  }

  // --- trace ---------------------------------------------------------------------------

  /** Starts (or restarts, from empty) recording the order of first demand reads. */
  recordTrace(): void {
    this.#traced = new Uint8Array(this.#chunks.length);
    this.#trace = [];
  }

  /** Stored chunk indexes in the order demand reads first touched them since recordTrace(). */
  trace(): number[] {
    return [...this.#trace];
  }

  /** Saves trace() with this image's identity (see trace.ts). */
  writeTrace(file: string): Promise<void> {
    return writeTraceFile(file, this.#traceIdentity(), this.#trace);
  }

  /** A trace saved by writeTrace for this same image; InputError if it was recorded for another manifest. */
  readTrace(file: string): Promise<number[]> {
    return readTraceFile(file, this.#traceIdentity());
  }

  #traceIdentity(): TraceIdentity {
    this.#identity ??= { manifest: this.#manifestDigest, chunkTable: chunkTableDigest(this.#chunks), chunkSize: this.chunkSize, chunks: this.#chunks.length };
    return this.#identity;
  }

  // --- prefetch -------------------------------------------------------------------------

  /**
   * Warms `indexes` in order, in the background, at prefetch priority: each
   * goes through the fetcher (so into the disk and shared tiers) and into
   * memory only where there is free room (a prefetch never evicts). Holes
   * and chunks already in memory are skipped.
   */
  prefetch(indexes: readonly number[], options: PrefetchOptions = {}): PrefetchHandle {
    for (const i of indexes) {
      if (!Number.isInteger(i) || i < 0 || i >= this.#chunks.length) throw new RangeError(`Cannot prefetch chunk ${i} of ${this.name}: it has chunks 0 to ${this.#chunks.length - 1}`);
    }
    if (this.#closed) throw new Error(`Cannot prefetch ${this.name}: the view is closed`);
    const concurrency = options.concurrency ?? 4;
    const stopper = new AbortController();
    const stop = (): void => stopper.abort();
    const outer = options.signal;
    const onOuter = (): void => stopper.abort();
    if (outer?.aborted) stopper.abort();
    else outer?.addEventListener('abort', onOuter, { once: true });
    const p = { total: indexes.length, warmed: 0, skipped: 0, failed: 0 };
    let firstError: { error: unknown } | undefined;
    const progress = (): PrefetchProgress => ({ ...p, done: p.warmed + p.skipped + p.failed });
    const done = (async (): Promise<PrefetchResult> => {
      let stopped = false;
      try {
        await forEachBounded(
          indexes,
          concurrency,
          async (index, signal) => {
            try {
              p[await this.#prefetchOne(index, signal)]++;
            } catch (e) {
              if (signal.aborted || stopper.signal.aborted) throw new InterruptedError('interrupted', { cause: e });
              p.failed++;
              firstError ??= { error: e };
            }
          },
          stopper.signal,
        );
      } catch (e) {
        if (!stopper.signal.aborted) firstError ??= { error: e };
        stopped = true;
      } finally {
        outer?.removeEventListener('abort', onOuter);
        this.#prefetches.delete(stop);
      }
      return { ...progress(), stopped, ...(firstError ? { firstError: firstError.error } : {}) };
    })();
    this.#prefetches.set(stop, done);
    return { done, progress, stop };
  }

  async #prefetchOne(index: number, signal: AbortSignal): Promise<'warmed' | 'skipped'> {
    const ref = this.#chunks[index];
    if (ref === null || ref === undefined) return 'skipped';
    // Already warm, or a demand read is loading it (and will fill every tier): leave its recency alone.
    if (this.#memory.has(index) || this.#loads.has(index)) return 'skipped';
    if (this.#memory.size < this.#memoryChunks) {
      await this.#load(index, ref, 'prefetch', signal).result;
      return 'warmed';
    }
    // No room in memory: warming the tiers needs no decryption.
    if (this.#fetcher.tiers.length === 0) return 'skipped';
    this.#fetched++;
    this.#metrics.chunks.fetched++;
    this.#metrics.chunks.prefetched++;
    await this.#fetcher.get(ref.id, { signal, priority: 'prefetch' });
    return 'warmed';
  }

  // --- chunks -------------------------------------------------------------------------------

  #noteDemand(index: number): void {
    if (this.#firstRead[index] === 0) {
      this.#firstRead[index] = 1;
      this.#metrics.chunks.touched++;
      this.#onFirstRead?.(index);
    }
    if (this.#traced !== undefined && this.#traced[index] === 0) {
      this.#traced[index] = 1;
      this.#trace.push(index);
    }
  }

  /** The plaintext of stored chunk `index` for a demand read: memory, else one shared load. */
  #demand(index: number, ref: ChunkRef, signal: AbortSignal | undefined): Promise<Buffer> {
    const mm = this.#metrics.tier('memory');
    const t0 = this.#metrics.nowUs();
    const hit = this.#memory.get(index);
    if (hit !== undefined) {
      this.#memory.delete(index); // re-insert: most recently used last
      this.#memory.set(index, hit);
      hit.kind = 'demand';
      mm.hit(hit.data.length, this.#metrics.sinceUs(t0));
      return Promise.resolve(hit.data);
    }
    mm.miss();
    try {
      return this.#load(index, ref, 'demand', signal).result;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Fetch, decrypt and authenticate once per chunk however many readers ask; a demand joiner promotes a prefetch. */
  #load(index: number, ref: ChunkRef, priority: Priority, signal: AbortSignal | undefined): { result: Promise<Buffer> } {
    const joined = this.#loads.run(index, signal, (s) => {
      const load: Load = { priority };
      return { context: load, promise: this.#fetchAndOpen(index, ref, load, s) };
    });
    if (priority === 'demand' && joined.context.priority === 'prefetch') {
      joined.context.priority = 'demand';
      this.#fetcher.promote(ref.id);
    }
    return joined;
  }

  async #fetchAndOpen(index: number, ref: ChunkRef, load: Load, signal: AbortSignal): Promise<Buffer> {
    this.#fetched++;
    this.#metrics.chunks.fetched++;
    if (load.priority === 'prefetch') this.#metrics.chunks.prefetched++;
    const where = `${this.name}: chunk ${index} at offset ${index * this.chunkSize}`;
    let plain: Buffer;
    try {
      const ct = await this.#fetcher.get(ref.id, { signal, priority: load.priority });
      plain = openNamedChunk(ct, ref, this.#salt); // the fetcher checked the name
    } catch (e) {
      if (e instanceof IntegrityError) throw new IntegrityError(`${where}: ${e.message}`, { cause: e });
      throw e;
    }
    this.#metrics.chunks.decrypted++;
    this.#remember(index, plain, load.priority);
    return plain;
  }

  #remember(index: number, data: Buffer, kind: Priority): void {
    if (this.#memoryChunks === 0 || this.#closed) return;
    const had = this.#memory.get(index);
    if (had !== undefined) {
      if (kind === 'demand') had.kind = 'demand';
      return;
    }
    // A prefetch only takes free room: it must never push out what readers are using.
    if (kind === 'prefetch' && this.#memory.size >= this.#memoryChunks) return;
    this.#memory.set(index, { data, kind });
    while (this.#memory.size > this.#memoryChunks) this.#memory.delete(this.#memory.keys().next().value!);
  }
}
