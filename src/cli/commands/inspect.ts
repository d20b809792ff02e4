/**
 * `chunkyard ls | cat | stat IMAGE PATH`: look inside an ext4 image through
 * the project's own reader, reading only the blocks that hold what is asked.
 */
import { Command } from 'commander';
import { pipeline } from 'node:stream/promises';
import { InputError, InterruptedError, NotFoundError } from '../../errors.js';
import { openFileByteSource } from '../../ext4/byte-source.js';
import { Ext4Reader, type Ext4Kind, type Ext4Stat, type Ext4Time } from '../../ext4/reader.js';
import { byteStringToDisplay, utf8ToByteString, type ByteString } from '../../layers/bytes.js';
import type { CliIO } from '../io.js';
import { CacheInUseError } from '../../cache/lock.js';
import { openPublished } from '../../serve/published.js';
import { addCacheOptions, printMetrics, readPathFrom, writeStatsJson, type CacheFlags } from '../cache-options.js';
import { addKeyOption, addStoreOptions, keysFrom, storeFrom, type KeyFlags, type StoreFlags } from '../store-options.js';

/**
 * Opens what the user named as an image. Today: a local ext4 image file.
 * (The place to add `REF --store URL`: a manifest's chunk fetcher is a ByteSource too.)
 */
export async function openImageForInspect(
  image: string,
  opts: { readonly signal?: AbortSignal; readonly io?: CliIO; readonly flags?: StoreFlags & KeyFlags & InspectCacheFlags } = {},
): Promise<Ext4Reader> {
  if (opts.flags?.store !== undefined && opts.io) return openPublishedImage(image, opts.io, opts.flags);
  let src;
  try {
    src = await openFileByteSource(image);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new NotFoundError(`${image}: no such file`, { cause: e });
    if (code === 'EISDIR') throw new InputError(`${image}: is a directory, not an ext4 image`, { cause: e });
    throw e;
  }
  try {
    return await Ext4Reader.open(src, opts.signal ? { signal: opts.signal } : {});
  } catch (e) {
    await src.close();
    throw e;
  }
}

/**
 * REF --store URL: a published image, read through the read path's tiers
 * (only the chunks the command touches are fetched). At close: metrics to
 * stderr with --stats, as JSON with --stats-json.
 */
async function openPublishedImage(ref: string, io: CliIO, flags: StoreFlags & KeyFlags & InspectCacheFlags): Promise<Ext4Reader> {
  const readPath = readPathFrom(flags, io);
  const keys = await keysFrom(flags, io);
  const store = await storeFrom(flags, io);
  const open = (config: typeof readPath) => openPublished({ ...config, store, ref, keys, signal: io.signal });
  let image;
  try {
    try {
      image = await open(readPath);
    } catch (e) {
      // The default cache may belong to a running `serve`: a look inside should still work.
      if (!(e instanceof CacheInUseError) || flags.cacheDir !== undefined) throw e;
      io.stderr.write(`chunkyard: note: ${e.message.split(';')[0]}; reading without the disk cache\n`);
      const { diskCache: _inUse, ...withoutDisk } = readPath;
      image = await open(withoutDisk);
    }
  } catch (e) {
    await store.close();
    throw e;
  }
  const src = image.view;
  const closing = {
    size: src.size,
    name: src.name,
    read: src.read.bind(src),
    close: async () => {
      await image.close();
      await store.close();
      const snap = image.snapshot();
      if (flags.stats === true) printMetrics(io, snap);
      if (flags.statsJson !== undefined) await writeStatsJson(flags.statsJson, snap);
    },
  };
  try {
    return await Ext4Reader.open(closing, { signal: io.signal });
  } catch (e) {
    await image.close();
    await store.close();
    throw e;
  }
}

interface InspectCacheFlags extends CacheFlags {
  stats?: boolean;
}

// --- ls -------------------------------------------------------------------------------

interface LsFlags extends StoreFlags, KeyFlags {
  long?: boolean;
  recursive?: boolean;
  json?: boolean;
}

export function lsCommand(io: CliIO): Command {
  return inspectCommand('ls', io)
    .description('list a directory (or show a file) inside an ext4 image')
    .argument('<image>', 'ext4 image file, or REF (digest or tag) with --store')
    .argument('[path]', 'path inside the image', '/')
    .option('-l, --long', 'long format: mode, links, uid, gid, size, mtime, name (symlinks not followed)')
    .option('-R, --recursive', 'list subdirectories recursively')
    .option('--json', 'print a JSON array of {path, type, mode, uid, gid, size, nlink, mtime, target?, rdev?}')
    .action(async (image: string, path: string, flags: LsFlags) => {
      const reader = await openImageForInspect(image, { signal: io.signal, io, flags });
      try {
        await runLs(io, reader, utf8ToByteString(path), flags);
      } finally {
        await reader.close();
      }
    });
}

