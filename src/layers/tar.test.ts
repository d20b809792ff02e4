import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { InputError, InterruptedError } from '../errors.js';
import { base256, paxRecords, tarHeader, tarOf, type TarItem } from '../testing/tar-writer.js';
import { requireTool, run, skipWith, tmpDir } from '../testing/tools.js';
import { utf8ToByteString } from './bytes.js';
import type { Attrs, LayerEntry } from './entry.js';
import { MAX_META_BYTES, readLayerEntries, type FileBody, type ReadLayerOptions } from './tar.js';

type Read = LayerEntry<Buffer>;

/** The stream in pieces of `chunk` bytes (small pieces exercise every boundary). */
function streamOf(buf: Buffer, chunk = 64 * 1024): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += chunk) parts.push(buf.subarray(i, i + chunk));
  return Readable.from(parts, { objectMode: false });
}

async function collect(body: FileBody): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of body.chunks) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

/** All entries, file bodies read into Buffers. */
async function readAll(tar: Buffer | Readable, options: ReadLayerOptions & { chunk?: number } = {}): Promise<Read[]> {
  const out: Read[] = [];
  const stream = Buffer.isBuffer(tar) ? streamOf(tar, options.chunk) : tar;
  for await (const e of readLayerEntries(stream, options)) {
    if (e.type === 'file') {
      const data = await collect(e.data);
      assert.equal(data.length, e.data.size, `size of ${e.path}`);
      out.push({ ...e, data });
    } else out.push(e);
  }
  return out;
}

const bs = utf8ToByteString;

