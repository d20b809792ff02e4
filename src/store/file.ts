/**
 * `file://DIR`: the embedded store. Layout in layout.ts; the Store operations
 * are object-store.ts's, on the FileBackend here.
 *
 * Every object is written the same way: a temp file `.<name>.<random>.tmp`
 * beside the final name (same directory, so same filesystem), written,
 * fsynced, then renamed over the final name. rename(2) is atomic, so a reader
 * sees the old object, no object, or the whole new one — never a part, even
 * if the writer is killed (a killed writer leaves only a temp file, which
 * nothing reads or lists). Many writers at once lose nothing: temp names are
 * unique, and two writers of one chunk write the same bytes (names are
 * content hashes), so whichever rename lands last is as good as the other.
 *
 * Durability: the file's data is fsynced before its rename (else a crash
 * could leave a final name over an empty file). The rename itself is made
 * durable by fsyncing its directory: at once for manifests and tags, and for
 * chunks in batches, in sync(), which publish() calls before the manifest is
 * written — so a manifest never outlives, after a crash, a chunk it names.
 */
import { randomBytes } from 'node:crypto';
import type { Dirent } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { InterruptedError, StoreError, UsageError, throwIfAborted } from '../errors.js';
import { CHUNKS_DIR, MANIFESTS_DIR, TAGS_DIR } from './layout.js';
import { type KeyPage, type ObjectBackend, ObjectStore, type PutObjectOptions } from './object-store.js';
import { type CostModel, type OpOptions, RequestCounter, type RequestCounts } from './store.js';

const TEMP_RE = /^\..+\.[0-9a-f]+\.tmp$/;
const SHARD_RE = /^[0-9a-f]{2}$/;

export interface RemoveStaleTempsOptions extends OpOptions {
  /** Temp files last modified longer ago than this are a killed writer's leftovers. @default 3_600_000 (an hour) */
  readonly olderThanMs?: number;
  /** The clock, in ms since the epoch. @default Date.now() */
  readonly now?: number;
}

export class FileStore extends ObjectStore {
  readonly costModel: CostModel = { kind: 'local' };
  readonly #files: FileBackend;

  private constructor(files: FileBackend) {
    super(files);
    this.#files = files;
  }

  /**
   * Opens (does not create) a file store at `dir`; directories are made on
   * the first write, so reading a store that doesn't exist finds nothing in
   * it. A `dir` that exists but is not a directory is a UsageError.
   */
  static async open(dir: string): Promise<FileStore> {
    if (dir === '') throw new UsageError('file store: empty directory path');
    const root = path.resolve(dir);
    try {
      const st = await stat(root);
      if (!st.isDirectory()) throw new UsageError(`file store ${root}: not a directory`);
    } catch (e) {
      if (e instanceof UsageError) throw e;
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fsError(root, e, 'open', '.');
    }
    return new FileStore(new FileBackend(root));
  }

  /** The store's directory. */
  get dir(): string {
    return this.#files.root;
  }

  requestCounts(): RequestCounts {
    return this.#files.counts.snapshot();
  }

  async close(): Promise<void> {}

  /**
   * Deletes temp files that a killed writer left behind (older than
   * `olderThanMs`, so a live writer's file is never taken). Returns how many.
   * Nothing depends on it: leftovers are never read or listed.
   */
  async removeStaleTemps(options: RemoveStaleTempsOptions = {}): Promise<number> {
    return this.#files.removeStaleTemps(options);
  }
}

/** Objects as files under the store's directory, each written atomically (see the top of this file). */
class FileBackend implements ObjectBackend {
  readonly url: string;
  readonly counts = new RequestCounter();
  /** Directories known to exist (saves a mkdir per put). */
  readonly #made = new Set<string>();
  /** Directories with renames (or new entries) not yet fsynced. */
  readonly #dirty = new Set<string>();

  constructor(readonly root: string) {
    this.url = pathToFileURL(root).href;
  }

  async getObject(key: string, signal: AbortSignal | undefined): Promise<Buffer | undefined> {
    throwIfAborted(signal);
    this.counts.add('get');
    try {
      return await readFile(path.join(this.root, key), signal ? { signal } : {});
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw fsError(this.root, e, 'read', key, signal);
    }
  }

  async headObject(key: string, signal: AbortSignal | undefined): Promise<boolean> {
    throwIfAborted(signal);
    this.counts.add('head');
    try {
      return (await stat(path.join(this.root, key))).isFile();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return false;
      throw fsError(this.root, e, 'stat', key);
    }
  }