interface Listed {
  readonly path: ByteString;
  readonly name: ByteString;
  readonly stat: Ext4Stat;
  readonly target?: ByteString;
}

async function runLs(io: CliIO, reader: Ext4Reader, path: ByteString, flags: LsFlags): Promise<void> {
  const { signal } = io;
  // Like ls(1): a symlink named on the command line is shown itself in long form, followed otherwise.
  const follow = flags.long !== true && flags.json !== true;
  const ino = await reader.lookup(path, { followFinalSymlink: follow, signal });
  const top = await reader.stat(ino, signal);
  const out = new Output(io);
  const listed = async (p: ByteString, name: ByteString, st: Ext4Stat): Promise<Listed> =>
    st.kind === 'symlink' ? { path: p, name, stat: st, target: await reader.readlink(st.ino, signal) } : { path: p, name, stat: st };
  const children = async (dir: ByteString, dirIno: number): Promise<Listed[]> => {
    const entries = await reader.readdir(dirIno, signal);
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const rows: Listed[] = [];
    for (const e of entries) rows.push(await listed(joinPath(dir, e.name), e.name, await reader.stat(e.ino, signal)));
    return rows;
  };
  const start = cleanPath(path);

  if (flags.json === true) {
    await out.write('[');
    let first = true;
    const emit = async (l: Listed): Promise<void> => {
      await out.write(`${first ? '\n' : ',\n'}${JSON.stringify(lsJson(l))}`);
      first = false;
    };
    if (top.kind !== 'dir') {
      await emit(await listed(start, baseName(start), top));
    } else if (flags.recursive === true) {
      let skipStart = true;
      for await (const w of reader.walk({ path, signal })) {
        if (skipStart) {
          skipStart = false; // the start itself: ls lists what is inside
          continue;
        }
        await emit(await listed(w.path, baseName(w.path), w.stat));
      }
    } else {
      for (const row of await children(start, ino)) await emit(row);
    }
    await out.write(first ? ']\n' : '\n]\n');
    return;
  }

  if (top.kind !== 'dir') {
    await out.write(formatRows([await listed(start, start, top)], flags.long === true));
    return;
  }
  if (flags.recursive !== true) {
    await out.write(formatRows(await children(start, ino), flags.long === true));
    return;
  }
  // ls -R: each directory's listing under a "PATH:" header, then its subdirectories in name order.
  const stack: { path: ByteString; ino: number }[] = [{ path: start, ino }];
  const seen = new Set<number>([ino]);
  let firstDir = true;
  while (stack.length > 0) {
    const d = stack.pop()!;
    const rows = await children(d.path, d.ino);
    await out.write(`${firstDir ? '' : '\n'}${byteStringToDisplay(d.path)}:\n${formatRows(rows, flags.long === true)}`);
    firstDir = false;
    const subdirs = rows.filter((r) => r.stat.kind === 'dir');
    for (const r of subdirs) {
      // A corrupt image could link a directory into itself; never loop.
      if (seen.has(r.stat.ino)) throw new InputError(`${byteStringToDisplay(r.path)}: directory inode ${r.stat.ino} is reached twice`);
      seen.add(r.stat.ino);
    }
    for (let i = subdirs.length - 1; i >= 0; i--) stack.push({ path: subdirs[i]!.path, ino: subdirs[i]!.stat.ino });
  }
}

function lsJson(l: Listed): Record<string, unknown> {
  const s = l.stat;
  return {
    path: byteStringToDisplay(l.path),
    type: s.kind,
    mode: octal(s.mode),
    uid: s.uid,
    gid: s.gid,
    size: s.size,
    nlink: s.nlink,
    mtime: isoTime(s.mtime, 'nanoseconds'),
    ...(l.target !== undefined ? { target: byteStringToDisplay(l.target) } : {}),
    ...(s.rdev !== undefined ? { rdev: s.rdev } : {}),
  };
}

