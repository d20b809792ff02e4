/**
 * Compare two real directory trees inode by inode: the oracle for "does this
 * ext4 image hold exactly what `umoci unpack` produced?". Test-only code.
 *
 * Everything is read with lstat (symlinks are never followed) and names are
 * handled as bytes, so non-UTF-8 names survive. Extended attributes are read
 * in one python3 process per tree (Node has no xattr API; a process per file
 * would be far too slow for the ~10k-file corpus trees).
 */
import { lstat, readdir, readlink } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { sha256File } from './streams.js';
import { readXattrs } from './xattrs.js';

export type TreeField =
  | 'presence' // exists in one tree only
  | 'type' // file / dir / symlink / fifo / char / block / socket
  | 'mode' // mode & 0o7777 (incl. setuid, setgid, sticky)
  | 'uid'
  | 'gid'
  | 'mtime' // seconds and nanoseconds
  | 'size' // regular files and symlinks (directory sizes are filesystem-specific)
  | 'target' // symlink target bytes
  | 'rdev' // device major:minor
  | 'xattr' // one diff per attribute name whose presence or value differs
  | 'nlink' // link count (directories: minus ignored subdirectories)
  | 'hardlinks' // the set of paths sharing this inode differs
  | 'content'; // sha256 of the bytes (only compared when sizes match)

export interface TreeDiff {
  /** '/'-rooted path relative to the compared roots; non-UTF-8 bytes shown as \xNN. */
  readonly path: string;
  readonly field: TreeField;
  /** Human-readable value in tree a / tree b ('(absent)' when missing). */
  readonly a: string;
  readonly b: string;
  /** For field 'xattr': the attribute name. */
  readonly name?: string;
}

export interface CompareOptions {
  /** Relative paths (e.g. 'lost+found', 'a/b') skipped with their subtrees, in both trees. */
  readonly ignore?: readonly string[];
  /** Fields not to compare, e.g. ['xattr'] where python3 is unavailable. */
  readonly skipFields?: readonly TreeField[];
}

type FileType = 'file' | 'dir' | 'symlink' | 'fifo' | 'char' | 'block' | 'socket' | 'unknown';

interface Node {
  /** Path relative to the root as bytes; the root itself is empty. */
  readonly rel: Buffer;
  readonly abs: Buffer;
  readonly st: BigIntStats;
  readonly type: FileType;
  target?: Buffer;
  /** Directories: how many subdirectories were ignored (they still count in nlink). */
  ignoredSubdirs: number;
  xattrs?: Map<string, Buffer>;
}

interface Tree {
  /** Keyed by the latin1 form of `rel` (one char per byte: lossless). */
  readonly nodes: Map<string, Node>;
  /** `${dev}:${ino}` of non-directories -> keys of the paths sharing it, sorted. */
  readonly inodes: Map<string, string[]>;
}

const SLASH = Buffer.from('/');

