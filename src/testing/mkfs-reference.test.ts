/**
 * Proves the test tooling end to end on a filesystem we did not write:
 * `mke2fs -d` copies a small tree into an ext4 image, we loop-mount it, and
 * compareTrees must find it identical to the source, and must notice a change.
 *
 * mke2fs 1.47 quirks this works around (so the tooling, not mke2fs, is tested):
 * - it stores whole-second timestamps only, so source mtimes are whole seconds;
 * - it does not copy the root directory's mtime, so we set it with debugfs.
 */
import assert from 'node:assert/strict';
import { chmod, link, mkdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { compareTrees, formatDiffs } from './compare-trees.js';
import { isRoot, python3, requireRoot, requireTool, run, tmpDir, withLoopMount, type TmpDir } from './tools.js';

const MTIME = 1_612_325_106; // 2021-02-03T04:05:06Z

const PY_SPECIALS = `
import os, sys, stat
root = sys.argv[1].encode()
j = lambda *p: os.path.join(root, *p)
os.mkfifo(j(b'fifo'), 0o600)
os.mknod(j(b'null'), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
with open(j(b'caf\\xe9'), 'wb') as f: f.write(b'latin-1 name')   # not UTF-8
os.setxattr(j(b'etc', b'os-release'), b'user.origin', b'mkfs-reference')
os.setxattr(j(b'bin', b'hello.sh'), b'security.capability', bytes.fromhex('0100000200040000000000000000000000000000'))
os.chown(j(b'srv'), 1000, 1000)
for dirpath, dirs, files in os.walk(root, topdown=False):
    for n in files + dirs:
        os.utime(os.path.join(dirpath, n), ns=(${MTIME} * 10**9, ${MTIME} * 10**9), follow_symlinks=False)
os.utime(root, ns=(${MTIME} * 10**9, ${MTIME} * 10**9))
`;

async function makeSource(root: string): Promise<void> {
  await mkdir(path.join(root, 'etc'), { recursive: true });
  await mkdir(path.join(root, 'bin'));
  await mkdir(path.join(root, 'srv/data/deep'), { recursive: true });
  await writeFile(path.join(root, 'etc/os-release'), 'NAME="mkfs reference"\nID=ref\n');
  await writeFile(path.join(root, 'bin/hello.sh'), '#!/bin/sh\necho hello\n');
  await chmod(path.join(root, 'bin/hello.sh'), 0o4755);
  await link(path.join(root, 'bin/hello.sh'), path.join(root, 'bin/hello-again'));
  await symlink('hello.sh', path.join(root, 'bin/hi'));
  await symlink('/etc/os-release', path.join(root, 'os-release'));
  await writeFile(path.join(root, 'srv/data/deep/big'), Buffer.alloc(300_000, 7));
  await chmod(path.join(root, 'srv/data'), 0o1777);
  await run(await python3(), ['-c', PY_SPECIALS, root]);
}

describe('mke2fs -d reference image vs its source tree', function () {
  let tmp: TmpDir;
  let src: string;
  let image: string;

  before(async function () {
    requireTool(this, 'mke2fs', 'debugfs', 'python3', 'cp');
    requireRoot(this, 'mount, mknod and chown');
    tmp = await tmpDir('mkfs-ref');
    src = path.join(tmp.path, 'src');
    image = path.join(tmp.path, 'ref.ext4');
    await makeSource(src);
    await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', src, image, '16M']);
    await run('debugfs', ['-w', '-R', `set_inode_field / mtime @${MTIME}`, image]);
  });
  after(async function () {
    await tmp?.cleanup();
  });

  it('the mounted image is identical to the source, inode by inode', async function () {
    const diffs = await withLoopMount(this, image, (mnt) => compareTrees(src, mnt, { ignore: ['lost+found'] }));
    assert.deepEqual(diffs, [], formatDiffs(diffs));
  });

  it('lost+found is reported unless ignored', async function () {
    const diffs = await withLoopMount(this, image, (mnt) => compareTrees(src, mnt));
    const fields = diffs.map((d) => `${d.path} ${d.field}`);
    assert.ok(fields.includes('/lost+found presence'), formatDiffs(diffs));
    assert.ok(fields.includes('/ nlink'), formatDiffs(diffs));
  });

  it('an altered copy of the source differs from the image in exactly the altered fields', async function () {
    assert.ok(isRoot());
    const altered = path.join(tmp.path, 'altered');
    await run('cp', ['-a', src, altered]);
    await chmod(path.join(altered, 'bin/hello.sh'), 0o755); // drops setuid on both hardlinked names
    await run(await python3(), ['-c', 'import os,sys; os.removexattr(sys.argv[1], "user.origin")', path.join(altered, 'etc/os-release')]);
    const diffs = await withLoopMount(this, image, (mnt) => compareTrees(mnt, altered, { ignore: ['lost+found'] }));
    assert.deepEqual(
      diffs.map((d) => `${d.path} ${d.field} ${d.name ?? ''} ${d.a} -> ${d.b}`),
      [
        '/bin/hello-again mode  04755 -> 00755',
        '/bin/hello.sh mode  04755 -> 00755',
        '/etc/os-release xattr user.origin 0x6d6b66732d7265666572656e6365 -> (absent)',
      ],
      formatDiffs(diffs),
    );
  });
});
