/**
 * Reference ext4 images for reader tests: a real directory tree with every
 * kind of inode and edge case, turned into images by the real `mke2fs -d`.
 * Test-only code (sync calls fine).
 */
import { lstat, readdir, readlink } from 'node:fs/promises';
import { bytesToByteString, type ByteString } from '../layers/bytes.js';
import { sha256File } from './streams.js';
import { run } from './tools.js';

/**
 * Builds the reference tree in `dir` (must exist, be empty; needs root for
 * mknod/chown). Deterministic contents (seeded PRNG).
 */
const TREE_SCRIPT = String.raw`
import os, sys, struct, random, socket
os.chdir(sys.argv[1])
os.umask(0o022)
rnd = random.Random(1234)
os.makedirs('a/b/c')
open('a/b/c/f.txt', 'wb').write(b'hello\n')
os.setxattr('a', 'user.dirattr', b'on a directory')
os.mkdir('big')
for i in range(2000):
    open('big/entry-%05d-with-a-longer-name' % i, 'wb').close()
# 20 MiB with holes: data at unaligned offsets, one run ending exactly at EOF.
with open('holes.bin', 'wb') as f:
    f.truncate(20 * 1024 * 1024)
    for off, n in [(0, 70000), (3 * 1024 * 1024 + 17, 70000), (9 * 1024 * 1024, 4096), (19 * 1024 * 1024 + 4095, 1024 * 1024 - 4095)]:
        f.seek(off)
        f.write(rnd.randbytes(n))
# 12 separate data regions: 12 extents, more than the inode's 4, so a depth-1 extent tree.
with open('frag.bin', 'wb') as f:
    for i in range(12):
        f.seek(i * 256 * 1024)
        f.write(rnd.randbytes(5000))
# 1500 separate 1 KiB regions: more extents than 4 leaves of 340 hold, so a depth-2 extent tree.
with open('deep.bin', 'wb') as f:
    for i in range(1500):
        f.seek(i * 8192)
        f.write(rnd.randbytes(1024))
open('empty', 'wb').close()
os.symlink('x' * 59, 'sym59')    # fast: fits i_block
os.symlink('y' * 60, 'sym60')    # slow: one data block
os.symlink('z' * 300, 'sym300')
os.symlink('a/b', 'linkdir')
os.symlink('/a/b/c', 'abslink')
os.symlink('../a', 'updir')      # '..' of the root is the root
os.symlink('../..', 'a/b/up')
os.symlink('loop2', 'loop1')
os.symlink('loop1', 'loop2')
os.symlink('nowhere', 'dangling')
os.mkfifo('fifo')
os.mknod('chr', 0o20644, os.makedev(1, 3))               # old 8:8 encoding
os.mknod('blk', 0o60600, os.makedev(259, 65541))         # new encoding (minor > 255)
os.mknod('blk2', 0o60640, os.makedev(300, 2))            # new encoding (major > 255)
os.mknod('chr2', 0o20600, os.makedev(4095, 1048575))     # largest major and minor
s = socket.socket(socket.AF_UNIX)
s.bind('sock')
s.close()
os.link('a/b/c/f.txt', 'hard')
open('owned', 'wb').write(b'o')
os.chown('owned', 100000, 70000)
os.setxattr('owned', 'user.small', b'v1')
open('suid', 'wb').write(b's')
os.chmod('suid', 0o4755)
os.mkdir('sticky')
os.chmod('sticky', 0o1777)
os.mkdir('sgid')
os.chmod('sgid', 0o2750)
open('bigx', 'wb').write(b'b')
os.setxattr('bigx', 'user.big', b'A' * 700)   # too big for the inode: goes to an xattr block
os.setxattr('bigx', 'user.s2', b'q')
open('acl', 'wb').write(b'a')
acl = struct.pack('<I', 2) + b''.join(struct.pack('<HHI', t, p, i) for t, p, i in
    [(1, 6, 0xffffffff), (2, 4, 1000), (4, 4, 0xffffffff), (0x10, 4, 0xffffffff), (0x20, 4, 0xffffffff)])
os.setxattr('acl', 'system.posix_acl_access', acl)
open('cap', 'wb').write(b'c')
os.setxattr('cap', 'security.capability', struct.pack('<IIIII', 0x02000001, 0x400, 0, 0, 0))
open(b'caf\xe9', 'wb').write(b'latin-1 name')
open('future', 'wb').write(b'f')
os.utime('future', ns=(2240000000 * 10**9 + 5, 2240000000 * 10**9 + 123456789))
open('past', 'wb').write(b'p')
os.utime('past', ns=(-100000000 * 10**9, -100000000 * 10**9))
`;

