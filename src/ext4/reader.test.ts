import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { InputError, IntegrityError, NotFoundError } from '../errors.js';
import { bytesToByteString, utf8ToByteString, type ByteString } from '../layers/bytes.js';
import {
  debugfs, makeReferenceTree, mkfsFromTree, parseDebugfsLs, parseDebugfsStat, readTreeXattrs, scanTree, type RealEntry,
} from '../testing/ext4-fixtures.js';
import { readAllBytes } from '../testing/streams.js';
import { requireRoot, requireTool, run, tmpDir, type TmpDir } from '../testing/tools.js';
import { bufferByteSource, openFileByteSource } from './byte-source.js';
import { crc32c } from './crc32c.js';
import { decodeGroupDesc } from './group-desc.js';
import { Ext4Reader, type Ext4WalkEntry } from './reader.js';
import { decodeSuperblock } from './superblock.js';

const B = (s: string): ByteString => s as ByteString; // ASCII literals only

async function sha256Stream(r: AsyncIterable<unknown>): Promise<string> {
  const h = createHash('sha256');
  for await (const b of r) h.update(b as Buffer);
  return h.digest('hex');
}

/** Depth-first order with children in byte order: what walk() must yield. */
function dfsOrder(paths: Iterable<ByteString>): ByteString[] {
  const children = new Map<string, string[]>();
  for (const p of paths) {
    if (p === '/') continue;
    const parent = p.slice(0, p.lastIndexOf('/')) || '/';
    const list = children.get(parent) ?? [];
    list.push(p);
    children.set(parent, list);
  }
  const out: ByteString[] = [];
  const visit = (p: string): void => {
    out.push(p as ByteString);
    const kids = (children.get(p) ?? []).sort((a, b) => {
      const na = a.slice(a.lastIndexOf('/') + 1);
      const nb = b.slice(b.lastIndexOf('/') + 1);
      return na < nb ? -1 : na > nb ? 1 : 0;
    });
    for (const k of kids) visit(k);
  };
  visit('/');
  return out;
}

describe('crc32c', () => {
  it('gives the standard check value for "123456789"', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
    assert.equal(crc32c(Buffer.alloc(0)), 0);
    assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
  });
});

describe('byte sources', () => {
  let tmp: TmpDir;
  before(async () => {
    tmp = await tmpDir('byte-source');
  });
  after(() => tmp.cleanup());

  it('openFileByteSource reads exact ranges and refuses reads past the end', async () => {
    const file = path.join(tmp.path, 'f');
    const data = Buffer.from(Array.from({ length: 10000 }, (_, i) => i % 251));
    await writeFile(file, data);
    const src = await openFileByteSource(file);
    try {
      assert.equal(src.size, 10000);
      assert.equal(src.name, file);
      assert.deepEqual(await src.read(9000, 1000), data.subarray(9000));
      assert.deepEqual(await src.read(17, 3), data.subarray(17, 20));
      assert.equal((await src.read(10000, 0)).length, 0);
      await assert.rejects(src.read(9500, 501), RangeError);
      await assert.rejects(src.read(-1, 1), RangeError);
      const ac = new AbortController();
      ac.abort();
      await assert.rejects(src.read(0, 1, ac.signal), { code: 'interrupted' });
    } finally {
      await src.close();
    }
  });

  it('openFileByteSource refuses a directory with InputError', async () => {
    await assert.rejects(openFileByteSource(tmp.path), InputError);
  });

  it('bufferByteSource copies and range-checks', async () => {
    const buf = Buffer.from('abcdef');
    const src = bufferByteSource(buf);
    const got = await src.read(1, 3);
    assert.equal(got.toString(), 'bcd');
    got[0] = 0x7a;
    assert.equal(buf.toString(), 'abcdef');
    await assert.rejects(src.read(4, 3), RangeError);
  });
});

interface Variant {
  readonly name: string;
  readonly slug: string;
  readonly args: readonly string[];
  /** Run `e2fsck -fyD` so that big directories get htree indexes. */
  readonly htree?: boolean;
  /** Runs after mke2fs. */
  readonly after?: (image: string) => Promise<void>;
  /** Files use extent trees (false: ext2 block maps). */
  readonly extents: boolean;
  readonly expect?: (r: Ext4Reader) => void;
}