async function rejectsInput(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof InputError, `expected InputError, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  });
}

describe('readLayerEntries', () => {
  describe('entry types and attributes', () => {
    const tar = tarOf([
      { name: './', type: 'dir', mode: 0o755, mtime: 1_600_000_000 },
      { name: 'etc/', type: 'dir', mode: 0o750, uid: 1, gid: 2, mtime: 1_600_000_001 },
      { name: 'etc/passwd', data: 'root:x:0:0\n', mode: 0o100644, uid: 0, gid: 0, mtime: 1_600_000_002 },
      { name: 'etc/big', data: Buffer.alloc(70_000, 0xab), mode: 0o4755 },
      { name: 'etc/link', type: 'symlink', linkname: '../etc/passwd' },
      { name: 'etc/hard', type: 'hardlink', linkname: './etc/passwd' },
      { name: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'dev/sda', type: 'block', devmajor: 8, devminor: 0, mode: 0o660 },
      { name: 'run/fifo', type: 'fifo', mode: 0o600 },
      { name: 'empty', data: '' },
    ]);
    const A = (mode: number, sec = 0, more: Partial<Attrs> = {}): Attrs => ({ mode, uid: 0, gid: 0, mtime: { sec, nsec: 0 }, xattrs: new Map(), ...more });
    const want: Read[] = [
      { type: 'dir', path: bs(''), attrs: A(0o755, 1_600_000_000) },
      { type: 'dir', path: bs('etc'), attrs: A(0o750, 1_600_000_001, { uid: 1, gid: 2 }) },
      { type: 'file', path: bs('etc/passwd'), attrs: A(0o644, 1_600_000_002), data: Buffer.from('root:x:0:0\n') },
      { type: 'file', path: bs('etc/big'), attrs: A(0o4755), data: Buffer.alloc(70_000, 0xab) },
      { type: 'symlink', path: bs('etc/link'), attrs: A(0o777), target: bs('../etc/passwd') },
      { type: 'hardlink', path: bs('etc/hard'), attrs: A(0o644), target: bs('etc/passwd') },
      { type: 'char', path: bs('dev/null'), attrs: A(0o666), major: 1, minor: 3 },
      { type: 'block', path: bs('dev/sda'), attrs: A(0o660), major: 8, minor: 0 },
      { type: 'fifo', path: bs('run/fifo'), attrs: A(0o600) },
      { type: 'file', path: bs('empty'), attrs: A(0o644), data: Buffer.alloc(0) },
    ];

    it('reads every type with its attributes and content', async () => {
      assert.deepEqual(await readAll(tar), want);
    });

    it('gives the same result whatever the stream chunking', async () => {
      for (const chunk of [1, 7, 511, 512, 513, 4096]) assert.deepEqual(await readAll(tar, { chunk }), want, `chunk ${chunk}`);
    });

    it('reports every stream byte through onBytes', async () => {
      let n = 0;
      await readAll(tar, { onBytes: (k) => (n += k), chunk: 1000 });
      assert.equal(n, tar.length);
    });
  });

  it("reads '7' (contiguous) as a regular file and V7 '\\0' + trailing slash as a directory", async () => {
    const got = await readAll(
      tarOf([
        { name: 'olddir/', typeflag: '\0', format: 'v7' },
        { name: 'oldfile', typeflag: '\0', format: 'v7', data: 'v7' },
        { name: 'cont', typeflag: '7', data: 'c' },
      ]),
    );
    assert.deepEqual(
      got.map((e) => [e.type, e.path, e.type === 'file' ? e.data.toString() : '']),
      [
        ['dir', 'olddir', ''],
        ['file', 'oldfile', 'v7'],
        ['file', 'cont', 'c'],
      ],
    );
  });

  it('accepts a signed-byte header checksum (old Sun tar)', async () => {
    const h = tarHeader({ name: Buffer.from('caf\xe9', 'latin1'), typeflag: '0' });
    let signed = 0;
    for (let i = 0; i < 512; i++) {
      const c = i >= 148 && i < 156 ? 0x20 : (h[i] ?? 0);
      signed += c < 0x80 ? c : c - 256;
    }
    h.write(`${signed.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    const got = await readAll(tarOf([{ raw: h }]));
    assert.deepEqual(Buffer.from(got[0]?.path ?? '', 'latin1'), Buffer.from([0x63, 0x61, 0x66, 0xe9]));
  });

  describe('PAX', () => {
    const unicode = 'app/ünïcødé файл ✓.txt';
    const long = `app/${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(120)}.txt`;
    const cap = Buffer.from('0100000200040000000000000000000000000000', 'hex');
    const binary = Buffer.from([0xff, 0x00, 0x80, 0x0a, 0x3d, 0xc3]); // not UTF-8, has NUL, newline, '='

    it('takes path, linkpath, uid, gid, mtime and size from the records', async () => {
      const got = await readAll(
        tarOf([
          { name: unicode, data: '', pax: { path: unicode } },
          { name: long, data: 'long\n' }, // the writer adds a PAX path record
          { name: 'l', type: 'symlink', linkname: `/${long}` },
          { name: 'ids', data: 'x', pax: { uid: '3000000', gid: '4000000' } },
          { name: 't1', data: '', pax: { mtime: '1795809009.123456789' } },
          { name: 't2', data: '', pax: { mtime: '1.5' } },
          { name: 't3', data: '', pax: { mtime: '-1.25' } },
          { name: 't4', data: '', pax: { mtime: '-0.5' } },
          { name: 't5', data: '', pax: { mtime: '12.1234567891' } }, // truncated to ns
          { name: 't6', data: '', pax: { mtime: '-7' } },
          { name: 'sized', data: 'abc', size: 0, pax: { size: '3' } },
        ]),
      );
      assert.deepEqual(Buffer.from(got[0]?.path ?? '', 'latin1').toString('utf8'), unicode);
      assert.equal(got[1]?.path, long);
      assert.deepEqual(got[1]?.type === 'file' && got[1].data.toString(), 'long\n');
      assert.equal(got[2]?.type === 'symlink' && got[2].target, `/${long}`);
      assert.deepEqual(got[3]?.type === 'file' && [got[3].attrs.uid, got[3].attrs.gid], [3_000_000, 4_000_000]);
      const times = got.slice(4, 10).map((e) => (e.type === 'file' ? e.attrs.mtime : undefined));
      assert.deepEqual(times, [
        { sec: 1_795_809_009, nsec: 123_456_789 },
        { sec: 1, nsec: 500_000_000 },
        { sec: -2, nsec: 750_000_000 },
        { sec: -1, nsec: 500_000_000 },
        { sec: 12, nsec: 123_456_789 },
        { sec: -7, nsec: 0 },
      ]);
      assert.deepEqual(got[10]?.type === 'file' && got[10].data.toString(), 'abc');
    });

    it('keeps binary xattr values byte for byte (security.capability, non-UTF-8, empty)', async () => {
      const [e] = await readAll(
        tarOf([
          {
            name: 'bin/capbin',
            data: 'elf',
            pax: [
              ['SCHILY.xattr.security.capability', cap],
              ['SCHILY.xattr.user.binary', binary],
              ['SCHILY.xattr.user.empty', ''],
              ['SCHILY.xattr.user.ünï', 'text'],
              ['LIBARCHIVE.xattr.user.other', 'aGVsbG8='], // not an xattr for Go/umoci either
            ],
          },
        ]),
      );
      assert.ok(e?.type === 'file');
      assert.deepEqual(
        [...e.attrs.xattrs].map(([k, v]) => [k, v.toString('hex')]),
        [
          ['security.capability', cap.toString('hex')],
          ['user.binary', binary.toString('hex')],
          ['user.empty', ''],
          ['user.ünï', Buffer.from('text').toString('hex')],
        ],
      );
    });

    it('keeps a non-UTF-8 PAX path as its bytes', async () => {
      const raw = Buffer.from([0x64, 0x2f, 0xff, 0xfe]);
      const [e] = await readAll(tarOf([{ name: 'placeholder', data: '', pax: { path: raw } }]));
      assert.deepEqual(Buffer.from(e?.path ?? '', 'latin1'), raw);
    });

    it('applies global headers to every later entry; local records win; an empty local value cancels', async () => {
      const got = await readAll(
        tarOf([
          { name: 'before', data: '' },
          { globalPax: { uid: '77', gid: '88', 'SCHILY.xattr.user.g': 'global' } },
          { name: 'a', data: '' },
          { name: 'b', data: '', pax: { uid: '5' } },
          { name: 'c', data: '', uid: 9, pax: { uid: '' } },
          { globalPax: { gid: '' } },
          { name: 'd', data: '', gid: 3 },
        ]),
      );
      const ids = got.map((e) => (e.type === 'file' ? [e.path, e.attrs.uid, e.attrs.gid, e.attrs.xattrs.get('user.g')?.toString()] : []));
      assert.deepEqual(ids, [
        ['before', 0, 0, undefined],
        ['a', 77, 88, 'global'],
        ['b', 5, 88, 'global'],
        ['c', 9, 88, 'global'],
        ['d', 77, 3, 'global'],
      ]);
    });

    it('rejects malformed records and NUL in a path', async () => {
      const bad = (records: Buffer): Buffer =>
        tarOf([
          { raw: tarHeader({ name: 'x', typeflag: 'x', size: records.length }) },
          { raw: Buffer.concat([records, Buffer.alloc((512 - (records.length % 512)) % 512)]) },
          { name: 'f', data: '' },
        ]);
      await rejectsInput(readAll(bad(Buffer.from('99 path=x\n'))), /PAX header: record length 99/);
      await rejectsInput(readAll(bad(Buffer.from('9 pathx\n'))), /PAX header/);
      await rejectsInput(readAll(bad(Buffer.from('x path=y\n'))), /PAX header: bad record length/);
      await rejectsInput(readAll(tarOf([{ name: 'f', data: '', pax: { path: Buffer.from('a\0b') } }])), /NUL/);
      await rejectsInput(readAll(tarOf([{ name: 'f', data: '', pax: { uid: '-1' } }])), /bad PAX uid/);
      await rejectsInput(readAll(tarOf([{ name: 'f', data: '', pax: { mtime: '1e9' } }])), /bad PAX time/);
    });

    it(`refuses PAX and GNU long-name data over ${MAX_META_BYTES} bytes`, async () => {
      const huge = `${'a/'.repeat(MAX_META_BYTES / 2)}x`;
      await rejectsInput(readAll(tarOf([{ name: huge, data: '' }])), /PAX header of \d+ bytes is larger than 1048576/);
      await rejectsInput(readAll(tarOf([{ name: huge, data: '', longNames: 'gnu' }])), /GNU long name of \d+ bytes is larger/);
    });
  });

  it('reads GNU long names and long link names', async () => {
    const name = `${'n'.repeat(150)}/file`;
    const link = `${'t'.repeat(200)}`;
    const got = await readAll(
      tarOf([
        { name, data: 'gnu', longNames: 'gnu', format: 'gnu' },
        { name: `${name}2`, type: 'symlink', linkname: link, longNames: 'gnu', format: 'gnu' },
      ]),
    );
    assert.equal(got[0]?.path, name);
    assert.equal(got[0]?.type === 'file' && got[0].data.toString(), 'gnu');
    assert.equal(got[1]?.path, `${name}2`);
    assert.equal(got[1]?.type === 'symlink' && got[1].target, link);
  });

  it('joins the USTAR prefix field', async () => {
    const name = `${'p'.repeat(120)}/${'q'.repeat(90)}`;
    const [e] = await readAll(tarOf([{ name, data: 'x', longNames: 'prefix' }]));
    assert.equal(e?.path, name);
  });

  it('reads base-256 numbers, including negative mtimes and large sizes/ids', async () => {
    const got = await readAll(
      tarOf([
        { name: 'neg', data: '', mtime: -86_400 },
        { name: 'b256', data: 'abc', uid: 70_000_000, gid: 5, mtime: 4_000_000_000, base256: ['uid', 'gid', 'size', 'mtime'] },
      ]),
    );
    assert.deepEqual(got[0]?.type === 'file' && got[0].attrs.mtime, { sec: -86_400, nsec: 0 });
    assert.ok(got[1]?.type === 'file');
    assert.deepEqual([got[1].attrs.uid, got[1].attrs.gid, got[1].attrs.mtime.sec, got[1].data.toString()], [70_000_000, 5, 4_000_000_000, 'abc']);
    assert.deepEqual(base256(-1, 4), Buffer.from([0xff, 0xff, 0xff, 0xff]));
  });

  describe('whiteouts', () => {
    it('turns .wh. names into whiteout and opaque entries and skips aufs bookkeeping', async () => {
      const got = await readAll(
        tarOf([
          { name: 'usr/share/.wh.man', data: 'ignored content' },
          { name: 'etc/apt/.wh..wh..opq', data: '' },
          { name: '.wh.top', data: '' },
          { name: '.wh..wh..opq', data: '' },
          { name: '.wh..wh.plnk/', type: 'dir' },
          { name: '.wh..wh.plnk/123.456', data: 'hardlink store' },
          { name: '.wh..wh.aufs', data: '' },
          { name: 'var/.wh.dir-as-symlink', type: 'symlink', linkname: 'x' }, // the typeflag does not matter (as in umoci)
          { name: 'after', data: 'still read' },
        ]),
      );
      assert.deepEqual(
        got.map((e) => [e.type, e.path]),
        [
          ['whiteout', 'usr/share/man'],
          ['opaque', 'etc/apt'],
          ['whiteout', 'top'],
          ['opaque', ''],
          ['whiteout', 'var/dir-as-symlink'],
          ['file', 'after'],
        ],
      );
      assert.equal(got[5]?.type === 'file' && got[5].data.toString(), 'still read');
    });

    it('rejects a whiteout without a name and a whiteout name used as a directory', async () => {
      await rejectsInput(readAll(tarOf([{ name: 'dir/.wh.', data: '' }])), /tar entry "dir\/\.wh\." .*names no file/);
      await rejectsInput(readAll(tarOf([{ name: 'dir/.wh..', data: '' }])), /names no file/);
      await rejectsInput(readAll(tarOf([{ name: '.wh.foo/bar', data: '' }])), /whiteout name .* used as a directory/);
    });
  });

  it('normalises absolute and in-root names, and refuses names that climb out of the root', async () => {
    const got = await readAll(
      tarOf([
        { name: '/abs/path', data: 'a' },
        { name: 'x/../y', data: 'y' },
        { name: 'h', type: 'hardlink', linkname: '/abs/path' },
      ]),
    );
    assert.deepEqual(
      got.map((e) => [e.type, e.path, e.type === 'hardlink' ? e.target : '']),
      [
        ['file', 'abs/path', ''],
        ['file', 'y', ''],
        ['hardlink', 'h', 'abs/path'],
      ],
    );
    await rejectsInput(readAll(tarOf([{ name: '../../etc/passwd', data: 'p' }])), /"\.\.\/\.\.\/etc\/passwd" climbs out of the image root/);
    await rejectsInput(readAll(tarOf([{ name: 'x/../../y', data: 'y' }])), /climbs out of the image root/);
    await rejectsInput(readAll(tarOf([{ name: 'h', type: 'hardlink', linkname: '../../../etc/passwd' }])), /climbs out of the image root/);
  });

  describe('end of archive and truncation', () => {
    const entries: TarItem[] = [
      { name: 'a', data: 'hello' },
      { name: 'b', data: Buffer.alloc(1000, 1) },
    ];

    it('accepts a tar without the end-of-archive blocks (umoci ≤ 0.4.7 layers)', async () => {
      const got = await readAll(tarOf(entries, { footer: false }));
      assert.deepEqual(
        got.map((e) => e.path),
        ['a', 'b'],
      );
    });

    it('accepts a single zero block before EOF, and reads (and ignores) what follows the footer', async () => {
      const one = tarOf(entries, { footer: false });
      assert.equal((await readAll(Buffer.concat([one, Buffer.alloc(512)]))).length, 2);
      const padded = Buffer.concat([tarOf(entries), Buffer.alloc(9 * 1024), Buffer.from('junk after the end')]);
      let n = 0;
      assert.equal((await readAll(padded, { onBytes: (k) => (n += k), chunk: 1000 })).length, 2);
      assert.equal(n, padded.length, 'the whole stream is read, so a digest over it is complete');
    });

    it('rejects a tar cut inside a header, data, padding, or after an extension header', async () => {
      const full = tarOf(entries, { footer: false });
      await rejectsInput(readAll(full.subarray(0, 512 + 512 + 100)), /^truncated tar: header at offset 1024 has only 100 of 512 bytes/);
      await rejectsInput(readAll(full.subarray(0, 512 + 3)), /^truncated tar: entry "a" \(offset 0\) has fewer data bytes than its size 5/);
      await rejectsInput(readAll(full.subarray(0, 512 + 100)), /^truncated tar: entry "a" .*padding/);
      await rejectsInput(readAll(full.subarray(0, 512 * 3 + 999)), /^truncated tar: entry "b"/);
      const paxOnly = tarOf([{ name: 'p', data: '', pax: { uid: '1' } }], { footer: false }).subarray(0, 1024);
      await rejectsInput(readAll(paxOnly), /^truncated tar: .*extension header/);
      await rejectsInput(readAll(tarOf([{ name: 'x', data: 'abc', size: 5000 }], { footer: false })), /^truncated tar: entry "x"/);
    });

    it('names the layer in messages when given a label', async () => {
      await rejectsInput(readAll(tarOf(entries).subarray(0, 600), { label: 'layer sha256:abc' }), /^layer sha256:abc: truncated tar: /);
    });

    it('rejects a corrupt header and data after a single zero block', async () => {
      const t = tarOf(entries);
      t[0] = 0x41; // name changes, checksum does not
      await rejectsInput(readAll(t), /tar header at offset 0: bad header checksum/);
      await rejectsInput(readAll(Buffer.concat([Buffer.alloc(512), tarOf(entries)])), /zero block is followed by a header/);
      await rejectsInput(readAll(Buffer.from('this is not a tar file'.repeat(30))), /bad header checksum/);
    });
  });

  it('rejects unknown entry types, skips volume labels', async () => {
    await rejectsInput(readAll(tarOf([{ name: 'weird', typeflag: 'Z', data: 'z' }])), /tar entry "weird" \(offset 0\): unsupported entry type 'Z'/);
    await rejectsInput(readAll(tarOf([{ name: 'dumpdir', typeflag: 'D', data: '' }])), /unsupported entry type 'D'/);
    const got = await readAll(tarOf([{ name: 'label', typeflag: 'V', format: 'gnu' }, { name: 'f', data: 'x' }]));
    assert.deepEqual(
      got.map((e) => e.path),
      ['f'],
    );
  });

  it('rejects a symlink with an empty target', async () => {
    await rejectsInput(readAll(tarOf([{ name: 's', type: 'symlink', linkname: '' }])), /tar entry "s".*empty target/);
  });

  it('header-only types carry no data whatever their size field says (as Go reads them)', async () => {
    const h = tarHeader({ name: 'd/', typeflag: '5', size: 512 });
    const got = await readAll(tarOf([{ raw: h }, { name: 'f', data: 'next' }]));
    assert.deepEqual(
      got.map((e) => e.path),
      ['d', 'f'],
    );
  });

  describe('file bodies', () => {
    const tar = tarOf([
      { name: 'a', data: Buffer.alloc(300_000, 1) },
      { name: 'b', data: 'bee' },
    ]);

    it('skips a body the consumer did not read, or read only in part', async () => {
      for (const partial of [false, true]) {
        const seen: string[] = [];
        for await (const e of readLayerEntries(streamOf(tar, 4096))) {
          seen.push(e.path);
          if (e.type === 'file' && e.path === 'a' && partial) {
            for await (const c of e.data.chunks) {
              assert.ok(c.length > 0);
              break;
            }
          }
          if (e.path === 'b' && e.type === 'file') assert.equal((await collect(e.data)).toString(), 'bee');
        }
        assert.deepEqual(seen, ['a', 'b']);
      }
    });

    it('refuses to read a body after moving to the next entry, and to iterate it twice', async () => {
      const it = readLayerEntries(streamOf(tar));
      const first = await it.next();
      assert.ok(!first.done && first.value.type === 'file');
      const body = first.value.data;
      const chunks = body.chunks[Symbol.asyncIterator]();
      assert.throws(() => body.chunks[Symbol.asyncIterator](), /only once/);
      await chunks.next();
      await it.next();
      await assert.rejects(chunks.next(), /moved to the next entry/);
      await it.return(undefined);
    });
  });

  describe('abort', () => {
    it('throws InterruptedError when aborted before starting', async () => {
      const ac = new AbortController();
      ac.abort();
      await assert.rejects(readAll(tarOf([{ name: 'a', data: 'x' }]), { signal: ac.signal }), InterruptedError);
    });

    it('throws InterruptedError when aborted while the stream stalls', async () => {
      const ac = new AbortController();
      const stream = new PassThrough();
      stream.write(tarOf([{ name: 'a', data: 'x' }], { footer: false }));
      const seen: string[] = [];
      const p = (async () => {
        for await (const e of readLayerEntries(stream, { signal: ac.signal })) {
          seen.push(e.path);
          ac.abort(); // the stream has nothing more and never ends
        }
      })();
      await assert.rejects(p, InterruptedError);
      assert.deepEqual(seen, ['a']);
      assert.ok(stream.destroyed);
    });
  });

  describe('sparse files made by GNU tar', function () {
    let dir: Awaited<ReturnType<typeof tmpDir>> | undefined;
    const size = 5 * 1024 * 1024 + 123;
    // Many separate data runs, so the old GNU format needs extension headers.
    const runs = Array.from({ length: 12 }, (_, i) => ({ at: i * 400_000 + 4096 * (i % 3), data: Buffer.alloc(5000 + i, 0x41 + i) }));
    let expect: string;

    before(async function () {
      requireTool(this, 'tar');
      const v = await run('tar', ['--version']);
      if (!/GNU tar/.test(v.stdout)) skipWith(this, 'needs GNU tar (tar is not GNU tar)');
      dir = await tmpDir('sparse');
      const file = path.join(dir.path, 'sparse.img');
      const fh = await open(file, 'w');
      for (const r of runs) await fh.write(r.data, 0, r.data.length, r.at);
      await fh.truncate(size);
      await fh.close();
      const logical = Buffer.alloc(size);
      for (const r of runs) r.data.copy(logical, r.at);
      expect = createHash('sha256').update(logical).digest('hex');
      await writeFile(path.join(dir.path, 'plain'), 'plain file after the sparse one\n');
    });
    after(async () => dir?.cleanup());

    for (const [label, args] of [
      ['GNU format (old sparse, typeflag S, extension headers)', ['--format=gnu']],
      ['PAX 0.0', ['--format=pax', '--sparse-version=0.0']],
      ['PAX 0.1', ['--format=pax', '--sparse-version=0.1']],
      ['PAX 1.0', ['--format=pax', '--sparse-version=1.0']],
    ] as const) {
      it(`expands ${label} to the logical content`, async () => {
        const d = dir?.path as string;
        const tarFile = path.join(d, `${label.replace(/\W+/g, '_')}.tar`);
        await run('tar', ['--sparse', ...args, '-C', d, '-cf', tarFile, 'sparse.img', 'plain']);
        const seen: Array<[string, number, string]> = [];
        for await (const e of readLayerEntries(createReadStream(tarFile))) {
          assert.ok(e.type === 'file');
          const h = createHash('sha256');
          let n = 0;
          let holeBytes = 0;
          const holeBuffers = new Set<ArrayBufferLike>();
          for await (const c of e.data.chunks) {
            h.update(c);
            n += c.length;
            if (c.length >= 4096 && c.every((x) => x === 0)) {
              holeBytes += c.length;
              holeBuffers.add(c.buffer);
            }
          }
          assert.equal(n, e.data.size);
          if (e.path === 'sparse.img') {
            // Holes come from one shared zero buffer, not per-file allocations.
            assert.ok(holeBytes > size - 200_000, `hole bytes ${holeBytes}`);
            assert.equal(holeBuffers.size, 1);
          }
          seen.push([e.path, e.data.size, h.digest('hex')]);
        }
        assert.deepEqual(seen, [
          ['sparse.img', size, expect],
          ['plain', 32, createHash('sha256').update('plain file after the sparse one\n').digest('hex')],
        ]);
      });
    }

    it('rejects a sparse map that does not match the stored data', async () => {
      const records = paxRecords([
        ['GNU.sparse.major', '1'],
        ['GNU.sparse.minor', '0'],
        ['GNU.sparse.name', 'real'],
        ['GNU.sparse.realsize', '100'],
      ]);
      const map = Buffer.alloc(512);
      map.write('1\n10\n20\n'); // one fragment of 20 bytes, but 30 are stored
      const tar = tarOf([
        { raw: tarHeader({ name: 'PaxHeaders/x', typeflag: 'x', size: records.length }) },
        { raw: Buffer.concat([records, Buffer.alloc(512 - records.length)]) },
        { name: 'GNUSparseFile.1/real', data: Buffer.concat([map, Buffer.alloc(30, 1)]) },
      ]);
      await rejectsInput(readAll(tar), /tar entry "real".*sparse map describes 20 stored bytes, the entry holds 30/);
    });
  });
});
