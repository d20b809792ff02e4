/**
 * A copy-on-write overlay: a writable BlockDevice over a read-only one, as
 * the paper's workers give each microVM a private writable disk over the
 * shared image. The base is only ever read.
 *
 * Written blocks live in a sparse scratch file in `dir` (the same size as
 * the base, so a block's offset is its offset in the device) and an
 * in-memory bitmap at 4 KiB granularity says which blocks come from it. A
 * write that covers part of a block first fills the rest of that block from
 * the current contents (base or scratch), so a set bit always means "the
 * whole block is in the scratch file". The bit is set only after the
 * scratch write completes.
 *
 * Overlapping operations are serialised by a range lock on block numbers
 * granted in call order (reads share, writes are exclusive), so concurrent
 * callers see the same result as if the calls had run one at a time in the
 * order they were made; operations on disjoint blocks run in parallel.
 *
 * The scratch file is unlinked at `close`; the bitmap is not persisted, so
 * the overlay's contents live exactly as long as the object. `close` does not
 * close the base: whoever opened it owns it.
 */
import { randomBytes } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { StoreError, throwIfAborted } from '../errors.js';
import { checkRange, pushExtent, readFully, writeFully } from './device.js';
import type { BlockDevice, Extent, WritableBlockDevice } from './device.js';
import { RangeLock } from './range-lock.js';

/** Granularity of the dirty bitmap: a page, and ext4's usual block size. */
export const OVERLAY_BLOCK_SIZE = 4096;

export interface CowOverlayOptions {
  /** Directory for the scratch file (it should be on a filesystem with sparse files). */
  readonly dir: string;
}

export interface CowOverlay extends WritableBlockDevice {
  /** The scratch file (exists until `close`). */
  readonly scratchPath: string;
  /** Bytes of the device currently served from the scratch file. */
  readonly dirtyBytes: number;
  /** Always present on the overlay (see Overlay.extents). */
  extents(offset: number, length: number, signal?: AbortSignal): Promise<Extent[]>;
}

export async function cowOverlay(base: BlockDevice, options: CowOverlayOptions): Promise<CowOverlay> {
  const scratchPath = path.join(options.dir, `chunkyard-cow-${randomBytes(8).toString('hex')}.scratch`);
  let fh: FileHandle;
  try {
    fh = await open(scratchPath, 'wx+', 0o600);
  } catch (e) {
    throw new StoreError(`${scratchPath}: cannot create the copy-on-write scratch file: ${(e as Error).message}`, { cause: e });
  }
  try {
    await fh.truncate(base.size); // sparse: costs no space until written
  } catch (e) {
    await fh.close();
    await rm(scratchPath, { force: true });
    throw new StoreError(`${scratchPath}: cannot size the scratch file to ${base.size} bytes: ${(e as Error).message}`, { cause: e });
  }
  return new Overlay(base, fh, scratchPath);
}

class Overlay implements CowOverlay {
  readonly size: number;
  readonly readOnly = false;
  readonly #base: BlockDevice;
  readonly #fh: FileHandle;
  readonly scratchPath: string;
  readonly #dirty: Uint8Array;
  #dirtyBlocks = 0;
  readonly #lock = new RangeLock();
  readonly #active = new Set<Promise<unknown>>();
  #closed: Promise<void> | undefined;

  constructor(base: BlockDevice, fh: FileHandle, scratchPath: string) {
    this.size = base.size;
    this.#base = base;
    this.#fh = fh;
    this.scratchPath = scratchPath;
    this.#dirty = new Uint8Array(Math.ceil(Math.ceil(base.size / OVERLAY_BLOCK_SIZE) / 8));
  }

  get dirtyBytes(): number {
    return this.#dirtyBlocks * OVERLAY_BLOCK_SIZE;
  }