/** Every difference between trees `a` and `b`, sorted by path. Empty means identical. */
export async function compareTrees(a: string, b: string, opts: CompareOptions = {}): Promise<TreeDiff[]> {
  const skip = new Set(opts.skipFields ?? []);
  const ignore = new Set((opts.ignore ?? []).map(normaliseIgnore));
  const [ta, tb] = await Promise.all([scan(a, ignore, !skip.has('xattr')), scan(b, ignore, !skip.has('xattr'))]);

  const diffs: TreeDiff[] = [];
  const want = (f: TreeField): boolean => !skip.has(f);
  const add = (key: string, field: TreeField, va: string, vb: string, name?: string): void => {
    if (want(field)) diffs.push({ path: display(key), field, a: va, b: vb, ...(name !== undefined ? { name } : {}) });
  };

  const keys = [...new Set([...ta.nodes.keys(), ...tb.nodes.keys()])].sort();
  const contentPairs: Array<[string, Node, Node]> = [];
  for (const key of keys) {
    const na = ta.nodes.get(key);
    const nb = tb.nodes.get(key);
    if (na === undefined || nb === undefined) {
      add(key, 'presence', na === undefined ? '(absent)' : na.type, nb === undefined ? '(absent)' : nb.type);
      continue;
    }
    if (na.type !== nb.type) {
      add(key, 'type', na.type, nb.type);
      continue; // the other fields mean different things for different types
    }
    const ma = na.st.mode & 0o7777n;
    const mb = nb.st.mode & 0o7777n;
    if (ma !== mb) add(key, 'mode', octal(ma), octal(mb));
    if (na.st.uid !== nb.st.uid) add(key, 'uid', String(na.st.uid), String(nb.st.uid));
    if (na.st.gid !== nb.st.gid) add(key, 'gid', String(na.st.gid), String(nb.st.gid));
    if (na.st.mtimeNs !== nb.st.mtimeNs) add(key, 'mtime', fmtNs(na.st.mtimeNs), fmtNs(nb.st.mtimeNs));
    if (na.type !== 'dir' && na.st.size !== nb.st.size) add(key, 'size', String(na.st.size), String(nb.st.size));
    if (na.type === 'symlink' && na.target !== undefined && nb.target !== undefined && !na.target.equals(nb.target)) {
      add(key, 'target', displayBytes(na.target), displayBytes(nb.target));
    }
    if ((na.type === 'char' || na.type === 'block') && na.st.rdev !== nb.st.rdev) add(key, 'rdev', fmtDev(na.st.rdev), fmtDev(nb.st.rdev));
    if (want('xattr')) compareXattrs(key, na, nb, add);
    const la = na.st.nlink - BigInt(na.ignoredSubdirs);
    const lb = nb.st.nlink - BigInt(nb.ignoredSubdirs);
    if (la !== lb) add(key, 'nlink', String(la), String(lb));
    if (na.type !== 'dir') {
      const ga = ta.inodes.get(inodeKey(na.st)) ?? [];
      const gb = tb.inodes.get(inodeKey(nb.st)) ?? [];
      if (ga.join('\0') !== gb.join('\0')) add(key, 'hardlinks', fmtGroup(ga), fmtGroup(gb));
    }
    if (na.type === 'file' && na.st.size === nb.st.size && na.st.size > 0n && want('content')) contentPairs.push([key, na, nb]);
  }

  // Hash files in a bounded pool; hardlinked paths are hashed once per inode.
  const cacheA = new Map<string, Promise<string>>();
  const cacheB = new Map<string, Promise<string>>();
  const hashOnce = (cache: Map<string, Promise<string>>, n: Node): Promise<string> => {
    const k = inodeKey(n.st);
    let h = cache.get(k);
    if (h === undefined) cache.set(k, (h = sha256File(n.abs)));
    return h;
  };
  await pool(contentPairs, 8, async ([key, na, nb]) => {
    const [ha, hb] = await Promise.all([hashOnce(cacheA, na), hashOnce(cacheB, nb)]);
    if (ha !== hb) add(key, 'content', `sha256:${ha}`, `sha256:${hb}`);
  });

  return diffs.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : x.field < y.field ? -1 : x.field > y.field ? 1 : 0));
}

/** A readable, bounded listing for assertion messages. */
export function formatDiffs(diffs: readonly TreeDiff[], max = 30): string {
  if (diffs.length === 0) return 'trees are identical';
  const lines = diffs.slice(0, max).map((d) => `  ${d.path}: ${d.field}${d.name !== undefined ? ` ${d.name}` : ''}: a=${d.a} b=${d.b}`);
  if (diffs.length > max) lines.push(`  … and ${diffs.length - max} more`);
  return `${diffs.length} difference(s):\n${lines.join('\n')}`;
}

// --- scanning ------------------------------------------------------------------

function normaliseIgnore(p: string): string {
  const trimmed = p.replace(/^\/+|\/+$/g, '').replace(/\/+/g, '/');
  return Buffer.from(trimmed, 'utf8').toString('latin1');
}