const INCOMPAT_64BIT = 0x80;
const INCOMPAT_META_BG = 0x10;
const RO_METADATA_CSUM = 0x400;

const VARIANTS: readonly Variant[] = [
  {
    name: 'mke2fs -t ext4 defaults, 4 KiB blocks (64bit, metadata_csum, flex_bg), htree dirs via e2fsck -fD',
    slug: 'ext4-4k-htree',
    args: ['-t', 'ext4', '-b', '4096'],
    htree: true,
    extents: true,
    expect: (r) => {
      assert.equal(r.blockSize, 4096);
      assert.ok(r.superblock.featureIncompat & INCOMPAT_64BIT);
      assert.ok(r.superblock.featureRoCompat & RO_METADATA_CSUM);
    },
  },
  {
    name: 'mke2fs -t ext4 on a small image (its default: 1 KiB blocks)',
    slug: 'ext4-1k',
    args: ['-t', 'ext4'],
    extents: true,
    expect: (r) => assert.equal(r.blockSize, 1024),
  },
  {
    name: 'mke2fs -t ext4 -O ^64bit,^metadata_csum',
    slug: 'ext4-plain',
    args: ['-t', 'ext4', '-b', '4096', '-O', '^64bit,^metadata_csum'],
    extents: true,
    expect: (r) => {
      assert.equal(r.superblock.featureIncompat & INCOMPAT_64BIT, 0);
      assert.equal(r.superblock.featureRoCompat & RO_METADATA_CSUM, 0);
    },
  },
  {
    name: 'metadata_csum_seed, UUID changed afterwards by tune2fs (checksums keep the original seed)',
    slug: 'csum-seed',
    args: ['-t', 'ext4', '-b', '4096', '-O', 'metadata_csum_seed', '-U', '11111111-2222-3333-4444-555555555555'],
    after: (image) => run('tune2fs', ['-U', '01234567-89ab-cdef-0123-456789abcdef', image]).then(() => undefined),
    extents: true,
    expect: (r) => {
      assert.ok(r.superblock.featureIncompat & 0x2000);
      assert.equal(r.superblock.uuid.toString('hex'), '0123456789abcdef0123456789abcdef');
    },
  },
  {
    name: 'ext2 (indirect block maps)',
    slug: 'ext2',
    args: ['-t', 'ext2', '-b', '4096'],
    extents: false,
  },
  {
    name: 'meta_bg, 1 KiB blocks, 64 groups',
    slug: 'metabg',
    args: ['-t', 'ext4', '-b', '1024', '-g', '1024', '-N', '4096', '-O', 'meta_bg,^resize_inode'],
    extents: true,
    expect: (r) => {
      assert.ok(r.superblock.featureIncompat & INCOMPAT_META_BG);
      assert.equal(r.groupCount, 64);
    },
  },
];