  read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
    return this.#track(() => {
      checkRange(this.size, offset, length, 'the copy-on-write overlay');
      if (length === 0) return Promise.resolve(Buffer.alloc(0));
      return this.#locked(offset, length, 'shared', signal, () => this.#readCurrent(offset, length, signal));
    });
  }

  write(offset: number, data: Buffer, signal?: AbortSignal): Promise<void> {
    return this.#track(() => {
      checkRange(this.size, offset, data.length, 'the copy-on-write overlay');
      if (data.length === 0) return Promise.resolve();
      return this.#locked(offset, data.length, 'exclusive', signal, () => this.#writeBlocks(offset, data, signal));
    });
  }

  /**
   * Written blocks are data; the rest is whatever the base says (data
   * throughout when the base cannot tell). Taken under a shared lock, so
   * it reflects every write that completed before the call.
   */
  extents(offset: number, length: number, signal?: AbortSignal): Promise<Extent[]> {
    return this.#track(() => {
      checkRange(this.size, offset, length, 'the copy-on-write overlay');
      if (length === 0) return Promise.resolve([]);
      return this.#locked(offset, length, 'shared', signal, async () => {
        const out: Extent[] = [];
        for (const r of this.#runs(offset, length)) {
          if (r.dirty || this.#base.extents === undefined) {
            pushExtent(out, r.to - r.from, false);
            continue;
          }
          const base = await this.#base.extents(r.from, r.to - r.from, signal);
          if (base.reduce((n, e) => n + e.length, 0) !== r.to - r.from) throw new StoreError(`base device mapped the wrong number of bytes for ${r.to - r.from} bytes at ${r.from}`);
          for (const e of base) pushExtent(out, e.length, e.zero);
        }
        return out;
      });
    });
  }

  flush(): Promise<void> {
    return this.#track(() => this.#fh.datasync());
  }

  close(): Promise<void> {
    this.#closed ??= (async () => {
      await Promise.allSettled([...this.#active]);
      try {
        await this.#fh.close();
      } finally {
        await rm(this.scratchPath, { force: true });
      }
    })();
    return this.#closed;
  }

  /** Runs `op` unless closed, and remembers it until it settles so `close` can wait for it. */
  #track<T>(op: () => Promise<T>): Promise<T> {
    if (this.#closed !== undefined) return Promise.reject(new Error(`${this.scratchPath}: the copy-on-write overlay is closed`));
    let p: Promise<T>;
    try {
      p = op();
    } catch (e) {
      return Promise.reject(e);
    }
    this.#active.add(p);
    const forget = (): void => {
      this.#active.delete(p);
    };
    p.then(forget, forget);
    return p;
  }

  /** Runs `fn` holding the lock on every block that `[offset, offset + length)` touches. */
  async #locked<T>(offset: number, length: number, mode: 'shared' | 'exclusive', signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    const first = Math.floor(offset / OVERLAY_BLOCK_SIZE);
    const end = Math.ceil((offset + length) / OVERLAY_BLOCK_SIZE);
    // Registered synchronously by the caller's call (no await before this line), so lock order = call order.
    const release = await this.#lock.acquire(first, end, mode, signal);
    try {
      throwIfAborted(signal);
      return await fn();
    } finally {
      release();
    }
  }

  #isDirty(block: number): boolean {
    return ((this.#dirty[block >>> 3]! >>> (block & 7)) & 1) === 1;
  }

  #markDirty(block: number): void {
    const i = block >>> 3;
    const bit = 1 << (block & 7);
    const byte = this.#dirty[i]!;
    if ((byte & bit) === 0) {
      this.#dirty[i] = byte | bit;
      this.#dirtyBlocks++;
    }
  }

  /** The current bytes of a range (caller holds its lock): runs of dirty blocks from scratch, the rest from the base. */
  async #readCurrent(offset: number, length: number, signal: AbortSignal | undefined): Promise<Buffer> {
    const runs = this.#runs(offset, length);
    if (runs.length === 1 && !runs[0]!.dirty) return this.#base.read(offset, length, signal); // the common case: untouched
    const out = Buffer.allocUnsafe(length);
    await Promise.all(
      runs.map(async (r) => {
        if (r.dirty) {
          await readFully(this.#fh, out, r.from - offset, r.to - r.from, r.from);
        } else {
          const b = await this.#base.read(r.from, r.to - r.from, signal);
          if (b.length !== r.to - r.from) throw new StoreError(`base device returned ${b.length} bytes for a ${r.to - r.from}-byte read at ${r.from}`);
          b.copy(out, r.from - offset);
        }
      }),
    );
    return out;
  }

  /** `[offset, offset + length)` split into maximal runs of dirty and clean blocks. */
  #runs(offset: number, length: number): Array<{ from: number; to: number; dirty: boolean }> {
    const end = offset + length;
    const runs: Array<{ from: number; to: number; dirty: boolean }> = [];
    let pos = offset;
    while (pos < end) {
      let block = Math.floor(pos / OVERLAY_BLOCK_SIZE);
      const dirty = this.#isDirty(block);
      while ((block + 1) * OVERLAY_BLOCK_SIZE < end && this.#isDirty(block + 1) === dirty) block++;
      const to = Math.min(end, (block + 1) * OVERLAY_BLOCK_SIZE);
      runs.push({ from: pos, to, dirty });
      pos = to;
    }
    return runs;
  }

  /** Writes whole blocks to scratch (filling partial edges from the current contents), then marks them dirty. */
  async #writeBlocks(offset: number, data: Buffer, signal: AbortSignal | undefined): Promise<void> {
    const end = offset + data.length;
    const alignedStart = Math.floor(offset / OVERLAY_BLOCK_SIZE) * OVERLAY_BLOCK_SIZE;
    const alignedEnd = Math.min(this.size, Math.ceil(end / OVERLAY_BLOCK_SIZE) * OVERLAY_BLOCK_SIZE);
    let buf = data;
    if (alignedStart !== offset || alignedEnd !== end) {
      buf = Buffer.allocUnsafe(alignedEnd - alignedStart);
      const [head, tail] = await Promise.all([
        offset > alignedStart ? this.#readCurrent(alignedStart, offset - alignedStart, signal) : undefined,
        alignedEnd > end ? this.#readCurrent(end, alignedEnd - end, signal) : undefined,
      ]);
      head?.copy(buf, 0);
      data.copy(buf, offset - alignedStart);
      tail?.copy(buf, end - alignedStart);
    }
    throwIfAborted(signal);
    await writeFully(this.#fh, buf, alignedStart);
    for (let b = alignedStart / OVERLAY_BLOCK_SIZE; b * OVERLAY_BLOCK_SIZE < alignedEnd; b++) this.#markDirty(b);
  }
}
