import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, open, readFile, readlink, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { buildImage } from '../index.js';
import { Ext4Reader } from '../ext4/reader.js';
import { openFileByteSource } from '../ext4/byte-source.js';
import { byteStringToBytes } from '../layers/bytes.js';
import { compareTrees, formatDiffs } from '../testing/compare-trees.js';
import { writeOciLayout } from '../testing/oci-writer.js';
import { tarOf, type TarItem } from '../testing/tar-writer.js';
import { requireCorpus, requireRoot, requireTool, run, tmpDir, umociUnpack, withLoopMount, type TmpDir } from '../testing/tools.js';

const CHUNK = 512 * 1024;

async function sha256File(p: string | Buffer): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(p)) h.update(c as Buffer);
  return h.digest('hex');
}

async function fsckClean(image: string): Promise<void> {
  const r = await run('e2fsck', ['-fn', image], { allowFail: true });
  assert.equal(r.code, 0, `e2fsck -fn ${image}:\n${r.stdout}${r.stderr}`);
  assert.doesNotMatch(r.stdout, /\? no|WARNING/, r.stdout);
}

/** The image, mounted, equals `umoci unpack` of the same layout (lost+found the only extra). */
async function equalsUmoci(ctx: Mocha.Context, image: string, layout: string, tag: string): Promise<void> {
  const u = await umociUnpack(ctx, layout, tag);
  try {
    await withLoopMount(ctx, image, async (m) => {
      const diffs = await compareTrees(u.rootfs, m, { ignore: ['lost+found'] });
      assert.equal(diffs.length, 0, formatDiffs(diffs));
      const lf = await lstat(path.join(m, 'lost+found'));
      assert.ok(lf.isDirectory());
    });
  } finally {
    await u.cleanup();
  }
}

/** chunkyard's own reader sees what the kernel sees, inode by inode. */
async function readerAgreesWithMount(ctx: Mocha.Context, image: string): Promise<number> {
  const reader = await Ext4Reader.open(await openFileByteSource(image));
  let n = 0;
  try {
    await withLoopMount(ctx, image, async (m) => {
      for await (const e of reader.walk()) {
        // Names are bytes: build the host path as a Buffer.
        const host = Buffer.concat([Buffer.from(m), byteStringToBytes(e.path)]);
        const st = await lstat(host, { bigint: true });
        const where = byteStringToBytes(e.path).toString('utf8');
        assert.equal(Number(st.mode & 0o7777n), e.stat.mode, `${where} mode`);
        assert.equal(Number(st.uid), e.stat.uid, `${where} uid`);
        assert.equal(Number(st.gid), e.stat.gid, `${where} gid`);
        assert.equal(Number(st.nlink), e.stat.nlink, `${where} nlink`);
        assert.equal(st.mtimeNs, BigInt(e.stat.mtime.sec) * 1_000_000_000n + BigInt(e.stat.mtime.nsec), `${where} mtime`);
        if (e.stat.kind === 'file') {
          assert.ok(st.isFile(), where);
          assert.equal(Number(st.size), e.stat.size, `${where} size`);
          const h = createHash('sha256');
          for await (const c of reader.openFile(e.ino)) h.update(c as Buffer);
          assert.equal(h.digest('hex'), await sha256File(host), `${where} content`);
        } else if (e.stat.kind === 'symlink') {
          assert.deepEqual(byteStringToBytes(await reader.readlink(e.ino)), await readlink(host, { encoding: 'buffer' }), `${where} target`);
        }
        n++;
      }
    });
  } finally {
    await reader.close();
  }
  return n;
}