export async function makeReferenceTree(dir: string): Promise<void> {
  await run('python3', ['-c', TREE_SCRIPT, dir]);
}

/**
 * `mke2fs -q -d tree ... image size`, then gives /future its real post-2038
 * times: mke2fs -d stores only the low 32 bits of seconds and no
 * nanoseconds, so debugfs sets the *_extra fields (epoch 1, nanoseconds).
 */
export async function mkfsFromTree(tree: string, image: string, args: readonly string[], size = '64M'): Promise<void> {
  await run('mke2fs', ['-q', ...args, '-d', tree, image, size]);
  const extra = (nsec: number): string => `0x${((nsec * 4 + 1) >>> 0).toString(16)}`;
  await debugfs(image, [`sif /future mtime_extra ${extra(123456789)}`, `sif /future atime_extra ${extra(5)}`], { write: true });
}

export interface RealEntry {
  readonly path: ByteString;
  readonly kind: 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly nlink: number;
  readonly hostIno: bigint;
  readonly mtime: { sec: number; nsec: number };
  readonly atime: { sec: number; nsec: number };
  readonly rdev?: { major: number; minor: number };
  readonly target?: ByteString;
  readonly sha256?: string;
}

function kindOf(st: import('node:fs').BigIntStats): RealEntry['kind'] {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  return 'socket';
}

const time = (ns: bigint): { sec: number; nsec: number } => {
  const sec = ns / 1_000_000_000n - (ns % 1_000_000_000n < 0n ? 1n : 0n);
  return { sec: Number(sec), nsec: Number(ns - sec * 1_000_000_000n) };
};

/** Every inode under `root`, keyed by '/'-rooted byte path ('/' is the root), via lstat. */
export async function scanTree(root: string): Promise<Map<ByteString, RealEntry>> {
  const out = new Map<ByteString, RealEntry>();
  const visit = async (abs: Buffer, rel: ByteString): Promise<void> => {
    const st = await lstat(abs, { bigint: true });
    const kind = kindOf(st);
    const dev = st.rdev;
    const entry: RealEntry = {
      path: rel,
      kind,
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: Number(st.size),
      nlink: Number(st.nlink),
      hostIno: st.ino,
      mtime: time(st.mtimeNs),
      atime: time(st.atimeNs),
      ...(kind === 'char' || kind === 'block'
        ? { rdev: { major: Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn)), minor: Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn)) } }
        : {}),
      ...(kind === 'symlink' ? { target: bytesToByteString(await readlink(abs, { encoding: 'buffer' })) } : {}),
      ...(kind === 'file' ? { sha256: await sha256File(abs) } : {}),
    };
    out.set(rel, entry);
    if (kind === 'dir') {
      for (const name of await readdir(abs, { encoding: 'buffer' })) {
        const childRel = (rel === '/' ? `/${bytesToByteString(name)}` : `${rel}/${bytesToByteString(name)}`) as ByteString;
        await visit(Buffer.concat([abs, Buffer.from('/'), name]), childRel);
      }
    }
  };
  await visit(Buffer.from(root), '/' as ByteString);
  return out;
}

const XATTR_SCRIPT = String.raw`
import os, sys, json
root = os.fsencode(sys.argv[1])
out = {}
for dirpath, dirnames, filenames in os.walk(root):
    for n in [b''] + dirnames + filenames:
        p = os.path.join(dirpath, n) if n else dirpath
        rel = b'/' + os.path.relpath(p, root).lstrip(b'.').lstrip(b'/') if p != root else b'/'
        names = os.listxattr(p, follow_symlinks=False)
        if names:
            out[rel.hex()] = {k: os.getxattr(p, k, follow_symlinks=False).hex() for k in names}
print(json.dumps(out))
`;

/** Extended attributes of every path under `root` that has any (python3; Node has no xattr API). */
export async function readTreeXattrs(root: string): Promise<Map<ByteString, Map<string, Buffer>>> {
  const { stdout } = await run('python3', ['-c', XATTR_SCRIPT, root]);
  const parsed = JSON.parse(stdout) as Record<string, Record<string, string>>;
  const out = new Map<ByteString, Map<string, Buffer>>();
  for (const [pathHex, attrs] of Object.entries(parsed)) {
    out.set(bytesToByteString(Buffer.from(pathHex, 'hex')), new Map(Object.entries(attrs).map(([k, v]) => [k, Buffer.from(v, 'hex')])));
  }
  return out;
}

/**
 * Runs debugfs commands (one process, `-f -`) and returns each command's
 * output in order. `write` opens the image read-write.
 */