describe('Ext4Reader over mke2fs -d images of a reference tree', function () {
  let tmp: TmpDir | undefined;
  let treeDir = '';
  let real = new Map<ByteString, RealEntry>();
  let realXattrs = new Map<ByteString, Map<string, Buffer>>();

  before(async function () {
    requireTool(this, 'mke2fs', 'debugfs', 'e2fsck', 'tune2fs', 'python3');
    requireRoot(this, 'mknod and chown in the reference tree');
    tmp = await tmpDir('ext4-reader');
    treeDir = path.join(tmp.path, 'tree');
    await mkdir(treeDir);
    await makeReferenceTree(treeDir);
    real = await scanTree(treeDir);
    realXattrs = await readTreeXattrs(treeDir);
  });
  after(async () => {
    await tmp?.cleanup();
  });

  for (const v of VARIANTS) {
    describe(v.name, function () {
      let image = '';
      let reader: Ext4Reader;
      const ino = (p: string): Promise<number> => reader.lookup(bytesToByteString(Buffer.from(p, 'latin1')));

      before(async function () {
        image = path.join(tmp!.path, `${v.slug}.ext4`);
        await mkfsFromTree(treeDir, image, v.args);
        await v.after?.(image);
        if (v.htree === true) {
          const r = await run('e2fsck', ['-fyD', image], { allowFail: true });
          assert.ok(r.code <= 1, `e2fsck -fyD exited ${r.code}: ${r.stdout}${r.stderr}`);
        }
        reader = await Ext4Reader.open(await openFileByteSource(image));
      });
      after(async () => {
        await reader?.close();
      });

      it('opens with the expected geometry', () => {
        v.expect?.(reader);
      });

      it('walk() yields exactly the source tree, depth-first in name order, with matching metadata', async () => {
        const walked: Ext4WalkEntry[] = [];
        for await (const e of reader.walk()) walked.push(e);
        const mine = walked.filter((e) => e.path !== '/lost+found' && !e.path.startsWith('/lost+found/'));
        assert.deepEqual(mine.map((e) => e.path), dfsOrder(real.keys()));
        const hostToImage = new Map<bigint, number>();
        const imageToHost = new Map<number, bigint>();
        for (const e of mine) {
          const r = real.get(e.path)!;
          const s = e.stat;
          const where = `${JSON.stringify(e.path)}`;
          assert.equal(s.kind, r.kind, where);
          assert.equal(s.ino, e.ino, where);
          if (e.path !== '/') {
            assert.equal(s.mode, r.mode, `${where} mode`);
            assert.equal(s.uid, r.uid, `${where} uid`);
            assert.equal(s.gid, r.gid, `${where} gid`);
            assert.equal(s.nlink, r.nlink, `${where} nlink`);
          }
          if (r.kind === 'file' || r.kind === 'symlink') assert.equal(s.size, r.size, `${where} size`);
          // mke2fs -d keeps whole seconds only; /future got its nanoseconds from debugfs.
          // (mke2fs gives the root its own creation time.)
          const wantMtime = e.path === '/future' ? r.mtime : { sec: r.mtime.sec, nsec: 0 };
          if (e.path !== '/') assert.deepEqual(s.mtime, wantMtime, `${where} mtime`);
          assert.deepEqual(s.rdev, r.rdev, `${where} rdev`);
          if (s.kind !== 'dir') {
            const h = hostToImage.get(r.hostIno);
            if (h !== undefined) assert.equal(e.ino, h, `${where}: hard links share an inode`);
            hostToImage.set(r.hostIno, e.ino);
            const back = imageToHost.get(e.ino);
            if (back !== undefined) assert.equal(back, r.hostIno, `${where}: distinct files have distinct inodes`);
            imageToHost.set(e.ino, r.hostIno);
          }
        }
        assert.equal(await ino('/hard'), await ino('/a/b/c/f.txt'));
        const future = await reader.stat(await ino('/future'));
        assert.deepEqual(future.mtime, { sec: 2240000000, nsec: 123456789 }); // epoch bits: after 2106 - 2^32
        assert.equal(future.atime.nsec, 5); // (its seconds: reading the source may have moved them)
        assert.deepEqual((await reader.stat(await ino('/past'))).mtime, { sec: -100000000, nsec: 0 });
      });

      it('file contents match the source (sha256), holes read as zeros', async () => {
        for (const r of real.values()) {
          if (r.kind !== 'file') continue;
          const got = await sha256Stream(reader.openFile(await reader.lookup(r.path)));
          assert.equal(got, r.sha256, r.path);
        }
      });

      it('ranged reads of a sparse file equal the same slices of the source', async () => {
        const src = path.join(treeDir, 'holes.bin');
        const size = 20 * 1024 * 1024;
        const fh = await open(src, 'r');
        try {
          const n = await ino('/holes.bin');
          const ranges: [number, number][] = [
            [0, 100],
            [69990, 70010], // data into a hole
            [3 * 1024 * 1024, 3 * 1024 * 1024 + 70100], // hole into unaligned data and out again
            [4096 * 5 - 3, 9 * 1024 * 1024 + 5],
            [9 * 1024 * 1024 + 4095, 9 * 1024 * 1024 + 4097],
            [size - 10, size],
            [size - 1, size + 100], // end is clipped to the file size
            [size, size + 5],
          ];
          for (const [start, end] of ranges) {
            const got = await readAllBytes(reader.openFile(n, { start, end }));
            const len = Math.max(0, Math.min(end, size) - start);
            const want = Buffer.alloc(len);
            if (len > 0) await fh.read(want, 0, len, start);
            assert.ok(got.equals(want), `range [${start}, ${end}): ${got.length} bytes, want ${len}`);
          }
          await assert.rejects(readAllBytes(reader.openFile(n, { start: -1 })), RangeError);
        } finally {
          await fh.close();
        }
      });

      it('symlink targets, fast and slow, equal readlink of the source', async () => {
        for (const r of real.values()) {
          if (r.kind !== 'symlink') continue;
          assert.equal(await reader.readlink(await reader.lookup(r.path)), r.target, r.path);
        }
        assert.deepEqual(await reader.fileExtents(await ino('/sym59')), [], 'a 59-byte target is a fast symlink');
        for (const p of ['/sym60', '/sym300']) {
          const ext = await reader.fileExtents(await ino(p));
          assert.equal(ext.length, 1, `${p} is a slow symlink with one block`);
          assert.equal(ext[0]!.length, 1);
        }
        await assert.rejects(reader.readlink(await ino('/a')), InputError);
      });

      it('xattrs equal the source: in-inode, in an xattr block, a POSIX ACL, security.capability, on a dir', async () => {
        assert.ok(realXattrs.get(B('/acl'))?.has('system.posix_acl_access'), 'the source tree holds an ACL');
        assert.ok(realXattrs.get(B('/cap'))?.has('security.capability'));
        for (const r of real.values()) {
          const st = await reader.stat(await reader.lookup(r.path));
          const want = [...(realXattrs.get(r.path) ?? new Map<string, Buffer>())].map(([k, x]) => [k, x.toString('hex')]).sort();
          const got = [...st.xattrs].map(([k, x]) => [k, x.toString('hex')]).sort();
          assert.deepEqual(got, want, r.path);
        }
        const bigx = await reader.stat(await ino('/bigx'));
        assert.equal(bigx.xattrs.get('user.big')?.length, 700);
      });

      it('a 2000-entry directory lists every name' + (v.htree === true ? ' (htree-indexed)' : ''), async () => {
        const big = await ino('/big');
        const st = await reader.stat(big);
        assert.ok(st.size > 4 * reader.blockSize, 'spans several blocks');
        if (v.htree === true) assert.ok(st.flags & 0x1000, 'has INDEX_FL');
        const names = (await reader.readdir(big)).map((e) => e.name).sort();
        const want = [...real.keys()].filter((p) => p.startsWith('/big/')).map((p) => p.slice(5)).sort();
        assert.equal(names.length, 2000);
        assert.deepEqual(names, want);
      });

      it('readdir(/) and stat agree with debugfs ls -l / and debugfs stat', async () => {
        const [ls] = await debugfs(image, ['ls -l /']);
        const listed = parseDebugfsLs(ls!);
        listed.delete(B('.'));
        listed.delete(B('..'));
        const entries = await reader.readdir(2);
        assert.deepEqual(
          entries.map((e) => [e.name, e.ino]).sort(),
          [...listed].map(([name, x]) => [name, x.ino]).sort(),
        );
        const outputs = await debugfs(image, entries.map((e) => `stat <${e.ino}>`));
        for (const [i, e] of entries.entries()) {
          const d = parseDebugfsStat(outputs[i]!);
          const s = await reader.stat(e.ino);
          const where = JSON.stringify(e.name);
          assert.equal(d.ino, e.ino, where);
          assert.equal(s.mode, d.mode, `${where} mode`);
          assert.equal(s.flags, d.flags, `${where} flags`);
          assert.equal(s.uid, d.uid, `${where} uid`);
          assert.equal(s.gid, d.gid, `${where} gid`);
          assert.equal(s.size, d.size, `${where} size`);
          assert.equal(s.nlink, d.links, `${where} links`);
          assert.equal(s.blocks512, d.blockcount, `${where} blocks`);
          const extra = d.mtime.extra ?? 0;
          assert.deepEqual(s.mtime, { sec: (d.mtime.base | 0) + (extra & 3) * 2 ** 32, nsec: extra >>> 2 }, `${where} mtime`);
          assert.equal(e.fileType, s.kind, `${where} dirent file type`);
          assert.equal(listed.get(e.name)!.mode & 0o170000, { file: 0o100000, dir: 0o40000, symlink: 0o120000, char: 0o20000, block: 0o60000, fifo: 0o10000, socket: 0o140000 }[s.kind]);
        }
      });

      it('block mappings agree with debugfs stat (logical and physical, data blocks only)', async () => {
        const paths = [...real.values()].filter((r) => r.kind === 'file' || r.kind === 'dir').map((r) => r.path).filter((p) => !p.startsWith('/big/'));
        paths.push(B('/sym60'), B('/sym300'));
        const inos = await Promise.all(paths.map((p) => reader.lookup(p)));
        const outputs = await debugfs(image, inos.map((n) => `stat <${n}>`));
        for (const [i, n] of inos.entries()) {
          const want = parseDebugfsStat(outputs[i]!).mapping;
          const got: [number, number][] = [];
          for (const e of await reader.fileExtents(n)) for (let k = 0; k < e.length; k++) got.push([e.logical + k, e.physical + k]);
          assert.deepEqual(got, want, `inode ${n} (${paths[i]})`);
        }
      });

      if (v.extents) {
        it('a fragmented file has a depth-1 extent tree that reads back', async () => {
          const n = await ino('/frag.bin');
          const ext = await reader.fileExtents(n);
          assert.ok(ext.length >= 12, `${ext.length} extents`); // an allocator may split one region
          const [st] = await debugfs(image, [`stat <${n}>`]);
          assert.match(st!, /\(ETB0\)/, 'debugfs shows an extent tree block');
          for (let i = 1; i < ext.length; i++) assert.ok(ext[i]!.logical > ext[i - 1]!.logical);
        });

        it('a file with 1500 extents has a depth-2 extent tree that reads back', async () => {
          const n = await ino('/deep.bin');
          assert.equal((await reader.fileExtents(n)).length, 1500);
          const [st] = await debugfs(image, [`stat <${n}>`]);
          assert.match(st!, /\(ETB1\)/, 'debugfs shows second-level tree blocks');
          // Ranged reads that start deep inside the tree skip the subtrees before them.
          const src = await open(path.join(treeDir, 'deep.bin'), 'r');
          try {
            for (const [start, end] of [[8192 * 1200 + 1000, 8192 * 1201 + 30], [8192 * 1499, 8192 * 1499 + 1024]] as const) {
              const want = Buffer.alloc(end - start);
              await src.read(want, 0, want.length, start);
              assert.ok((await readAllBytes(reader.openFile(n, { start, end }))).equals(want), `[${start}, ${end})`);
            }
          } finally {
            await src.close();
          }
        });
      }

      it('lookup resolves ., .., symlinks inside the image and trailing slashes', async () => {
        const f = await ino('/a/b/c/f.txt');
        assert.equal(await reader.lookup(B('a//b/./c/f.txt')), f);
        assert.equal(await reader.lookup(B('/linkdir/c/f.txt')), f);
        assert.equal(await reader.lookup(B('/abslink/f.txt')), f);
        assert.equal(await reader.lookup(B('/a/b/up/a/b/c/f.txt')), f);
        assert.equal(await reader.lookup(B('/../../a/b/c/f.txt')), f);
        assert.equal(await reader.lookup(B('/updir/b/c/f.txt')), f, "'..' of the root is the root");
        assert.equal(await reader.lookup(B('/a/b/c/../c/f.txt')), f);
        const link = await ino('/linkdir');
        assert.equal((await reader.stat(link)).kind, 'symlink');
        const ab = await ino('/a/b');
        assert.equal(await reader.lookup(B('/linkdir'), { followFinalSymlink: true }), ab);
        assert.equal(await reader.lookup(B('/linkdir/')), ab, 'a trailing slash follows the link');
        assert.equal(await reader.lookup(B('/')), 2);
        assert.equal(await reader.lookup(B('')), 2);
        assert.equal(await reader.lookup(bytesToByteString(Buffer.from('/caf\xe9', 'latin1'))), await ino('/caf\xe9'));
        await assert.rejects(reader.lookup(utf8ToByteString('/café')), NotFoundError, 'names are bytes');
        await assert.rejects(reader.lookup(B('/a/b/nope')), (e: unknown) => e instanceof NotFoundError && /\/a\/b\/nope: no such file or directory/.test(e.message));
        await assert.rejects(reader.lookup(B('/a/b/c/f.txt/')), (e: unknown) => e instanceof NotFoundError && /not a directory/.test(e.message));
        await assert.rejects(reader.lookup(B('/a/b/c/f.txt/x')), NotFoundError);
        await assert.rejects(reader.lookup(B('/dangling'), { followFinalSymlink: true }), NotFoundError);
        assert.equal((await reader.stat(await reader.lookup(B('/dangling')))).kind, 'symlink');
        await assert.rejects(reader.lookup(B('/loop1/x')), (e: unknown) => e instanceof InputError && /too many levels of symbolic links/.test(e.message));
        await assert.rejects(reader.lookup(B('/loop1'), { followFinalSymlink: true }), InputError);
      });

      it('openFile refuses non-files; readdir refuses non-directories', async () => {
        await assert.rejects(readAllBytes(reader.openFile(await ino('/a'))), (e: unknown) => e instanceof InputError && /not a regular file \(dir\)/.test(e.message));
        await assert.rejects(reader.readdir(await ino('/a/b/c/f.txt')), InputError);
        await assert.rejects(reader.stat(reader.superblock.inodesCount + 1), InputError);
      });
    });
  }
});