describe('build: the corpus', function () {
  const built = new Map<string, string>();
  let dir: TmpDir;
  let corpus: string;
  before(async function () {
    corpus = requireCorpus(this);
    dir = await tmpDir('build-corpus');
    for (const tag of ['base', 'py', 'py-app']) {
      const out = path.join(dir.path, `${tag}.ext4`);
      await buildImage(`oci:${corpus}:${tag}`, out);
      built.set(tag, out);
    }
  });
  after(async () => dir?.cleanup());

  for (const tag of ['base', 'py', 'py-app']) {
    it(`${tag}: e2fsck -fn is silent`, async function () {
      requireTool(this, 'e2fsck');
      await fsckClean(built.get(tag)!);
    });
    it(`${tag}: mounted read-only, equals umoci unpack`, async function () {
      requireRoot(this, 'loop mounts and umoci ownership need root');
      requireTool(this, 'umoci', 'python3');
      await equalsUmoci(this, built.get(tag)!, corpus, tag);
    });
  }

  it('py-app: chunkyard\'s ext4 reader agrees with the mount on every inode', async function () {
    requireRoot(this, 'loop mounts need root');
    const n = await readerAgreesWithMount(this, built.get('py-app')!);
    assert.ok(n > 5000, `walked ${n} inodes`);
  });

  it('gives byte-identical images from two runs and from oci, oci-archive, docker-archive and zstd copies', async function () {
    requireTool(this, 'skopeo');
    const want = await sha256File(built.get('py')!);
    const again = path.join(dir.path, 'again.ext4');
    await buildImage(`oci:${corpus}:py`, again);
    assert.equal(await sha256File(again), want, 'second run');
    const sources: Array<[string, string]> = [
      [`oci-archive:${dir.path}/py-oci.tar:py`, `oci-archive:${dir.path}/py-oci.tar:py`],
      [`docker-archive:${dir.path}/py-docker.tar:corpus/py:latest`, `docker-archive:${dir.path}/py-docker.tar`],
      [`oci:${dir.path}/zstd:py`, `oci:${dir.path}/zstd:py`],
    ];
    await run('skopeo', ['copy', '-q', `oci:${corpus}:py`, sources[0]![0]]);
    await run('skopeo', ['copy', '-q', `oci:${corpus}:py`, sources[1]![0]]);
    await run('skopeo', ['copy', '-q', '--dest-compress-format', 'zstd', `oci:${corpus}:py`, sources[2]![0]]);
    for (const [, ref] of sources) {
      const out = path.join(dir.path, 'copy.ext4');
      await buildImage(ref, out);
      assert.equal(await sha256File(out), want, ref);
    }
    // A bare path is detected as the same image.
    const out = path.join(dir.path, 'bare.ext4');
    await buildImage(`${dir.path}/py-docker.tar`, out);
    assert.equal(await sha256File(out), want, 'bare docker-archive path');
  });

  it('dedup: every data chunk of base is found again in py, at 512 KiB', async function () {
    const base = await chunkSet(built.get('base')!);
    const py = await chunkSet(built.get('py')!);
    let shared = 0;
    for (const h of py.hashes) if (base.hashes.has(h)) shared++;
    // base's data chunks: 1 .. metadata start (chunk 0 is superblock + descriptors).
    const baseDataChunks = base.order.slice(1, base.metadataChunk);
    const missing = baseDataChunks.filter((h) => h !== undefined && !py.hashes.has(h));
    assert.equal(missing.length, 0, `${missing.length} of base's ${baseDataChunks.length} data chunks are not in py`);
    const layerShare = (base.metadataChunk - 1) / (py.metadataChunk - 1);
    process.stdout.write(
      `      py: ${shared}/${py.nonZero} non-zero chunks (${((100 * shared) / py.nonZero).toFixed(1)}%) also in base; ` +
        `base's layer is ${(100 * layerShare).toFixed(1)}% of py's data chunks; py adds ${py.nonZero - shared} chunks ` +
        `(${((py.nonZero - shared) / 2).toFixed(1)} MiB)\n`,
    );
  });
});

interface ChunkSet {
  readonly hashes: Set<string>;
  /** Hash per chunk index; undefined for all-zero chunks. */
  readonly order: (string | undefined)[];
  readonly nonZero: number;
  /** First chunk of metadata: where the reader's superblock-recorded layout puts it. */
  readonly metadataChunk: number;
}

async function chunkSet(image: string): Promise<ChunkSet> {
  const zero = Buffer.alloc(CHUNK);
  const hashes = new Set<string>();
  const order: (string | undefined)[] = [];
  let nonZero = 0;
  const fh = await open(image, 'r');
  try {
    const c = Buffer.alloc(CHUNK);
    for (let off = 0; ; off += CHUNK) {
      const { bytesRead } = await fh.read(c, 0, CHUNK, off);
      if (bytesRead === 0) break;
      const piece = c.subarray(0, bytesRead);
      if (piece.equals(zero.subarray(0, bytesRead))) {
        order.push(undefined);
        continue;
      }
      const h = createHash('sha256').update(piece).digest('hex');
      hashes.add(h);
      order.push(h);
      nonZero++;
    }
  } finally {
    await fh.close();
  }
  // Metadata starts with the root directory's first block (the writer allocates it first).
  const reader = await Ext4Reader.open(await openFileByteSource(image));
  const [first] = await reader.fileExtents(2);
  await reader.close();
  return { hashes, order, nonZero, metadataChunk: Math.floor((first!.physical * 4096) / CHUNK) };
}

