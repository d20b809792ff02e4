/**
 * L1: chunk ciphertext on local disk, bounded in bytes, one file a chunk.
 *
 *   DIR/lock                      pid of the owning process (lock.ts)
 *   DIR/chunks/<2 hex>/<id>       a chunk, exactly as the origin holds it
 *   DIR/chunks/<2 hex>/.<id>.<random>.tmp   a write in progress
 *
 * The index (which ids are here, their sizes, the eviction order) lives in
 * memory in an EvictionPolicy and is rebuilt from the files on open. Only
 * one process may use a directory (the lock), so the index is the truth.
 *
 * Writes go to a temp file beside the final name, then rename(2): a reader
 * sees the whole chunk or nothing. No fsync: after a power loss a renamed
 * file may hold garbage, which the fetcher catches by its name and drops.
 *
 * The capacity bounds the chunk files: a put is admitted (victims chosen),
 * the victims are unlinked, and only then is its file renamed into place,
 * all inside one serial section, so the chunk files on disk never add up to
 * more than the capacity. Temp files of puts in flight come on top (at
 * most one chunk per concurrent put).
 *
 * A cache must never make a read fail: an I/O error on a put just leaves
 * the chunk uncached, and on a get it is a miss (both counted in stats()).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { InterruptedError, StoreError, throwIfAborted, UsageError } from '../errors.js';
import type { OpOptions } from '../store/store.js';
import { isChunkId, parseChunkId, type ChunkId } from '../chunks/id.js';
import { createPolicy, isPolicyName, POLICY_NAMES, type EvictionPolicy, type PolicyName } from './eviction.js';
import { lockDir, type DirLock } from './lock.js';
import type { CacheTier } from './tier.js';

export interface DiskCacheOptions {
  readonly dir: string;
  /** Most bytes of chunk files kept. */
  readonly capacityBytes: number;
  /** @default 'lru2' */
  readonly policy?: PolicyName;
}

export interface DiskCacheStats {
  readonly policy: PolicyName;
  readonly capacityBytes: number;
  readonly entries: number;
  readonly bytes: number;
  /** Chunks evicted to make room (since open, including any evicted by open itself). */
  readonly evictions: number;
  /** Puts given up on an I/O error (ENOSPC, EIO…): the chunk was not cached. */
  readonly failedPuts: number;
  /** Gets that failed reading a file the index listed (answered as misses). */
  readonly failedReads: number;
  /** Evicted or dropped files that could not be removed. */
  readonly failedUnlinks: number;
  /** Puts not kept because the chunk is larger than the whole capacity. */
  readonly tooLarge: number;
}

export const DEFAULT_POLICY: PolicyName = 'lru2';

const CHUNKS_DIR = 'chunks';
const SHARD_RE = /^[0-9a-f]{2}$/;
const TEMP_RE = /^\.[0-9a-f]{64}\.[0-9a-f]+\.tmp$/;

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

export class DiskCache implements CacheTier {
  readonly name = 'disk';
  readonly dir: string;
  readonly #chunks: string;
  readonly #policy: EvictionPolicy;
  readonly #lock: DirLock;
  /** Ids whose put is between its first check and its rename (a second put of the same id is a no-op). */
  readonly #putting = new Map<ChunkId, Promise<void>>();
  /** Shard directories known to exist. */
  readonly #made = new Set<string>();
  /** Tail of the serial section: index changes with their unlinks and renames. */
  #serial: Promise<void> = Promise.resolve();
  #closed = false;
  #evictions = 0;
  #failedPuts = 0;
  #failedReads = 0;
  #failedUnlinks = 0;
  #tooLarge = 0;

  private constructor(dir: string, policy: EvictionPolicy, lock: DirLock) {
    this.dir = dir;
    this.#chunks = path.join(dir, CHUNKS_DIR);
    this.#policy = policy;
    this.#lock = lock;
  }