async function scan(root: string, ignore: ReadonlySet<string>, withXattrs: boolean): Promise<Tree> {
  const nodes = new Map<string, Node>();
  const rootAbs = Buffer.from(root, 'utf8');

  async function visit(rel: Buffer, abs: Buffer): Promise<void> {
    const st = await lstat(abs, { bigint: true });
    const node: Node = { rel, abs, st, type: fileType(st), ignoredSubdirs: 0 };
    nodes.set(rel.toString('latin1'), node);
    if (node.type === 'symlink') node.target = await readlink(abs, { encoding: 'buffer' });
    if (node.type !== 'dir') return;
    const names = await readdir(abs, { encoding: 'buffer' });
    await Promise.all(
      names.map(async (name) => {
        const childRel = rel.length === 0 ? name : Buffer.concat([rel, SLASH, name]);
        const childAbs = Buffer.concat([abs, SLASH, name]);
        if (ignore.has(childRel.toString('latin1'))) {
          if ((await lstat(childAbs)).isDirectory()) node.ignoredSubdirs++;
          return;
        }
        await visit(childRel, childAbs);
      }),
    );
  }
  await visit(Buffer.alloc(0), rootAbs);

  const inodes = new Map<string, string[]>();
  for (const [key, n] of nodes) {
    if (n.type === 'dir') continue;
    const k = inodeKey(n.st);
    const g = inodes.get(k);
    if (g === undefined) inodes.set(k, [key]);
    else g.push(key);
  }
  for (const g of inodes.values()) g.sort();

  if (withXattrs) {
    const list = [...nodes.values()];
    const all = await readXattrs(list.map((n) => n.abs));
    list.forEach((n, i) => (n.xattrs = all[i] ?? new Map()));
  }
  return { nodes, inodes };
}

function compareXattrs(key: string, na: Node, nb: Node, add: (key: string, f: TreeField, a: string, b: string, name?: string) => void): void {
  const xa = na.xattrs ?? new Map<string, Buffer>();
  const xb = nb.xattrs ?? new Map<string, Buffer>();
  for (const name of [...new Set([...xa.keys(), ...xb.keys()])].sort()) {
    const va = xa.get(name);
    const vb = xb.get(name);
    if (va !== undefined && vb !== undefined && va.equals(vb)) continue;
    add(key, 'xattr', va === undefined ? '(absent)' : `0x${va.toString('hex')}`, vb === undefined ? '(absent)' : `0x${vb.toString('hex')}`, displayBytes(Buffer.from(name, 'latin1')));
  }
}

// --- helpers -------------------------------------------------------------------

function fileType(st: BigIntStats): FileType {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isSocket()) return 'socket';
  return 'unknown';
}

function inodeKey(st: BigIntStats): string {
  return `${st.dev}:${st.ino}`;
}

async function pool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

function octal(m: bigint): string {
  return `0${m.toString(8).padStart(4, '0')}`;
}

function fmtNs(ns: bigint): string {
  const sec = ns / 1_000_000_000n;
  let nsec = ns % 1_000_000_000n;
  let s = sec;
  if (nsec < 0n) {
    nsec += 1_000_000_000n;
    s -= 1n;
  }
  return `${s}.${nsec.toString().padStart(9, '0')}`;
}

/** Linux's dev_t encoding (glibc gnu_dev_major/minor). */
function fmtDev(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

function fmtGroup(keys: readonly string[]): string {
  return `[${keys.map(display).join(', ')}]`;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function displayBytes(b: Buffer): string {
  try {
    return utf8.decode(b);
  } catch {
    let s = '';
    for (const byte of b) s += byte >= 0x20 && byte < 0x7f && byte !== 0x5c ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, '0')}`;
    return s;
  }
}

/** latin1 key -> '/'-rooted display path. */
function display(key: string): string {
  return `/${displayBytes(Buffer.from(key, 'latin1'))}`;
}