describe('build: a synthetic image with every layer edge case', function () {
  const T = 1_700_000_000;
  const cap = Buffer.from('0100000200040000000000000000000000000000', 'hex');
  let dir: TmpDir;
  let layout: string;
  let image: string;
  before(async function () {
    requireTool(this, 'tar'); // GNU tar makes the PAX sparse layer
    dir = await tmpDir('build-synth');
    layout = path.join(dir.path, 'layout');
    const big = Buffer.alloc(1_300_000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
    const l1: TarItem[] = [
      { name: './', type: 'dir', mode: 0o755, mtime: T },
      { name: 'etc/', type: 'dir', mtime: T },
      { name: 'etc/passwd', data: 'root:x:0:0::/root:/bin/sh\n', mtime: T },
      { name: 'etc/pwlink', type: 'hardlink', linkname: 'etc/passwd' },
      { name: 'bin/', type: 'dir', mtime: T },
      { name: 'bin/sh', data: '#!shell\n', mode: 0o755, mtime: T },
      { name: 'bin/sh-hard', type: 'hardlink', linkname: 'bin/sh' },
      { name: 'usr/', type: 'dir', mtime: T },
      { name: 'usr/lib/', type: 'dir', mtime: T },
      { name: 'usr/lib/libbig.so', data: big, mtime: T },
      { name: 'lib', type: 'symlink', linkname: 'usr/lib', mtime: T },
      { name: 'abslink', type: 'symlink', linkname: '/etc', mtime: T },
      { name: `longtarget`, type: 'symlink', linkname: `/usr/lib/${'t'.repeat(150)}`, mtime: T },
      { name: 'dev/', type: 'dir', mtime: T },
      { name: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666, mtime: T },
      { name: 'dev/sda', type: 'block', devmajor: 8, devminor: 0, mode: 0o660, mtime: T },
      { name: 'dev/big', type: 'block', devmajor: 259, devminor: 70_000, mode: 0o660, mtime: T },
      { name: 'run/', type: 'dir', mtime: T },
      { name: 'run/fifo', type: 'fifo', mode: 0o600, mtime: T },
      { name: 'app/', type: 'dir', mtime: T },
      { name: 'app/cap', data: 'cap', mode: 0o755, mtime: T, pax: { 'SCHILY.xattr.security.capability': cap, 'SCHILY.xattr.user.note': 'hi' } },
      { name: 'app/bigxattr', data: 'x', mtime: T, pax: { 'SCHILY.xattr.user.big': Buffer.alloc(900, 0x5a) } },
      { name: `app/${'p'.repeat(70)}/`, type: 'dir', mtime: T },
      { name: `app/${'p'.repeat(70)}/${'q'.repeat(80)}.txt`, data: 'pax long name', mtime: T },
      { name: `app/${'g'.repeat(130)}`, data: 'gnu long name', longNames: 'gnu', format: 'gnu', mtime: T },
      { name: 'app/ids', data: 'ids', pax: { uid: '3000000', gid: '4000000', mtime: '1700000000.123456789' } },
      { name: 'app/suid', data: 's', mode: 0o4755, mtime: T },
      { name: 'app/sgid/', type: 'dir', mode: 0o2775, mtime: T },
      { name: 'tmp/', type: 'dir', mode: 0o1777, mtime: T },
      { name: 'old/', type: 'dir', mtime: T },
      { name: 'old/a', data: 'a', mtime: T },
      { name: 'old/b', data: 'b', mtime: T },
      { name: 'old/sub/', type: 'dir', mtime: T },
      { name: 'old/sub/c', data: 'c', mtime: T },
      { name: 'opq/', type: 'dir', mtime: T },
      { name: 'opq/x', data: 'x', mtime: T },
      { name: 'opq/y/', type: 'dir', mtime: T },
      { name: 'f2d', data: 'file becomes dir', mtime: T },
      { name: 'd2f/', type: 'dir', mtime: T },
      { name: 'd2f/child', data: 'gone', mtime: T },
      { name: 'chmodme', data: 'meta', mode: 0o644, mtime: T },
      { name: '/abs/', type: 'dir', mtime: T },
      { name: '/abs/path', data: 'absolute name', mtime: T },
      { name: 'x/', type: 'dir', mtime: T },
      { name: 'x/../dotdot-in-root', data: 'in root', mtime: T },
    ];
    const l2: TarItem[] = [
      { name: 'bin/sh-lower-link', type: 'hardlink', linkname: 'bin/sh' },
      { name: 'etc/passwd', data: 'replaced\n', mtime: T + 1 },
      { name: 'old/.wh.a' },
      { name: 'old/.wh.sub' },
      { name: 'opq/z', data: 'new z', mtime: T },
      { name: 'opq/.wh..wh..opq' },
      { name: 'f2d/', type: 'dir', mtime: T },
      { name: 'f2d/child', data: 'now a dir', mtime: T },
      { name: 'd2f', data: 'now a file', mtime: T },
      { name: 'chmodme', data: 'meta', mode: 0o600, uid: 1000, gid: 1000, mtime: T + 5 },
      { name: 'etc/', type: 'dir', mode: 0o750, mtime: T + 9 },
      { name: 'lib/viasym', data: 'written through lib -> usr/lib', mtime: T },
      { name: 'abslink/viaabs', data: 'written through /etc', mtime: T },
    ];
    // A PAX sparse file made by real GNU tar.
    const sp = path.join(dir.path, 'sparse-src');
    await mkdir(path.join(sp, 'data'), { recursive: true });
    const sparse = path.join(sp, 'data', 'sparse.img');
    await writeFile(sparse, '');
    await truncate(sparse, 16 * 1024 * 1024);
    const fh = await open(sparse, 'r+');
    await fh.write(Buffer.from('middle'), 0, 6, 8 * 1024 * 1024);
    await fh.close();
    await run('tar', ['--sparse', '--format=pax', '--numeric-owner', '--owner=0', '--group=0', '--mtime=@1700000000', '-C', sp, '-cf', path.join(dir.path, 'sparse.tar'), 'data']);
    const l3 = await readFile(path.join(dir.path, 'sparse.tar'));
    // umoci <= 0.4.7 writes layers without the end-of-archive blocks.
    const l4 = tarOf([{ name: 'nofooter', data: 'no end blocks', mtime: T }], { footer: false });
    await writeOciLayout(layout, [{ tag: 'edge', layers: [tarOf(l1), tarOf(l2), l3, l4], compression: 'gzip' }]);
    image = path.join(dir.path, 'edge.ext4');
    await buildImage(`oci:${layout}:edge`, image);
  });
  after(async () => dir?.cleanup());

  it('e2fsck -fn is silent', async function () {
    requireTool(this, 'e2fsck');
    await fsckClean(image);
  });

  it('mounted read-only, equals umoci unpack', async function () {
    requireRoot(this, 'loop mounts and umoci ownership need root');
    requireTool(this, 'umoci', 'python3');
    await equalsUmoci(this, image, layout, 'edge');
  });

  it('chunkyard\'s reader agrees with the mount', async function () {
    requireRoot(this, 'loop mounts need root');
    assert.ok((await readerAgreesWithMount(this, image)) > 30);
  });

  it('keeps what the layers say, checked directly', async function () {
    requireRoot(this, 'loop mounts need root');
    await withLoopMount(this, image, async (m) => {
      const st = (p: string) => lstat(path.join(m, p), { bigint: true });
      assert.equal((await st('etc/pwlink')).nlink, 1n, 'replaced target: the link keeps the old inode');
      assert.equal(await readFile(path.join(m, 'etc/pwlink'), 'utf8'), 'root:x:0:0::/root:/bin/sh\n');
      assert.equal((await st('bin/sh')).nlink, 3n);
      assert.equal((await st('bin/sh')).ino, (await st('bin/sh-lower-link')).ino);
      assert.equal(await readFile(path.join(m, 'usr/lib/viasym'), 'utf8'), 'written through lib -> usr/lib');
      assert.equal(await readFile(path.join(m, 'etc/viaabs'), 'utf8'), 'written through /etc');
      assert.equal((await st('chmodme')).mode & 0o7777n, 0o600n);
      assert.equal((await st('chmodme')).uid, 1000n);
      assert.equal((await st('etc')).mode & 0o7777n, 0o750n);
      assert.equal((await st('app/ids')).mtimeNs, 1_700_000_000_123_456_789n);
      assert.equal((await st('app/ids')).uid, 3_000_000n);
      assert.equal((await st('data/sparse.img')).size, 16n * 1024n * 1024n);
      assert.ok((await st('data/sparse.img')).blocks <= 8n, 'sparse file stored as holes');
      assert.equal(await readFile(path.join(m, 'nofooter'), 'utf8'), 'no end blocks');
      await assert.rejects(lstat(path.join(m, 'old/a')));
      await assert.rejects(lstat(path.join(m, 'old/sub')));
      await assert.rejects(lstat(path.join(m, 'opq/x')));
      assert.equal(await readFile(path.join(m, 'opq/z'), 'utf8'), 'new z');
    });
  });

  it('aligns a file of a chunk or more to a chunk boundary', async function () {
    const reader = await Ext4Reader.open(await openFileByteSource(image));
    try {
      const ino = await reader.lookup(Buffer.from('/usr/lib/libbig.so').toString('latin1') as never);
      const [first] = await reader.fileExtents(ino);
      assert.equal((first!.physical * 4096) % CHUNK, 0);
    } finally {
      await reader.close();
    }
  });
});