  /**
   * Opens (creating if need be) the cache in `dir`: takes its lock, removes
   * temp files left by a crash, indexes the chunk files present (oldest
   * mtime first, then by name) and evicts down to `capacityBytes`.
   */
  static async open(options: DiskCacheOptions): Promise<DiskCache> {
    const { capacityBytes } = options;
    if (!Number.isSafeInteger(capacityBytes) || capacityBytes < 0) {
      throw new UsageError(`disk cache capacity must be a whole number of bytes, got ${capacityBytes}`);
    }
    const policyName = options.policy ?? DEFAULT_POLICY;
    if (!isPolicyName(policyName)) throw new UsageError(`unknown cache policy ${JSON.stringify(policyName)}: want one of ${POLICY_NAMES.join(', ')}`);
    const dir = path.resolve(options.dir);
    try {
      await mkdir(path.join(dir, CHUNKS_DIR), { recursive: true });
    } catch (e) {
      throw new StoreError(`cannot create cache directory ${dir}: ${(e as Error).message}`, { cause: e });
    }
    const lock = await lockDir(dir);
    const cache = new DiskCache(dir, createPolicy(policyName, capacityBytes), lock);
    try {
      await cache.#rebuild();
    } catch (e) {
      await lock.release();
      throw e;
    }
    return cache;
  }

  stats(): DiskCacheStats {
    return {
      policy: this.#policy.name,
      capacityBytes: this.#policy.capacity,
      entries: this.#policy.size,
      bytes: this.#policy.bytes,
      evictions: this.#evictions,
      failedPuts: this.#failedPuts,
      failedReads: this.#failedReads,
      failedUnlinks: this.#failedUnlinks,
      tooLarge: this.#tooLarge,
    };
  }