  /** Temp file, write, fsync, rename over `key`. Marks the directory for sync(). */
  async putObject(key: string, data: Uint8Array, options: PutObjectOptions): Promise<void> {
    const { signal } = options;
    if (options.keepExisting === true && (await this.headObject(key, signal))) return;
    throwIfAborted(signal);
    const finalPath = path.join(this.root, key);
    const dir = path.dirname(finalPath);
    const tmp = path.join(dir, `.${path.basename(finalPath)}.${randomBytes(8).toString('hex')}.tmp`);
    this.counts.add('put');
    await this.#ensureDir(dir, key);
    try {
      const fh = await open(tmp, 'wx', 0o644).catch(async (e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') throw e;
        // The directory went away under us (removed by hand, or a cleanup): make it again, once.
        this.#made.delete(dir);
        await this.#ensureDir(dir, key);
        return open(tmp, 'wx', 0o644);
      });
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      throwIfAborted(signal);
      await rename(tmp, finalPath);
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => {});
      if (e instanceof InterruptedError) throw e;
      throw fsError(this.root, e, 'write', key);
    }
    this.#dirty.add(dir);
  }

  async sync(signal: AbortSignal | undefined): Promise<void> {
    throwIfAborted(signal);
    const dirs = [...this.#dirty];
    for (const d of dirs) this.#dirty.delete(d);
    // Deepest first, so a new shard directory's own entries are durable before its parent names it.
    dirs.sort((a, b) => b.length - a.length);
    for (let i = 0; i < dirs.length; i++) {
      const d = dirs[i]!;
      try {
        const fh = await open(d, 'r');
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
      } catch (e) {
        for (const rest of dirs.slice(i)) this.#dirty.add(rest);
        throw fsError(this.root, e, 'fsync directory', path.relative(this.root, d) || '.');
      }
    }
  }

  /**
   * One page per directory of files (one readdir each), walked depth first
   * in name order: `chunks/` gives a page per shard, `tags/` one page.
   * Directories whose keys all sort before `startAfter` are not read.
   */
  async *listObjects(prefix: string, startAfter: string | undefined, signal: AbortSignal | undefined): AsyncIterable<KeyPage> {
    yield* this.#listDir(prefix.replace(/\/$/, ''), startAfter, true, signal);
  }

  /** `last`: no page comes after this directory's. */
  async *#listDir(dir: string, startAfter: string | undefined, last: boolean, signal: AbortSignal | undefined): AsyncIterable<KeyPage> {
    const entries = await this.#readdir(dir, signal);
    const files = entries
      .filter((e) => !e.isDirectory())
      .map((e) => `${dir}/${e.name}`)
      .filter((key) => startAfter === undefined || key > startAfter)
      .sort();
    const subdirs = entries
      .filter((e) => e.isDirectory())
      .map((e) => `${dir}/${e.name}/`)
      .filter((sub) => startAfter === undefined || sub > startAfter || startAfter.startsWith(sub))
      .sort();
    if (files.length > 0 || subdirs.length === 0) yield { keys: files, more: !last || subdirs.length > 0 };
    for (const [i, sub] of subdirs.entries()) yield* this.#listDir(sub.slice(0, -1), startAfter, last && i === subdirs.length - 1, signal);
  }

  async removeStaleTemps(options: RemoveStaleTempsOptions): Promise<number> {
    const cutoff = (options.now ?? Date.now()) - (options.olderThanMs ?? 3_600_000);
    const shards = (await this.#readdir(CHUNKS_DIR, options.signal)).map((e) => e.name).filter((s) => SHARD_RE.test(s));
    const dirs = [...shards.map((s) => `${CHUNKS_DIR}/${s}`), MANIFESTS_DIR, TAGS_DIR];
    let removed = 0;
    for (const dir of dirs) {
      for (const { name } of await this.#readdir(dir, options.signal)) {
        if (!TEMP_RE.test(name)) continue;
        const p = path.join(this.root, dir, name);
        try {
          const st = await stat(p);
          if (!st.isFile() || st.mtimeMs >= cutoff) continue;
          this.counts.add('delete');
          await rm(p, { force: true });
          removed++;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fsError(this.root, e, 'remove', `${dir}/${name}`);
        }
      }
    }
    return removed;
  }

  /** Entries of a directory under the root; [] when it does not exist yet. */
  async #readdir(rel: string, signal: AbortSignal | undefined): Promise<Dirent[]> {
    throwIfAborted(signal);
    this.counts.add('list');
    try {
      return await readdir(path.join(this.root, rel), { withFileTypes: true });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      throw fsError(this.root, e, 'list', rel);
    }
  }

  async #ensureDir(dir: string, key: string): Promise<void> {
    if (this.#made.has(dir)) return;
    let first: string | undefined;
    try {
      first = await mkdir(dir, { recursive: true });
    } catch (e) {
      throw fsError(this.root, e, 'create the directory for', key);
    }
    if (first !== undefined) {
      // New directories must be named durably by their parents too.
      for (let d = dir; d.length >= first.length; d = path.dirname(d)) this.#dirty.add(path.dirname(d));
    }
    this.#made.add(dir);
  }
}

/** A filesystem failure as one line naming the store and the object. */
function fsError(root: string, e: unknown, action: string, key: string, signal?: AbortSignal): Error {
  if (signal?.aborted || (e as Error).name === 'AbortError') return new InterruptedError('interrupted', { cause: e });
  const err = e as NodeJS.ErrnoException;
  const what = err.code !== undefined ? `${err.code}: ${err.message.replace(/^[A-Z]+: /, '')}` : String(err.message ?? e);
  return new StoreError(`file store ${root}: cannot ${action} ${key}: ${what.split('\n')[0]}`, { cause: e });
}