/** `name` per line, or `ls -l` columns (numbers right-aligned, widths per listing). */
function formatRows(rows: readonly Listed[], long: boolean): string {
  if (!long) return rows.map((r) => `${byteStringToDisplay(r.name)}\n`).join('');
  const cells = rows.map((r) => [
    modeString(r.stat.kind, r.stat.mode),
    String(r.stat.nlink),
    String(r.stat.uid),
    String(r.stat.gid),
    r.stat.rdev !== undefined ? `${r.stat.rdev.major}, ${r.stat.rdev.minor}` : String(r.stat.size),
    isoTime(r.stat.mtime, 'seconds'),
    byteStringToDisplay(r.name) + (r.target !== undefined ? ` -> ${byteStringToDisplay(r.target)}` : ''),
  ]);
  const widths = [1, 2, 3, 4].map((c) => Math.max(0, ...cells.map((row) => row[c]!.length)));
  return cells
    .map((row) => [row[0], ...widths.map((w, i) => row[i + 1]!.padStart(w)), row[5], row[6]].join(' ') + '\n')
    .join('');
}

// --- cat ------------------------------------------------------------------------------

export function catCommand(io: CliIO): Command {
  return inspectCommand('cat', io)
    .description('write files from inside an ext4 image to stdout')
    .argument('<image>', 'ext4 image file, or REF (digest or tag) with --store')
    .argument('<path...>', 'file paths inside the image (symlinks followed)')
    .action(async (image: string, paths: string[], flags: StoreFlags & KeyFlags) => {
      const reader = await openImageForInspect(image, { signal: io.signal, io, flags });
      try {
        for (const p of paths) {
          const path = utf8ToByteString(p);
          const ino = await reader.lookup(path, { followFinalSymlink: true, signal: io.signal });
          const st = await reader.stat(ino, io.signal);
          if (st.kind === 'dir') throw new InputError(`${p}: is a directory`);
          if (st.kind !== 'file') throw new InputError(`${p}: not a regular file (${st.kind})`);
          try {
            // end: false — stdout outlives this command; pipeline handles backpressure.
            await pipeline(reader.openFile(ino, { signal: io.signal }), io.stdout, { end: false, signal: io.signal });
          } catch (e) {
            if (io.signal.aborted) throw new InterruptedError('interrupted', { cause: e });
            if ((e as NodeJS.ErrnoException).code === 'EPIPE') return; // reader went away (`| head`): not an error
            throw e;
          }
        }
      } finally {
        await reader.close();
      }
    });
}

// --- stat ------------------------------------------------------------------------------

interface StatFlags extends StoreFlags, KeyFlags {
  dereference?: boolean;
  json?: boolean;
}

export function statCommand(io: CliIO): Command {
  return inspectCommand('stat', io)
    .description('show an inode inside an ext4 image: type, mode, owner, size, times, xattrs, extents')
    .argument('<image>', 'ext4 image file, or REF (digest or tag) with --store')
    .argument('<path>', 'path inside the image')
    .option('-L, --dereference', 'follow a final symlink')
    .option('--json', 'print one JSON object')
    .action(async (image: string, p: string, flags: StatFlags) => {
      const reader = await openImageForInspect(image, { signal: io.signal, io, flags });
      try {
        const path = utf8ToByteString(p);
        const ino = await reader.lookup(path, { followFinalSymlink: flags.dereference === true, signal: io.signal });
        const st = await reader.stat(ino, io.signal);
        const target = st.kind === 'symlink' ? await reader.readlink(ino, io.signal) : undefined;
        const extents = (await reader.fileExtents(ino, io.signal)).length;
        const out = new Output(io);
        await out.write(flags.json === true ? JSON.stringify(statJson(cleanPath(path), st, target, extents)) + '\n' : statText(cleanPath(path), st, target, extents));
      } finally {
        await reader.close();
      }
    });
}

