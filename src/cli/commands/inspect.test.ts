import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, symlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { captureIO } from '../../testing/capture.js';
import { debugfs, parseDebugfsStat } from '../../testing/ext4-fixtures.js';
import { requireTool, run, tmpDir, type TmpDir } from '../../testing/tools.js';
import { main } from '../main.js';
import { isoTime, modeString } from './inspect.js';

/** Runs the CLI in-process; returns exit code and captured output. */
async function cli(argv: string[], opts: { slowStdout?: boolean } = {}) {
  const c = captureIO(opts.slowStdout === true ? { slowStdout: true } : {});
  const code = await main(argv, c.io);
  return { code, stdout: c.stdout(), text: c.stdoutText(), stderr: c.stderr(), maxBuffered: c.maxBuffered() };
}

describe('chunkyard ls / cat / stat', function () {
  let tmp: TmpDir | undefined;
  let image = '';
  let tree = '';
  const blob = randomBytes(3 * 1024 * 1024 + 123);

  before(async function () {
    requireTool(this, 'mke2fs', 'debugfs');
    tmp = await tmpDir('inspect');
    tree = path.join(tmp.path, 'tree');
    await mkdir(path.join(tree, 'etc'), { recursive: true });
    await mkdir(path.join(tree, 'bin'));
    await mkdir(path.join(tree, 'data'));
    await mkdir(path.join(tree, 'many'));
    await writeFile(path.join(tree, 'etc', 'hostname'), 'box\n');
    await writeFile(path.join(tree, 'bin', 'tool'), '#!/bin/sh\necho hi\n');
    await chmod(path.join(tree, 'bin', 'tool'), 0o755);
    await writeFile(path.join(tree, 'data', 'blob.bin'), blob);
    for (let i = 0; i < 300; i++) await writeFile(path.join(tree, 'many', `f${String(i).padStart(3, '0')}`), '');
    await symlink('etc/hostname', path.join(tree, 'link'));
    await writeFile(Buffer.from(path.join(tree, 'caf\xe9'), 'latin1'), 'latin1 name');
    await utimes(path.join(tree, 'etc', 'hostname'), 1700000000, 1700000000);
    image = path.join(tmp.path, 'img.ext4');
    await run('mke2fs', ['-q', '-t', 'ext4', '-b', '4096', '-d', tree, image, '16M']);
  });
  after(async () => {
    await tmp?.cleanup();
  });

  it('ls lists a directory in byte order, one name per line', async () => {
    const r = await cli(['ls', image]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.deepEqual(r.text.split('\n'), ['bin', 'caf\ufffd', 'data', 'etc', 'link', 'lost+found', 'many', '']);
    const sub = await cli(['ls', image, '/etc']);
    assert.equal(sub.text, 'hostname\n');
    const viaLink = await cli(['ls', image, 'link']);
    assert.equal(viaLink.text, '/link\n', 'a non-directory is shown by the path given');
  });

  it('ls -l shows mode, links, owner, size, ISO mtime and symlink targets', async () => {
    const r = await cli(['ls', '-l', image]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.text.trimEnd().split('\n');
    assert.equal(lines.length, 7);
    const uid = process.getuid?.() ?? 0;
    const byName = new Map(lines.map((l) => [l.split(' ').at(-1)!, l]));
    assert.match(lines.find((l) => l.includes(' link -> '))!, /^lrwxrwxrwx +1 +\d+ +\d+ +12 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ link -> etc\/hostname$/);
    assert.match(byName.get('bin')!, new RegExp(`^drwxr-xr-x +2 +${uid} +\\d+ +4096 \\S+Z bin$`));
    assert.match(byName.get('lost+found')!, /^drwx------ +2 /);
    const etc = await cli(['ls', '-l', image, '/etc']);
    assert.match(etc.text, /^-rw-r--r-- 1 \d+ \d+ 4 2023-11-14T22:13:20Z hostname\n$/);
    const bin = await cli(['ls', '-l', image, '/bin']);
    assert.match(bin.text, /^-rwxr-xr-x /);
    const link = await cli(['ls', '-l', image, '/link']);
    assert.match(link.text, /^lrwxrwxrwx .* \/link -> etc\/hostname\n$/, '-l shows a symlink itself');
  });

  it('ls -R lists every directory under a header', async () => {
    const r = await cli(['ls', '-R', image, '/etc']);
    assert.equal(r.text, '/etc:\nhostname\n');
    const all = await cli(['ls', '-R', image]);
    assert.equal(all.code, 0);
    const headers = all.text.split('\n').filter((l) => l.endsWith(':'));
    assert.deepEqual(headers, ['/:', '/bin:', '/data:', '/etc:', '/lost+found:', '/many:']);
  });

  it('ls -R --json gives every path with type, octal mode, owner, size, nlink, mtime, target', async () => {
    const r = await cli(['ls', '-R', '--json', image]);
    assert.equal(r.code, 0, r.stderr);
    const items = JSON.parse(r.text) as { path: string; type: string; mode: string; uid: number; gid: number; size: number; nlink: number; mtime: string; target?: string }[];
    assert.equal(items.length, 7 + 300 + 3); // top level, many/*, bin/tool, data/blob.bin, etc/hostname (lost+found is empty)
    const byPath = new Map(items.map((i) => [i.path, i]));
    for (const i of items) {
      assert.match(i.mode, /^[0-7]{4}$/);
      assert.match(i.mtime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
    }
    const blobItem = byPath.get('/data/blob.bin')!;
    assert.equal(blobItem.type, 'file');
    assert.equal(blobItem.size, blob.length);
    assert.equal(blobItem.mode, '0644');
    assert.equal(blobItem.nlink, 1);
    const linkItem = byPath.get('/link')!;
    assert.equal(linkItem.type, 'symlink');
    assert.equal(linkItem.target, 'etc/hostname');
    assert.equal(linkItem.size, 12);
    assert.equal(linkItem.mode, '0777');
    assert.equal(byPath.get('/etc/hostname')!.mtime, '2023-11-14T22:13:20.000000000Z');
    assert.equal(byPath.get('/many')!.type, 'dir');
    const st = await lstat(path.join(tree, 'bin', 'tool'));
    assert.equal(byPath.get('/bin/tool')!.uid, st.uid);
    assert.equal(byPath.get('/bin/tool')!.mode, '0755');
    // Without -R: just the children.
    const flat = JSON.parse((await cli(['ls', '--json', image, '/etc'])).text) as { path: string }[];
    assert.deepEqual(flat.map((i) => i.path), ['/etc/hostname']);
  });

  it('cat streams file bytes exactly, respecting backpressure', async () => {
    const r = await cli(['cat', image, '/data/blob.bin'], { slowStdout: true });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(blob), 'bytes equal');
    assert.ok(r.maxBuffered <= 1024 * 1024, `stdout buffered at most ${r.maxBuffered} bytes`);
    const two = await cli(['cat', image, '/link', '/etc/hostname']);
    assert.equal(two.text, 'box\nbox\n', 'symlinks followed, several paths concatenated');
  });

  it('stat --json gives inode number, type, mode, owner, size, times, xattrs, extents count', async () => {
    const r = await cli(['stat', '--json', image, '/data/blob.bin']);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.text) as Record<string, unknown>;
    const [dbg] = await debugfs(image, ['stat /data/blob.bin']);
    const d = parseDebugfsStat(dbg!);
    assert.equal(s['ino'], d.ino);
    assert.equal(s['type'], 'file');
    assert.equal(s['mode'], '0644');
    assert.equal(s['size'], blob.length);
    assert.equal(s['nlink'], 1);
    assert.equal(s['blocks512'], d.blockcount);
    assert.equal(s['flags'], `0x${d.flags.toString(16)}`);
    assert.equal(typeof s['extents'], 'number');
    assert.ok((s['extents'] as number) >= 1);
    assert.deepEqual(s['xattrs'], {});
    for (const k of ['atime', 'mtime', 'ctime']) assert.match(String(s[k]), /Z$/);
    const link = JSON.parse((await cli(['stat', '--json', image, '/link'])).text) as Record<string, unknown>;
    assert.equal(link['type'], 'symlink');
    assert.equal(link['target'], 'etc/hostname');
    assert.equal(link['extents'], 0, 'fast symlink: no blocks');
    const deref = JSON.parse((await cli(['stat', '--json', '-L', image, '/link'])).text) as Record<string, unknown>;
    assert.equal(deref['type'], 'file');
    assert.equal(deref['size'], 4);
  });

  it('stat prints a human summary', async () => {
    const r = await cli(['stat', image, '/etc/hostname']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.text, /^ {2}File: \/etc\/hostname\n {2}Type: file\n Inode: \d+ {2}Links: 1 /);
    assert.match(r.text, /Mode: 0644 \(-rw-r--r--\)/);
    assert.match(r.text, /Modify: 2023-11-14T22:13:20\.000000000Z/);
  });

  it('a missing path exits 4 with one line on stderr naming it', async () => {
    for (const argv of [['ls', image, '/nope/x'], ['cat', image, '/etc/nope'], ['stat', image, '/nope']]) {
      const r = await cli(argv);
      assert.equal(r.code, 4, argv.join(' '));
      const lines = r.stderr.split('\n').filter((l) => l !== '');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, new RegExp(`^chunkyard: .*${argv[2]!.replace(/\//g, '\\/')}: no such file or directory$`));
    }
    const json = await cli(['stat', '--json', image, '/nope']);
    assert.equal(json.code, 4);
    assert.equal((JSON.parse(json.text) as { error: { code: string } }).error.code, 'not-found');
  });

  it('cat of a directory exits 3 ("is a directory")', async () => {
    const r = await cli(['cat', image, '/etc']);
    assert.equal(r.code, 3);
    assert.equal(r.stdout.length, 0);
    assert.equal(r.stderr, 'chunkyard: /etc: is a directory\n');
  });

  it('a missing image exits 4; a file that is not ext4 exits 3; a bad option exits 2', async () => {
    const missing = await cli(['ls', path.join(tmp!.path, 'absent.ext4')]);
    assert.equal(missing.code, 4);
    assert.match(missing.stderr, /absent\.ext4: no such file/);
    const junk = path.join(tmp!.path, 'junk.bin');
    await writeFile(junk, randomBytes(8192));
    const bad = await cli(['ls', junk]);
    assert.equal(bad.code, 3);
    assert.match(bad.stderr, /junk\.bin: not an ext4 filesystem/);
    const opt = await cli(['ls', '--bogus', image]);
    assert.equal(opt.code, 2);
  });
});

describe('inspect formatting', () => {
  it('modeString shows special bits like ls', () => {
    assert.equal(modeString('file', 0o4755), '-rwsr-xr-x');
    assert.equal(modeString('file', 0o4644), '-rwSr--r--');
    assert.equal(modeString('dir', 0o2750), 'drwxr-s---');
    assert.equal(modeString('dir', 0o1777), 'drwxrwxrwt');
    assert.equal(modeString('dir', 0o1776), 'drwxrwxrwT');
    assert.equal(modeString('char', 0o600), 'crw-------');
    assert.equal(modeString('socket', 0o755), 'srwxr-xr-x');
  });

  it('isoTime handles seconds, nanoseconds and pre-1970 times', () => {
    assert.equal(isoTime({ sec: 0, nsec: 0 }, 'seconds'), '1970-01-01T00:00:00Z');
    assert.equal(isoTime({ sec: 2240000000, nsec: 123456789 }, 'nanoseconds'), '2040-12-24T22:13:20.123456789Z');
    assert.equal(isoTime({ sec: -100000000, nsec: 5 }, 'nanoseconds'), '1966-10-31T14:13:20.000000005Z');
  });
});
