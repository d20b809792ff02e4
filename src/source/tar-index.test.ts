import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { InputError } from '../errors.js';
import { tarOf } from '../testing/tar-writer.js';
import { requireTool, run, type TmpDir, tmpDir } from '../testing/tools.js';
import { indexTarFile, indexTarFileSync, normalizeArchivePath, type TarIndex } from './tar-index.js';

async function dataOf(index: TarIndex, name: string): Promise<string | undefined> {
  const d = index.resolve(name);
  if (d === undefined) return undefined;
  const buf = await readFile(index.archive);
  return buf.subarray(d.offset, d.offset + d.size).toString();
}

describe('source/tar-index', () => {
  let tmp: TmpDir;
  before(async () => {
    tmp = await tmpDir('tar-index');
  });
  after(async () => {
    await tmp.cleanup();
  });

  it('normalises names and refuses names outside the archive', () => {
    assert.equal(normalizeArchivePath('./blobs/sha256/x'), 'blobs/sha256/x');
    assert.equal(normalizeArchivePath('/blobs//sha256/x/'), 'blobs/sha256/x');
    assert.equal(normalizeArchivePath('a/../b'), 'b');
    assert.equal(normalizeArchivePath('../etc/passwd'), undefined);
    assert.equal(normalizeArchivePath('a/../../b'), undefined);
    assert.equal(normalizeArchivePath('./'), undefined);
  });

  it('indexes files by normalised name, data ranges point at the content, sync and async agree', async () => {
    const file = path.join(tmp.path, 'a.tar');
    const long = `${'d'.repeat(120)}/${'f'.repeat(90)}`;
    await writeFile(
      file,
      tarOf([
        { name: './dir/', type: 'dir' },
        { name: './dir/hello', data: 'hello world' },
        { name: 'empty', data: '' },
        { name: long, data: 'deep', longNames: 'prefix' },
        { name: 'dup', data: 'first' },
        { name: 'dup', data: 'second' },
        { name: '../evil', data: 'nope' },
        { name: 'dir/link', type: 'symlink', linkname: 'hello' },
        { name: 'hard', type: 'hardlink', linkname: './dir/hello' },
      ]),
    );
    const index = await indexTarFile(file);
    assert.deepEqual(index.names(), ['dir', 'dir/hello', 'empty', long, 'dup', 'dir/link', 'hard']);
    assert.deepEqual(indexTarFileSync(file).names(), index.names());
    assert.equal(await dataOf(index, 'dir/hello'), 'hello world');
    assert.equal(await dataOf(index, './dir/hello'), 'hello world');
    assert.equal(await dataOf(index, 'empty'), '');
    assert.equal(await dataOf(index, long), 'deep');
    assert.equal(await dataOf(index, 'dup'), 'second');
    assert.equal(await dataOf(index, 'dir/link'), 'hello world');
    assert.equal(index.resolve('dir/link')?.name, 'dir/hello');
    assert.equal(await dataOf(index, 'hard'), 'hello world');
    assert.equal(index.resolve('missing'), undefined);
    assert.equal(index.has('../evil'), false);
    assert.throws(() => index.resolve('dir'), (e: unknown) => e instanceof InputError && /dir is a directory/.test(e.message));
  });

  it('follows one level of symlink only, never out of the archive', async () => {
    const file = path.join(tmp.path, 'links.tar');
    await writeFile(
      file,
      tarOf([
        { name: 'a/target', data: 'x' },
        { name: 'b/escape', type: 'symlink', linkname: '../../outside' },
        { name: 'b/abs', type: 'symlink', linkname: '/a/target' },
        { name: 'b/chain', type: 'symlink', linkname: 'abs' },
        { name: 'b/dangling', type: 'symlink', linkname: '../a/none' },
      ]),
    );
    const index = await indexTarFile(file);
    assert.throws(() => index.resolve('b/escape'), (e: unknown) => e instanceof InputError && /points outside the archive/.test(e.message));
    assert.equal(await dataOf(index, 'b/abs'), 'x');
    assert.throws(() => index.resolve('b/chain'), (e: unknown) => e instanceof InputError && /only one level/.test(e.message));
    assert.equal(index.resolve('b/dangling'), undefined);
  });

  it('reads GNU long names and PAX paths written by GNU tar', async function () {
    requireTool(this, 'tar');
    const src = path.join(tmp.path, 'src');
    const longDir = 'x'.repeat(150);
    await run('mkdir', ['-p', path.join(src, longDir)]);
    await writeFile(path.join(src, longDir, 'file-with-a-long-name'), 'payload');
    await writeFile(path.join(src, 'short'), 'tiny');
    for (const format of ['gnu', 'pax']) {
      const file = path.join(tmp.path, `${format}.tar`);
      await run('tar', ['-C', src, `--format=${format}`, '-cf', file, '.']);
      const index = await indexTarFile(file);
      assert.equal(await dataOf(index, `${longDir}/file-with-a-long-name`), 'payload', format);
      assert.equal(await dataOf(index, 'short'), 'tiny', format);
    }
  });

  it('reads base-256 sizes', async () => {
    const tar = tarOf([{ name: 'big', data: Buffer.alloc(1000, 0x61), base256: ['size'] }]);
    assert.equal(tar[124], 0x80, 'the size field is base-256');
    const file = path.join(tmp.path, 'b256.tar');
    await writeFile(file, tar);
    const index = await indexTarFile(file);
    assert.equal(index.resolve('big')?.size, 1000);
  });

  it('refuses non-tars, compressed archives and truncated archives with InputError', async () => {
    const notTar = path.join(tmp.path, 'not.tar');
    await writeFile(notTar, Buffer.alloc(2048, 0x41));
    await assert.rejects(indexTarFile(notTar), (e: unknown) => e instanceof InputError && /not a tar archive/.test(e.message));
    assert.throws(() => indexTarFileSync(notTar), InputError);

    const tar = tarOf([{ name: 'f', data: Buffer.alloc(5000, 1) }]);
    const gz = path.join(tmp.path, 'a.tar.gz');
    await writeFile(gz, zlib.gzipSync(tar));
    await assert.rejects(indexTarFile(gz), (e: unknown) => e instanceof InputError && /gzip-compressed; decompress it first/.test(e.message));

    const cut = path.join(tmp.path, 'cut.tar');
    await writeFile(cut, tar.subarray(0, 512 + 1024));
    await assert.rejects(indexTarFile(cut), (e: unknown) => e instanceof InputError && /truncated tar archive/.test(e.message) && e.message.includes(cut));

    const corrupt = Buffer.from(tar);
    corrupt[0] = 0x7a; // name changes, checksum no longer matches
    await writeFile(cut, Buffer.concat([tarOf([{ name: 'ok', data: 'x' }]).subarray(0, 1024), corrupt]));
    await assert.rejects(indexTarFile(cut), (e: unknown) => e instanceof InputError && /bad checksum/.test(e.message));
  });
});