  async get(id: ChunkId, options?: OpOptions): Promise<Buffer | undefined> {
    throwIfAborted(options?.signal);
    checkId(id);
    if (this.#closed || !this.#policy.has(id)) return undefined;
    this.#policy.hit(id);
    try {
      return await readFile(this.#path(id), options?.signal ? { signal: options.signal } : {});
    } catch (e) {
      if (options?.signal?.aborted) throw new InterruptedError('interrupted', { cause: e });
      if (errCode(e) === 'ENOENT') {
        // Usually evicted or dropped while we read (or not yet renamed in). If it
        // is still listed once the serial section gets to it, it was deleted
        // behind our back: forget it, or it would be a miss forever.
        void this.#inSerial(async () => {
          if (!this.#closed && this.#policy.has(id) && !(await exists(this.#path(id)))) this.#policy.remove(id);
        }).catch(() => {});
      } else {
        // Unreadable (EIO…): forget it, so the next put writes a fresh copy.
        this.#failedReads++;
        this.drop(id).catch(() => {});
      }
      return undefined;
    }
  }

  async put(id: ChunkId, data: Buffer, options?: OpOptions): Promise<void> {
    throwIfAborted(options?.signal);
    checkId(id);
    if (this.#closed || this.#policy.has(id)) return;
    // Already on its way in: wait for it (but another caller's abort is not this caller's failure).
    const pending = this.#putting.get(id);
    if (pending) return pending.catch(() => {});
    if (data.length > this.#policy.capacity) {
      this.#tooLarge++;
      return;
    }
    const done = this.#put(id, data, options?.signal).finally(() => this.#putting.delete(id));
    this.#putting.set(id, done);
    return done;
  }

  async #put(id: ChunkId, data: Buffer, signal: AbortSignal | undefined): Promise<void> {
    const shard = path.join(this.#chunks, id.slice(0, 2));
    const tmp = path.join(shard, `.${id}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      await this.#writeTemp(shard, tmp, data);
    } catch {
      this.#failedPuts++;
      await rm(tmp, { force: true }).catch(() => {});
      return;
    }
    if (signal?.aborted) {
      await rm(tmp, { force: true }).catch(() => {});
      throw new InterruptedError('interrupted');
    }
    await this.#inSerial(async () => {
      if (this.#policy.has(id)) {
        await rm(tmp, { force: true }).catch(() => {});
        return;
      }
      const victims = this.#policy.admit(id, data.length);
      // The size was checked against the capacity, so `id` itself is never a victim.
      for (const v of victims) await this.#unlink(v);
      this.#evictions += victims.length;
      try {
        await rename(tmp, this.#path(id));
      } catch {
        this.#policy.remove(id);
        this.#failedPuts++;
        await rm(tmp, { force: true }).catch(() => {});
      }
    });
  }

  async #writeTemp(shard: string, tmp: string, data: Buffer): Promise<void> {
    if (!this.#made.has(shard)) {
      await mkdir(shard, { recursive: true });
      this.#made.add(shard);
    }
    try {
      await writeFile(tmp, data, { flag: 'wx', mode: 0o644 });
    } catch (e) {
      if (errCode(e) !== 'ENOENT') throw e;
      // The shard directory went away (removed by hand): make it again, once.
      await mkdir(shard, { recursive: true });
      await writeFile(tmp, data, { flag: 'wx', mode: 0o644 });
    }
  }

  async drop(id: ChunkId): Promise<void> {
    checkId(id);
    if (this.#closed) return;
    await this.#inSerial(async () => {
      this.#policy.remove(id);
      await this.#unlink(id);
    });
  }

  /** Lets puts in flight finish, then releases the lock. Later gets miss and puts do nothing. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([...this.#putting.values()]);
    await this.#inSerial(async () => {});
    await this.#lock.release();
  }

  #path(id: string): string {
    return path.join(this.#chunks, id.slice(0, 2), id);
  }

  /** Runs `fn` after every earlier serial section; a failure does not stop later ones. */
  #inSerial(fn: () => Promise<void>): Promise<void> {
    const run = this.#serial.then(fn);
    this.#serial = run.catch(() => {});
    return run;
  }

  /** Removes a chunk file. Takes the policy's keys, which are always ids this cache admitted. */
  async #unlink(id: string): Promise<void> {
    try {
      await unlink(this.#path(id));
    } catch (e) {
      if (errCode(e) !== 'ENOENT') this.#failedUnlinks++;
    }
  }

  /** Indexes what is on disk; see open(). */
  async #rebuild(): Promise<void> {
    const found: { id: ChunkId; size: number; mtimeMs: number }[] = [];
    for (const shard of (await this.#list(this.#chunks)).sort()) {
      if (!SHARD_RE.test(shard)) continue; // not ours: leave it alone
      const shardDir = path.join(this.#chunks, shard);
      const names = await this.#list(shardDir);
      const infos = await Promise.all(
        names.map(async (name) => {
          const file = path.join(shardDir, name);
          if (TEMP_RE.test(name)) {
            // A write cut short by a crash. Failing to remove it is no reason not to open.
            await rm(file, { force: true }).catch(() => {});
            return undefined;
          }
          if (!isChunkId(name) || !name.startsWith(shard)) return undefined;
          const st = await stat(file).catch(() => undefined);
          return st?.isFile() ? { id: name, size: st.size, mtimeMs: st.mtimeMs } : undefined;
        }),
      );
      for (const info of infos) if (info) found.push(info);
      this.#made.add(shardDir);
    }
    // Oldest first, so the policy ranks them by age and a smaller capacity evicts the oldest.
    found.sort((a, b) => a.mtimeMs - b.mtimeMs || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    for (const f of found) {
      const victims = this.#policy.admit(f.id, f.size, 'restored');
      for (const v of victims) await this.#unlink(v);
      this.#evictions += victims.length;
    }
  }

  async #list(dir: string): Promise<string[]> {
    try {
      return await readdir(dir);
    } catch (e) {
      if (errCode(e) === 'ENOENT' || errCode(e) === 'ENOTDIR') return [];
      throw new StoreError(`cannot list cache directory ${dir}: ${(e as Error).message}`, { cause: e });
    }
  }
}

/** Ids become file names: refuse anything that is not one (a cast string could name a path). */
function checkId(id: ChunkId): void {
  if (!isChunkId(id)) parseChunkId(id, 'disk cache chunk id');
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (e) {
    return errCode(e) !== 'ENOENT';
  }
}