function sortedXattrs(st: Ext4Stat): [string, Buffer][] {
  return [...st.xattrs].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

function statJson(path: ByteString, st: Ext4Stat, target: ByteString | undefined, extents: number): Record<string, unknown> {
  return {
    path: byteStringToDisplay(path),
    ino: st.ino,
    type: st.kind,
    mode: octal(st.mode),
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    nlink: st.nlink,
    blocks512: st.blocks512,
    flags: `0x${st.flags.toString(16)}`,
    atime: isoTime(st.atime, 'nanoseconds'),
    mtime: isoTime(st.mtime, 'nanoseconds'),
    ctime: isoTime(st.ctime, 'nanoseconds'),
    ...(st.crtime !== undefined ? { crtime: isoTime(st.crtime, 'nanoseconds') } : {}),
    ...(st.rdev !== undefined ? { rdev: st.rdev } : {}),
    ...(target !== undefined ? { target: byteStringToDisplay(target) } : {}),
    extents,
    xattrs: Object.fromEntries(sortedXattrs(st).map(([k, v]) => [k, v.toString('hex')])),
  };
}

function statText(path: ByteString, st: Ext4Stat, target: ByteString | undefined, extents: number): string {
  const lines = [
    `  File: ${byteStringToDisplay(path)}${target !== undefined ? ` -> ${byteStringToDisplay(target)}` : ''}`,
    `  Type: ${st.kind}`,
    ` Inode: ${st.ino}  Links: ${st.nlink}  Flags: 0x${st.flags.toString(16)}`,
    `  Mode: ${octal(st.mode)} (${modeString(st.kind, st.mode)})  Uid: ${st.uid}  Gid: ${st.gid}`,
    `  Size: ${st.size}  Blocks: ${st.blocks512}  Extents: ${extents}`,
    ...(st.rdev !== undefined ? [`Device: ${st.rdev.major},${st.rdev.minor}`] : []),
    `Access: ${isoTime(st.atime, 'nanoseconds')}`,
    `Modify: ${isoTime(st.mtime, 'nanoseconds')}`,
    `Change: ${isoTime(st.ctime, 'nanoseconds')}`,
    ...(st.crtime !== undefined ? [` Birth: ${isoTime(st.crtime, 'nanoseconds')}`] : []),
    ...sortedXattrs(st).map(([k, v]) => ` Xattr: ${k} = 0x${v.toString('hex')}`),
  ];
  return lines.join('\n') + '\n';
}

// --- shared ------------------------------------------------------------------------------

/** Subcommands added with addCommand inherit nothing: set error handling and output here. */
function inspectCommand(name: string, io: CliIO): Command {
  return addCacheOptions(addKeyOption(addStoreOptions(new Command(name))))
    .option('--stats', 'with --store: print read-path metrics (chunks fetched per tier) on stderr')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      outputError: () => {}, // reported once by reportError
    });
}

/** Writes to stdout, waiting for 'drain' when the consumer is slower than we are. */
class Output {
  readonly #io: CliIO;
  constructor(io: CliIO) {
    this.#io = io;
  }
  async write(s: string): Promise<void> {
    if (s === '') return;
    if (this.#io.stdout.write(s)) return;
    await new Promise<void>((resolve, reject) => {
      const stdout = this.#io.stdout;
      const done = (err?: unknown): void => {
        stdout.off('drain', onDrain);
        stdout.off('error', done);
        this.#io.signal.removeEventListener('abort', onAbort);
        if (err !== undefined) reject(err);
        else resolve();
      };
      const onDrain = (): void => done();
      const onAbort = (): void => done(new InterruptedError('interrupted'));
      stdout.once('drain', onDrain);
      stdout.once('error', done);
      this.#io.signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}

const TYPE_CHAR: Record<Ext4Kind, string> = { file: '-', dir: 'd', symlink: 'l', char: 'c', block: 'b', fifo: 'p', socket: 's' };

/** `drwxr-xr-x`, with s/S, t/T for setuid, setgid and sticky as ls(1) shows them. */
export function modeString(kind: Ext4Kind, mode: number): string {
  const rwx = (bits: number, special: boolean, ch: string): string =>
    (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + (special ? (bits & 1 ? ch : ch.toUpperCase()) : bits & 1 ? 'x' : '-');
  return (
    TYPE_CHAR[kind] +
    rwx((mode >> 6) & 7, (mode & 0o4000) !== 0, 's') +
    rwx((mode >> 3) & 7, (mode & 0o2000) !== 0, 's') +
    rwx(mode & 7, (mode & 0o1000) !== 0, 't')
  );
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

/** ISO 8601 UTC; 'nanoseconds' adds the 9-digit fraction. */
export function isoTime(t: Ext4Time, precision: 'seconds' | 'nanoseconds'): string {
  const base = new Date(t.sec * 1000).toISOString().replace(/\.\d{3}Z$/, '');
  return precision === 'seconds' ? `${base}Z` : `${base}.${String(t.nsec).padStart(9, '0')}Z`;
}

function cleanPath(path: ByteString): ByteString {
  const parts = path.split('/').filter((c) => c !== '' && c !== '.');
  return ('/' + parts.join('/')) as ByteString;
}

function joinPath(dir: ByteString, name: ByteString): ByteString {
  return (dir === '/' ? `/${name}` : `${dir}/${name}`) as ByteString;
}

function baseName(path: ByteString): ByteString {
  const i = path.lastIndexOf('/');
  return (i < 0 || path === '/' ? path : path.slice(i + 1)) as ByteString;
}