// --- corrupt images ------------------------------------------------------------------------

const SMALL_TREE = String.raw`
import os, sys
os.chdir(sys.argv[1])
open('data', 'wb').write(os.urandom(3 * 4096))
with open('frag', 'wb') as f:
    for i in range(12):
        f.seek(i * 64 * 1024)
        f.write(b'F' * 5000)
open('x', 'wb').write(b'x')
os.setxattr('x', 'user.big', b'B' * 700)
os.mkdir('sub')
open('sub/y', 'wb').write(b'y')
`;

interface Img {
  readonly buf: Buffer;
  readonly bs: number;
  readonly blocks: number;
  readonly inodesCount: number;
  readonly inodeTable: number;
  readonly inodeSize: number;
  readonly ino: (p: string) => Promise<number>;
  readonly extents: (n: number) => Promise<{ logical: number; physical: number; length: number }[]>;
  readonly xattrBlock: (n: number) => number;
}

async function loadImage(file: string): Promise<Img> {
  const buf = await readFile(file);
  const sb = decodeSuperblock(buf.subarray(1024, 2048));
  const bs = 1024 << sb.logBlockSize;
  const descSize = sb.featureIncompat & INCOMPAT_64BIT ? sb.descSize : 32;
  const gd = decodeGroupDesc(buf, bs * (sb.firstDataBlock + 1), descSize);
  const reader = await Ext4Reader.open(bufferByteSource(buf));
  const inodeOff = (n: number): number => gd.inodeTable * bs + (n - 1) * sb.inodeSize;
  return {
    buf,
    bs,
    blocks: sb.blocksCount,
    inodesCount: sb.inodesCount,
    inodeTable: gd.inodeTable,
    inodeSize: sb.inodeSize,
    ino: (p) => reader.lookup(B(p)),
    extents: (n) => reader.fileExtents(n),
    xattrBlock: (n) => buf.readUInt32LE(inodeOff(n) + 0x68),
  };
}

