import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, open, readFile, readlink, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { ByteString } from '../layers/bytes.js';
import type { Attrs } from '../layers/entry.js';
import type { DirInode, Inode } from '../layers/tree.js';
import { requireTool, run, tmpDir, withLoopMount, type TmpDir } from '../testing/tools.js';
import { DataArea, type StoredData } from './data-area.js';
import { FileBlockSink } from './sink.js';
import { writeMetadata } from './writer.js';

const CHUNK = 512 * 1024;
const attrs = (mode: number, more: Partial<Attrs> = {}): Attrs => ({
  mode, uid: 0, gid: 0, mtime: { sec: 1_700_000_000, nsec: 123_456_789 }, xattrs: new Map(), ...more,
});
const name = (s: string): ByteString => Buffer.from(s, 'utf8').toString('latin1') as ByteString;
async function* once(b: Buffer): AsyncIterable<Buffer> {
  // Odd-sized pieces exercise block assembly across chunk boundaries.
  for (let i = 0; i < b.length; i += 10_007) yield b.subarray(i, i + 10_007);
}
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
async function shaFile(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(p)) h.update(c as Buffer);
  return h.digest('hex');
}

interface Expect { content: Map<string, Buffer> }

/** A tree with one of everything the writer must encode. */
async function writeSample(image: string): Promise<Expect> {
  const fh = await open(image, 'w');
  const sink = new FileBlockSink(fh);
  const area = new DataArea(sink, { chunkSize: CHUNK, startBlock: CHUNK / 4096 });
  area.beginLayer();
  const content = new Map<string, Buffer>();
  const file = async (p: string, b: Buffer): Promise<StoredData> => {
    content.set(p, b);
    return area.place({ size: b.length, chunks: once(b) });
  };
  const small = await file('hello.txt', Buffer.from('hello world\n'));
  const withHole = Buffer.alloc(3 * 1024 * 1024 + 100, 7);
  withHole.fill(0, 4096, 3 * 4096);
  const big = await file('big', withHole);
  // 3000 separate extents: a depth-2 extent tree.
  const frag = Buffer.alloc(6000 * 4096);
  for (let i = 0; i < 6000; i += 2) frag.fill(i % 251 + 1, i * 4096, (i + 1) * 4096);
  const fragmented = await file('fragmented', frag);
  const mid = Buffer.alloc(500 * 4096);
  for (let i = 0; i < 500; i += 2) mid.fill(9, i * 4096, (i + 1) * 4096);
  const midFrag = await file('mid-fragmented', mid);
  const tailZero = await file('tail-zero', Buffer.concat([Buffer.alloc(5000, 1), Buffer.alloc(9000)]));
  const root: DirInode<StoredData> = { kind: 'dir', attrs: attrs(0o755), children: new Map() };
  const put = (p: string, n: Inode<StoredData>): void => {
    root.children.set(name(p), n);
  };
  const hello: Inode<StoredData> = {
    kind: 'file',
    attrs: attrs(0o644, { xattrs: new Map([['user.x', Buffer.from('v')], ['security.capability', Buffer.from('0100000200040000000000000000000000000000', 'hex')]]) }),
    data: small,
  };
  put('hello.txt', hello);
  put('hello-link', hello);
  put('big', { kind: 'file', attrs: attrs(0o4755, { uid: 100_000, gid: 70_000 }), data: big });
  put('fragmented', { kind: 'file', attrs: attrs(0o600), data: fragmented });
  put('mid-fragmented', { kind: 'file', attrs: attrs(0o600), data: midFrag });
  put('tail-zero', { kind: 'file', attrs: attrs(0o600), data: tailZero });
  put('empty', { kind: 'file', attrs: attrs(0o2644), data: { size: 0, extents: [], blocks: 0 } });
  put('sym', { kind: 'symlink', attrs: attrs(0o777), target: name('hello.txt') });
  put('sym59', { kind: 'symlink', attrs: attrs(0o777), target: name('y'.repeat(59)) });
  put('sym60', { kind: 'symlink', attrs: attrs(0o777), target: name('z'.repeat(60)) });
  put('fifo', { kind: 'fifo', attrs: attrs(0o644) });
  put('null', { kind: 'char', attrs: attrs(0o666), major: 1, minor: 3 });
  put('bigdev', { kind: 'block', attrs: attrs(0o660), major: 300, minor: 70_000 });
  put('old', { kind: 'file', attrs: attrs(0o644, { mtime: { sec: -86_400 * 365, nsec: 5 } }), data: { size: 0, extents: [], blocks: 0 } });
  put('future', { kind: 'file', attrs: attrs(0o644, { mtime: { sec: 4_102_444_800, nsec: 999_999_999 } }), data: { size: 0, extents: [], blocks: 0 } });
  root.children.set('caf\xe9' as ByteString, { kind: 'file', attrs: attrs(0o644), data: { size: 0, extents: [], blocks: 0 } });
  const many: DirInode<StoredData> = { kind: 'dir', attrs: attrs(0o1777), children: new Map() };
  const bigXattr = new Map([['user.big', Buffer.alloc(300, 1)]]);
  for (let i = 0; i < 3000; i++) {
    many.children.set(name(`file-with-a-longish-name-${i}`), { kind: 'file', attrs: attrs(0o600, { xattrs: bigXattr }), data: { size: 0, extents: [], blocks: 0 } });
  }
  put('many', many);
  await writeMetadata({ root }, area.end, sink, { chunkSize: CHUNK, uuid: Buffer.alloc(16, 1), hashSeed: Buffer.alloc(16, 2), headroom: 0 });
  await fh.close();
  return { content };
}