export async function debugfs(image: string, commands: readonly string[], opts: { write?: boolean } = {}): Promise<string[]> {
  const { stdout } = await run('debugfs', [...(opts.write === true ? ['-w'] : []), '-f', '-', image], { input: commands.join('\n') + '\n' });
  // debugfs echoes each command as "debugfs: CMD" before its output.
  const parts = stdout.split(/^debugfs: .*$/m);
  const outputs = parts.slice(1);
  if (outputs.length !== commands.length) throw new Error(`debugfs: expected ${commands.length} outputs, got ${outputs.length}:\n${stdout.slice(0, 2000)}`);
  return outputs;
}

/** The interesting fields of `debugfs stat` output. */
export interface DebugfsStat {
  readonly ino: number;
  readonly mode: number;
  readonly flags: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly links: number;
  readonly blockcount: number;
  readonly mtime: { base: number; extra: number | undefined };
  /** [logical, physical] data blocks, in the order debugfs lists them. */
  readonly mapping: [number, number][];
}

export function parseDebugfsStat(text: string): DebugfsStat {
  const m1 = /Inode:\s+(\d+)\s+Type:\s+.*?\s+Mode:\s+(\d+)\s+Flags:\s+0x([0-9a-f]+)/.exec(text);
  const m2 = /User:\s+(\d+)\s+Group:\s+(\d+)\s+(?:Project:\s+\d+\s+)?Size:\s+(\d+)/.exec(text);
  const m3 = /Links:\s+(\d+)\s+Blockcount:\s+(\d+)/.exec(text);
  const m4 = /\smtime: 0x([0-9a-f]+)(?::([0-9a-f]+))?/.exec(text);
  if (!m1 || !m2 || !m3 || !m4) throw new Error(`cannot parse debugfs stat output:\n${text}`);
  return {
    ino: Number(m1[1]),
    mode: parseInt(m1[2]!, 8),
    flags: parseInt(m1[3]!, 16),
    uid: Number(m2[1]),
    gid: Number(m2[2]),
    size: Number(m2[3]),
    links: Number(m3[1]),
    blockcount: Number(m3[2]),
    mtime: { base: parseInt(m4[1]!, 16), extra: m4[2] !== undefined ? parseInt(m4[2], 16) : undefined },
    mapping: parseMapping(text),
  };
}

/**
 * The logical→physical data blocks from the EXTENTS: or BLOCKS: section of
 * `debugfs stat`, as [logical, physical] pairs; tree and indirect blocks
 * ((ETBn), (IND), (DIND), (TIND)) are left out.
 */
function parseMapping(text: string): [number, number][] {
  const section = /\n(?:EXTENTS|BLOCKS):\n([^]*?)(?:\n\n|\nTOTAL|$)/.exec(text);
  const out: [number, number][] = [];
  if (!section) return out;
  for (const m of section[1]!.matchAll(/\((\d+)(?:-(\d+))?\):(\d+)(?:-(\d+))?/g)) {
    const l0 = Number(m[1]);
    const l1 = m[2] !== undefined ? Number(m[2]) : l0;
    const p0 = Number(m[3]);
    for (let k = 0; k <= l1 - l0; k++) out.push([l0 + k, p0 + k]);
  }
  return out;
}

/** `debugfs ls -l DIR` as name bytes (debugfs prints non-ASCII bytes as \xNN) → {ino, mode}. */
export function parseDebugfsLs(text: string): Map<ByteString, { ino: number; mode: number }> {
  const out = new Map<ByteString, { ino: number; mode: number }>();
  for (const line of text.split('\n')) {
    const m = /^\s*(\d+)\s+(\d+)\s+\((\d+)\)\s+\d+\s+\d+\s+(?:\d+,\s*\d+|\d+)\s+\S+\s+\S+\s(.*)$/.exec(line);
    if (!m) continue;
    const bytes: Buffer[] = [];
    const name = m[4]!;
    for (let i = 0; i < name.length; ) {
      const esc = /^\\x([0-9a-fA-F]{2})/.exec(name.slice(i));
      if (esc) {
        bytes.push(Buffer.from([parseInt(esc[1]!, 16)]));
        i += 4;
      } else {
        const ch = String.fromCodePoint(name.codePointAt(i)!);
        bytes.push(Buffer.from(ch, 'utf8'));
        i += ch.length;
      }
    }
    out.set(bytesToByteString(Buffer.concat(bytes)), { ino: Number(m[1]), mode: parseInt(m[2]!, 8) });
  }
  return out;
}
