/**
 * Compare a flattened in-memory Tree with a real directory (e.g. what
 * `umoci unpack` wrote): both are turned into one record per path and the
 * records diffed. Test-only code.
 */
import type { BigIntStats } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import type { Inode, Tree } from '../layers/tree.js';
import { sha256File } from './streams.js';
import { readXattrs } from './xattrs.js';

export interface PathRecord {
  readonly type: 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'other';
  /** mode & 0o7777 */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtimeNs: bigint;
  /** Files: byte count. */
  readonly size?: number;
  /** Files: sha256 hex of the content. */
  readonly sha256?: string;
  /** Symlinks: target as latin1 bytes. */
  readonly target?: string;
  /** Devices: "major:minor". */
  readonly dev?: string;
  /** name → hex value */
  readonly xattrs: ReadonlyMap<string, string>;
  /** Non-directories: every path sharing this inode, sorted, joined by NUL. */
  readonly links?: string;
}

/** Keyed by path relative to the root as latin1 bytes ('' is the root). */
export type Snapshot = Map<string, PathRecord>;

/** `content(d)` gives the sha256 hex of a file's bytes and their count. */
export function snapshotTree<D>(tree: Tree<D>, content: (data: D) => { sha256: string; size: number }): Snapshot {
  const recs = new Map<string, Omit<PathRecord, 'links'> & { node: Inode<D> }>();
  const groups = new Map<Inode<D>, string[]>();
  const visit = (key: string, node: Inode<D>): void => {
    const base = { mode: node.attrs.mode, uid: node.attrs.uid, gid: node.attrs.gid, xattrs: hexMap(node.attrs.xattrs), node };
    const mtimeNs = BigInt(node.attrs.mtime.sec) * 1_000_000_000n + BigInt(node.attrs.mtime.nsec);
    switch (node.kind) {
      case 'dir':
        recs.set(key, { ...base, type: 'dir', mtimeNs });
        for (const [name, child] of node.children) visit(key === '' ? name : `${key}/${name}`, child);
        return;
      case 'file': {
        const c = content(node.data);
        recs.set(key, { ...base, type: 'file', mtimeNs, size: c.size, sha256: c.sha256 });
        break;
      }
      case 'symlink':
        recs.set(key, { ...base, type: 'symlink', mtimeNs, target: node.target });
        break;
      case 'char':
      case 'block':
        recs.set(key, { ...base, type: node.kind, mtimeNs, dev: `${node.major}:${node.minor}` });
        break;
      case 'fifo':
        recs.set(key, { ...base, type: 'fifo', mtimeNs });
        break;
    }
    const g = groups.get(node);
    if (g === undefined) groups.set(node, [key]);
    else g.push(key);
  };
  visit('', tree.root);
  const out: Snapshot = new Map();
  for (const [key, { node, ...rec }] of recs) {
    const g = groups.get(node);
    out.set(key, g === undefined ? rec : { ...rec, links: [...g].sort().join('\0') });
  }
  return out;
}

/** Reads a real directory tree (lstat, never following symlinks; names as bytes; xattrs via python3). */
export async function snapshotDir(root: string): Promise<Snapshot> {
  const found: Array<{ key: string; abs: Buffer; st: BigIntStats; target?: Buffer }> = [];
  const visit = async (key: string, abs: Buffer): Promise<void> => {
    const st = await lstat(abs, { bigint: true });
    const item: { key: string; abs: Buffer; st: BigIntStats; target?: Buffer } = { key, abs, st };
    found.push(item);
    if (st.isSymbolicLink()) item.target = await readlink(abs, { encoding: 'buffer' });
    if (!st.isDirectory()) return;
    for (const name of await readdir(abs, { encoding: 'buffer' })) {
      const n = name.toString('latin1');
      await visit(key === '' ? n : `${key}/${n}`, Buffer.concat([abs, Buffer.from('/'), name]));
    }
  };
  await visit('', Buffer.from(root, 'utf8'));

  const xattrs = (await readXattrs(found.map((f) => f.abs))).map(hexMap);
  const byInode = new Map<string, string[]>();
  const hashes = new Map<string, string>(); // one hash per inode, files read one at a time
  for (const f of found) {
    if (f.st.isDirectory()) continue;
    const ino = `${f.st.dev}:${f.st.ino}`;
    byInode.set(ino, [...(byInode.get(ino) ?? []), f.key]);
  }
  const out: Snapshot = new Map();
  for (const [i, f] of found.entries()) {
    const st = f.st;
    const ino = `${st.dev}:${st.ino}`;
    const type = typeOf(st);
    if (type === 'file' && !hashes.has(ino)) hashes.set(ino, await sha256File(f.abs));
    const rdev = st.rdev;
    const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
    const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
    out.set(f.key, {
      type,
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtimeNs: st.mtimeNs,
      xattrs: xattrs[i] ?? new Map(),
      ...(type === 'file' ? { size: Number(st.size), sha256: hashes.get(ino) as string } : {}),
      ...(f.target !== undefined ? { target: f.target.toString('latin1') } : {}),
      ...(type === 'char' || type === 'block' ? { dev: `${major}:${minor}` } : {}),
      ...(type !== 'dir' ? { links: [...(byInode.get(ino) ?? [])].sort().join('\0') } : {}),
    });
  }
  return out;
}

export interface DiffOptions {
  /** Paths (latin1 keys) whose mtime is not compared, e.g. implicit directories (umoci stamps them with the wall clock). */
  readonly ignoreMtime?: ReadonlySet<string>;
}

/** Human-readable differences, at most `max`; empty when equal. */
export function diffSnapshots(a: Snapshot, b: Snapshot, options: DiffOptions = {}, max = 40): string[] {
  const out: string[] = [];
  const show = (k: string): string => `/${Buffer.from(k, 'latin1').toString('utf8')}`;
  for (const key of [...new Set([...a.keys(), ...b.keys()])].sort()) {
    if (out.length >= max) {
      out.push('…');
      break;
    }
    const ra = a.get(key);
    const rb = b.get(key);
    if (ra === undefined || rb === undefined) {
      out.push(`${show(key)}: only in ${ra === undefined ? 'b' : 'a'} (${(ra ?? rb)?.type})`);
      continue;
    }
    const fields: Array<keyof PathRecord> = ['type', 'mode', 'uid', 'gid', 'mtimeNs', 'size', 'sha256', 'target', 'dev', 'links'];
    for (const f of fields) {
      if (f === 'mtimeNs' && options.ignoreMtime?.has(key)) continue;
      const va = ra[f];
      const vb = rb[f];
      if (va !== vb) out.push(`${show(key)}: ${f} ${fmt(va)} ≠ ${fmt(vb)}`);
    }
    const xa = [...ra.xattrs].sort().join(',');
    const xb = [...rb.xattrs].sort().join(',');
    if (xa !== xb) out.push(`${show(key)}: xattrs {${xa}} ≠ {${xb}}`);
  }
  return out;
}

function typeOf(st: BigIntStats): PathRecord['type'] {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  return 'other';
}

function fmt(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(Buffer.from(v, 'latin1').toString('utf8'));
  if (typeof v === 'number' && v > 7) return `${v} (0o${v.toString(8)})`;
  return String(v);
}

function hexMap(m: ReadonlyMap<string, Buffer>): Map<string, string> {
  return new Map([...m].map(([k, v]) => [k, v.toString('hex')]));
}