describe('ext4 writer', function () {
  let dir: TmpDir;
  let image: string;
  let expect: Expect;
  before(async function () {
    dir = await tmpDir('writer');
    image = path.join(dir.path, 'sample.ext4');
    expect = await writeSample(image);
  });
  after(async () => dir?.cleanup());

  it('passes e2fsck -fn with no complaint, and e2fsck -fp changes nothing but the check time', async function () {
    requireTool(this, 'e2fsck');
    const r = await run('e2fsck', ['-fn', image], { allowFail: true });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stdout, /Fix\?|Clear\?|Salvage\?|Relocate\?|Optimize\?/, r.stdout);
    const copy = path.join(dir.path, 'copy.ext4');
    await run('cp', [image, copy]);
    const p = await run('e2fsck', ['-fp', copy], { allowFail: true });
    assert.equal(p.code, 0, p.stdout + p.stderr);
  });

  it('is deterministic', async function () {
    const again = path.join(dir.path, 'again.ext4');
    await writeSample(again);
    assert.equal(await shaFile(again), await shaFile(image));
  });

  it('mounts read-only and shows every inode as written', async function () {
    requireTool(this, 'mount', 'getfattr');
    await withLoopMount(this, image, async (m) => {
      for (const [p, b] of expect.content) assert.equal(sha(await readFile(path.join(m, p))), sha(b), p);
      const st = (p: string) => lstat(path.join(m, p), { bigint: true });
      const hello = await st('hello.txt');
      assert.equal(hello.nlink, 2n);
      assert.equal(hello.ino, (await st('hello-link')).ino);
      assert.equal(hello.mtimeNs, 1_700_000_000_123_456_789n);
      const big = await st('big');
      assert.equal(big.mode & 0o7777n, 0o4755n);
      assert.equal(big.uid, 100_000n);
      assert.equal(big.gid, 70_000n);
      assert.equal(big.blocks, BigInt(Math.ceil((3 * 1024 * 1024 + 100) / 4096) - 2) * 8n, 'zero blocks are holes');
      assert.equal((await st('empty')).mode & 0o7777n, 0o2644n);
      assert.equal(await readlink(path.join(m, 'sym')), 'hello.txt');
      assert.equal(await readlink(path.join(m, 'sym59')), 'y'.repeat(59));
      assert.equal(await readlink(path.join(m, 'sym60')), 'z'.repeat(60));
      assert.ok((await st('fifo')).isFIFO());
      const nul = await st('null');
      assert.ok(nul.isCharacterDevice());
      assert.equal(nul.rdev, (1n << 8n) | 3n);
      const bd = await st('bigdev');
      assert.ok(bd.isBlockDevice());
      const r = await run('stat', ['-c', '%t %T', path.join(m, 'bigdev')]);
      assert.equal(r.stdout.trim(), `${(300).toString(16)} ${(70_000).toString(16)}`);
      assert.equal((await st('old')).mtimeNs, BigInt(-86_400 * 365) * 1_000_000_000n + 5n);
      assert.equal((await st('future')).mtimeNs, 4_102_444_800_999_999_999n);
      const names = await readdir(m, { encoding: 'buffer' });
      assert.ok(names.some((n) => n.equals(Buffer.from([0x63, 0x61, 0x66, 0xe9]))), 'non-UTF-8 name kept as bytes');
      assert.equal((await readdir(path.join(m, 'many'))).length, 3000);
      assert.equal((await st('many')).nlink, 2n);
      assert.equal((await st('.')).nlink, 4n, 'root: . .. many lost+found');
      const x = await run('getfattr', ['--absolute-names', '-d', '-m', '-', '-e', 'hex', path.join(m, 'hello.txt')]);
      assert.match(x.stdout, /security\.capability=0x0100000200040000000000000000000000000000/);
      assert.match(x.stdout, /user\.x=0x76/);
      const y = await run('getfattr', ['--absolute-names', '-d', '-m', '-', '-e', 'hex', path.join(m, 'many', 'file-with-a-longish-name-7')]);
      assert.match(y.stdout, new RegExp(`user\\.big=0x${'01'.repeat(300)}`));
    });
  });
});
