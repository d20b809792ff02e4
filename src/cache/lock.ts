/**
 * One process per cache directory: a lock file `DIR/lock` holding the
 * owner's pid, created with O_EXCL. Two processes sharing a directory
 * would each keep their own index and evict each other's files, so the
 * bytes on disk would no longer match either's count.
 *
 * A lock whose pid is no longer running (a crash, a kill -9) is stale and
 * taken over. Caveats, both rare: two processes taking over the same stale
 * lock at the same instant can both succeed (the re-read before removal
 * narrows it); and a pid reused by an unrelated process looks alive, so
 * the error says which file to remove.
 */
import { open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { StoreError, UsageError } from '../errors.js';

export const LOCK_FILE = 'lock';

export interface DirLock {
  readonly file: string;
  /** Removes the lock file if it still holds this process's pid. */
  release(): Promise<void>;
}

/** What the lock file says: a pid, 'missing', or 'unreadable' (empty, garbage, or being written). */
type Holder = { readonly kind: 'pid'; readonly pid: number } | { readonly kind: 'missing' } | { readonly kind: 'unreadable' };

async function readHolder(file: string): Promise<Holder> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    throw new StoreError(`cannot read cache lock ${file}: ${(e as Error).message}`, { cause: e });
  }
  const m = /^(\d+)\n?$/.exec(text);
  const pid = m ? Number(m[1]) : NaN;
  return Number.isSafeInteger(pid) && pid > 0 ? { kind: 'pid', pid } : { kind: 'unreadable' };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0); // signal 0: only checks that the process exists
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** How long an unreadable lock is given to get its pid written before it counts as stale. */
const UNREADABLE_GRACE_MS = 200;

/** Another live process holds the cache directory (a caller may go on without the cache). */
export class CacheInUseError extends UsageError {}

/**
 * Takes `dir`'s lock, or throws UsageError naming the directory and the pid
 * of the live process holding it.
 */
export async function lockDir(dir: string): Promise<DirLock> {
  const file = path.join(dir, LOCK_FILE);
  const mine = `${process.pid}\n`;
  let unreadableSince: number | undefined;
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      const fh = await open(file, 'wx', 0o644);
      try {
        await fh.writeFile(mine);
      } finally {
        await fh.close();
      }
      return {
        file,
        release: async () => {
          const h = await readHolder(file).catch(() => undefined);
          if (h?.kind === 'pid' && h.pid === process.pid) await rm(file, { force: true });
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new StoreError(`cannot create cache lock ${file}: ${(e as Error).message}`, { cause: e });
      }
    }
    const holder = await readHolder(file);
    if (holder.kind === 'missing') continue; // released meanwhile: try again
    if (holder.kind === 'pid' && alive(holder.pid)) {
      const who = holder.pid === process.pid ? `this process (${holder.pid})` : `process ${holder.pid}`;
      throw new CacheInUseError(`cache directory ${dir} is in use by ${who}; stop it or use another directory (if no such process uses it, remove ${file})`);
    }
    if (holder.kind === 'unreadable') {
      unreadableSince ??= Date.now();
      if (Date.now() - unreadableSince < UNREADABLE_GRACE_MS) {
        await sleep(20);
        continue;
      }
    }
    // Stale. Remove it only if it still says the same, so a lock just taken by someone else survives.
    const again = await readHolder(file);
    if (JSON.stringify(again) === JSON.stringify(holder)) await rm(file, { force: true });
    unreadableSince = undefined;
  }
  throw new StoreError(`cannot take cache lock ${file}: it keeps changing hands`);
}