function inodeAt(img: Img, n: number): number {
  return img.inodeTable * img.bs + (n - 1) * img.inodeSize;
}

/** Opens a patched copy of the image. */
function patched(img: Img, patch: (b: Buffer) => void): Promise<Ext4Reader> {
  const b = Buffer.from(img.buf);
  patch(b);
  return Ext4Reader.open(bufferByteSource(b, 'corrupt.ext4'));
}

/** Offset of the dirent named `name` in a directory block. */
function direntOffset(block: Buffer, name: string): number {
  const at = block.indexOf(Buffer.from(name));
  assert.ok(at >= 8 && block[at - 2] === name.length, `dirent ${name} found`);
  return at - 8;
}

describe('Ext4Reader on corrupt images', function () {
  let tmp: TmpDir | undefined;
  let plain: Img;
  let csum: Img;

  before(async function () {
    requireTool(this, 'mke2fs', 'python3');
    tmp = await tmpDir('ext4-corrupt');
    const tree = path.join(tmp.path, 'tree');
    await mkdir(tree);
    await run('python3', ['-c', SMALL_TREE, tree]);
    const a = path.join(tmp.path, 'plain.ext4');
    const b = path.join(tmp.path, 'csum.ext4');
    await run('mke2fs', ['-q', '-t', 'ext4', '-b', '4096', '-O', '^64bit,^metadata_csum', '-d', tree, a, '8M']);
    await run('mke2fs', ['-q', '-t', 'ext4', '-b', '4096', '-d', tree, b, '8M']);
    plain = await loadImage(a);
    csum = await loadImage(b);
  });
  after(async () => {
    await tmp?.cleanup();
  });

  const inputError = (re: RegExp) => (e: unknown): boolean => {
    assert.ok(e instanceof InputError, `InputError, got ${String(e)}`);
    assert.match(e.message, re);
    assert.ok(!e.message.includes('\n'), 'one line');
    return true;
  };
  const integrityError = (re: RegExp) => (e: unknown): boolean => {
    assert.ok(e instanceof IntegrityError, `IntegrityError, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  };

  it('pristine copies read fine', async () => {
    for (const img of [plain, csum]) {
      const r = await patched(img, () => {});
      let n = 0;
      for await (const e of r.walk()) if (e.stat.kind === 'file') n += (await readAllBytes(r.openFile(e.ino))).length;
      assert.equal(n, 3 * 4096 + 11 * 64 * 1024 + 5000 + 1 + 1);
    }
  });

  it('bad magic, truncation and a too-small source are InputErrors', async () => {
    await assert.rejects(patched(plain, (b) => b.writeUInt16LE(0x1234, 1024 + 0x38)), inputError(/corrupt\.ext4: not an ext4 filesystem \(superblock magic is 0x1234/));
    await assert.rejects(Ext4Reader.open(bufferByteSource(plain.buf.subarray(0, plain.buf.length - 4096), 'cut.ext4')), inputError(/cut\.ext4: image is truncated/));
    await assert.rejects(Ext4Reader.open(bufferByteSource(Buffer.alloc(1500))), inputError(/not an ext4 filesystem/));
  });

  it('unsupported incompat features are refused by name', async () => {
    await assert.rejects(patched(plain, (b) => b.writeUInt32LE(b.readUInt32LE(1024 + 0x60) | 0x8000 | 0x10000, 1024 + 0x60)), inputError(/unsupported ext4 features: inline_data, encrypt/));
    await assert.rejects(patched(plain, (b) => b.writeUInt32LE(b.readUInt32LE(1024 + 0x60) | 0x4, 1024 + 0x60)), inputError(/needs_recovery/));
    await assert.rejects(patched(plain, (b) => b.writeUInt32LE(b.readUInt32LE(1024 + 0x60) | 0x40000000, 1024 + 0x60)), inputError(/0x40000000/));
  });

  it('an extent pointing past the end of the filesystem', async () => {
    const n = await plain.ino('/data');
    const r = await patched(plain, (b) => b.writeUInt32LE(plain.blocks + 5, inodeAt(plain, n) + 0x28 + 12 + 8));
    await assert.rejects(r.fileExtents(n), inputError(new RegExp(`inode ${n}: extent root entry 0 points outside the filesystem`)));
    await assert.rejects(readAllBytes(r.openFile(n)), inputError(/outside the filesystem/));
  });

  it('corrupt extent tree blocks: bad magic, wrong depth, overlap, a cycle', async () => {
    const n = await plain.ino('/frag');
    const root = inodeAt(plain, n) + 0x28;
    assert.equal(plain.buf.readUInt16LE(root + 6), 1, 'frag has a depth-1 tree');
    const leaf = plain.buf.readUInt32LE(root + 12 + 4);
    const at = leaf * plain.bs;
    const expectErr = async (patch: (b: Buffer) => void, re: RegExp): Promise<void> => {
      const r = await patched(plain, patch);
      await assert.rejects(r.fileExtents(n), inputError(re));
      await assert.rejects(readAllBytes(r.openFile(n)), inputError(re));
    };
    await expectErr((b) => b.writeUInt16LE(0xbeef, at), new RegExp(`extent block ${leaf}: bad magic 0xbeef`));
    await expectErr((b) => b.writeUInt16LE(1, at + 6), /depth 1, expected 0/);
    await expectErr((b) => b.writeUInt32LE(b.readUInt32LE(at + 12), at + 24), /entry 1 .* overlaps or is out of order/);
    await expectErr((b) => b.writeUInt16LE(0, at + 12 + 4), /entry 0 has length 0/);
    await expectErr((b) => {
      // A second root index entry that points at the same leaf again.
      b.writeUInt16LE(2, root + 2);
      b.writeUInt32LE(0xfff00000, root + 24);
      b.writeUInt32LE(leaf, root + 24 + 4);
      b.writeUInt16LE(0, root + 24 + 8);
    }, /points to block \d+ a second time \(cycle\)/);
  });

  it('directory entries to unused, reserved or nonexistent inodes; a bad rec_len', async () => {
    const rootBlock = (await plain.extents(2))[0]!.physical * plain.bs;
    const dataAt = rootBlock + direntOffset(plain.buf.subarray(rootBlock, rootBlock + plain.bs), 'data');
    let r = await patched(plain, (b) => b.writeUInt32LE(100, dataAt));
    await assert.rejects(r.lookup(B('/data')), inputError(/inode 100 is not in use/));
    await assert.rejects((async () => {
      for await (const _ of r.walk()) void _;
    })(), inputError(/inode 100 is not in use/));
    r = await patched(plain, (b) => b.writeUInt32LE(7, dataAt));
    await assert.rejects(r.readdir(2), inputError(/points to reserved inode 7/));
    r = await patched(plain, (b) => b.writeUInt32LE(plain.inodesCount + 1, dataAt));
    await assert.rejects(r.readdir(2), inputError(/nonexistent inode/));
    r = await patched(plain, (b) => b.writeUInt16LE(3, rootBlock + 4));
    await assert.rejects(r.readdir(2), inputError(/directory inode 2 block 0 .*bad rec_len 3/));
    r = await patched(plain, (b) => b.writeUInt32LE(12, rootBlock)); // '.' names another inode
    await assert.rejects(r.readdir(2), inputError(/first entry is not '.'/));
  });

  it('a corrupt xattr block', async () => {
    const n = await plain.ino('/x');
    const blk = plain.xattrBlock(n);
    assert.ok(blk > 0);
    const r = await patched(plain, (b) => b.writeUInt32LE(0x12345678, blk * plain.bs));
    await assert.rejects(r.stat(n), inputError(new RegExp(`inode ${n}: xattr block ${blk}: .*bad magic`)));
  });

  it('metadata_csum: mismatches are IntegrityErrors naming the structure; checksums: ignore reads on', async () => {
    await assert.rejects(patched(csum, (b) => flip(b, 1024 + 0x30, 1)), integrityError(/superblock checksum mismatch/));
    const n = await csum.ino('/data');
    const uidAt = inodeAt(csum, n) + 2;
    let r = await patched(csum, (b) => b.writeUInt16LE(4242, uidAt));
    await assert.rejects(r.stat(n), integrityError(new RegExp(`inode ${n} checksum mismatch`)));
    const lax = await Ext4Reader.open(bufferByteSource(patchedBuf(csum, (b) => b.writeUInt16LE(4242, uidAt))), { checksums: 'ignore' });
    assert.equal((await lax.stat(n)).uid, 4242);

    const rootBlock = (await csum.extents(2))[0]!.physical * csum.bs;
    const at = rootBlock + direntOffset(csum.buf.subarray(rootBlock, rootBlock + csum.bs), 'data') + 8;
    r = await patched(csum, (b) => (b[at] = 'D'.charCodeAt(0)));
    await assert.rejects(r.readdir(2), integrityError(/directory inode 2 block 0 .*checksum mismatch/));

    const f = await csum.ino('/frag');
    const leaf = csum.buf.readUInt32LE(inodeAt(csum, f) + 0x28 + 12 + 4);
    r = await patched(csum, (b) => flip(b, leaf * csum.bs + 12 + 12 * 100, 0xff)); // an unused slot, covered by the checksum
    await assert.rejects(r.fileExtents(f), integrityError(new RegExp(`inode ${f}: extent block ${leaf}: checksum mismatch`)));

    const x = await csum.ino('/x');
    const xb = csum.xattrBlock(x);
    r = await patched(csum, (b) => flip(b, xb * csum.bs + csum.bs - 1, 1));
    await assert.rejects(r.stat(x), integrityError(/xattr block \d+ checksum mismatch/));

    const gdAt = csum.bs + 0x0c; // group 0: free blocks count
    r = await patched(csum, (b) => flip(b, gdAt, 1));
    await assert.rejects(r.stat(2), integrityError(/group 0 descriptor checksum mismatch/));
  });
});

function flip(b: Buffer, at: number, mask: number): void {
  b.writeUInt8(b.readUInt8(at) ^ mask, at);
}

function patchedBuf(img: Img, patch: (b: Buffer) => void): Buffer {
  const b = Buffer.from(img.buf);
  patch(b);
  return b;
}
