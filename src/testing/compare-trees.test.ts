import assert from 'node:assert/strict';
import { chmod, chown, link, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { compareTrees, formatDiffs, type TreeDiff, type TreeField } from './compare-trees.js';
import { isRoot, python3, requireCorpus, requireRoot, requireTool, run, tmpDir, umociUnpack, type TmpDir } from './tools.js';

/** Python helpers: nanosecond mtimes (also on symlinks) and raw xattr writes, which Node lacks. */
const PY_SET_MTIMES = `
import os, sys
root = sys.argv[1].encode()
for dirpath, dirs, files in os.walk(root, topdown=False):
    for n in files + dirs:
        os.utime(os.path.join(dirpath, n), ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789), follow_symlinks=False)
os.utime(root, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
`;
const PY_UTIME = `
import os, sys
os.utime(sys.argv[1], ns=(int(sys.argv[2]), int(sys.argv[2])), follow_symlinks=False)
`;
const PY_SPECIALS = `
import os, sys, stat
root, as_root, cap = sys.argv[1], sys.argv[2] == '1', bytes.fromhex(sys.argv[3])
os.mkfifo(os.path.join(root, 'fifo'), 0o644)
os.setxattr(os.path.join(root, 'attrs'), 'user.note', b'hello')
if as_root:
    os.setxattr(os.path.join(root, 'bin/run.sh'), 'security.capability', cap)
    os.mknod(os.path.join(root, 'null'), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
`;
const PY_SETXATTR = `
import os, sys
os.setxattr(sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), follow_symlinks=False)
`;

async function setMtimeNs(p: string, ns: bigint): Promise<void> {
  await run(await python3(), ['-c', PY_UTIME, p, ns.toString()]);
}
async function setXattr(p: string, name: string, value: Buffer): Promise<void> {
  await run(await python3(), ['-c', PY_SETXATTR, p, name, value.toString('hex')]);
}

/** A VFS_CAP_REVISION_2 security.capability value granting cap_net_bind_service (bit 10) permitted+effective. */
function capValue(bit: number): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt32LE(0x02000001, 0); // revision 2, effective flag
  b.writeUInt32LE(1 << bit, 4); // permitted[0]
  return b;
}

interface Hooks {
  /** Structural changes, before mtimes are pinned. */
  shape?: (root: string) => Promise<unknown>;
  /** Attribute changes after mtimes are pinned. */
  touch?: (root: string) => Promise<unknown>;
}

/** A small tree with one of everything; identical for identical hooks. */
async function makeTree(root: string, hooks: Hooks = {}): Promise<void> {
  await mkdir(path.join(root, 'etc/sub'), { recursive: true });
  await mkdir(path.join(root, 'bin'));
  await writeFile(path.join(root, 'etc/os-release'), 'NAME=test\n');
  await writeFile(path.join(root, 'bin/run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  await chmod(path.join(root, 'bin/run.sh'), 0o755);
  await writeFile(path.join(root, 'etc/sub/x'), 'same bytes');
  await link(path.join(root, 'etc/sub/x'), path.join(root, 'etc/sub/y'));
  await writeFile(path.join(root, 'etc/sub/z'), 'same bytes');
  await link(path.join(root, 'etc/sub/z'), path.join(root, 'etc/sub/w'));
  await symlink('../etc/os-release', path.join(root, 'bin/link'));
  await writeFile(path.join(root, 'empty'), '');
  await writeFile(path.join(root, 'attrs'), 'xattrs here');
  if (isRoot()) await chown(path.join(root, 'etc/os-release'), 1000, 1001);
  // fifo, device node and xattrs in one python process (Node cannot make them)
  await run(await python3(), ['-c', PY_SPECIALS, root, isRoot() ? '1' : '0', capValue(10).toString('hex')]);
  await chmod(path.join(root, 'etc/sub'), 0o750);
  if (hooks.shape !== undefined) await hooks.shape(root);
  await run(await python3(), ['-c', PY_SET_MTIMES, root]);
  if (hooks.touch !== undefined) await hooks.touch(root);
}

describe('compareTrees', function () {
  let tmp: TmpDir;
  let n = 0;
  before(function () {
    requireTool(this, 'python3');
  });
  beforeEach(async function () {
    tmp = await tmpDir('cmp');
  });
  afterEach(async function () {
    await tmp?.cleanup();
  });

  async function pair(hooksB: Hooks, hooksA: Hooks = {}): Promise<TreeDiff[]> {
    const a = path.join(tmp.path, `a${n}`);
    const b = path.join(tmp.path, `b${n++}`);
    await makeTree(a, hooksA);
    await makeTree(b, hooksB);
    return compareTrees(a, b);
  }

  /** Exactly one diff, on `p` and `field`. */
  function expectOne(diffs: TreeDiff[], p: string, field: TreeField): TreeDiff {
    assert.equal(diffs.length, 1, formatDiffs(diffs));
    const d = diffs[0]!;
    assert.equal(d.path, p, formatDiffs(diffs));
    assert.equal(d.field, field, formatDiffs(diffs));
    return d;
  }

  it('reports nothing for identically built trees', async function () {
    assert.deepEqual(await pair({}), []);
  });

  it('reports nothing for a cp -a copy (hardlinks, xattrs, fifo, symlink mtimes kept)', async function () {
    requireTool(this, 'cp');
    const a = path.join(tmp.path, 'a');
    await makeTree(a);
    await run('cp', ['-a', a, path.join(tmp.path, 'copy')]);
    const diffs = await compareTrees(a, path.join(tmp.path, 'copy'));
    assert.deepEqual(diffs, [], formatDiffs(diffs));
  });

  it('reports a permission change', async function () {
    const d = expectOne(await pair({ touch: (r) => chmod(path.join(r, 'bin/run.sh'), 0o750) }), '/bin/run.sh', 'mode');
    assert.deepEqual([d.a, d.b], ['00755', '00750']);
  });

  it('reports setuid, setgid and sticky bits', async function () {
    for (const [bits, want] of [[0o4755, '04755'], [0o2755, '02755'], [0o1755, '01755']] as const) {
      const d = expectOne(await pair({ touch: (r) => chmod(path.join(r, 'bin/run.sh'), bits) }), '/bin/run.sh', 'mode');
      assert.equal(d.b, want);
    }
  });

  it('reports a one-nanosecond mtime difference', async function () {
    const d = expectOne(await pair({ touch: (r) => setMtimeNs(path.join(r, 'etc/os-release'), 1_600_000_000_123_456_790n) }), '/etc/os-release', 'mtime');
    assert.deepEqual([d.a, d.b], ['1600000000.123456789', '1600000000.123456790']);
  });

  it('reports a symlink mtime difference (without following the link)', async function () {
    expectOne(await pair({ touch: (r) => setMtimeNs(path.join(r, 'bin/link'), 1_500_000_000_000_000_000n) }), '/bin/link', 'mtime');
  });

  it('reports the root directory mtime', async function () {
    expectOne(await pair({ touch: (r) => setMtimeNs(r, 1n) }), '/', 'mtime');
  });

  it('reports an xattr value difference, naming the attribute', async function () {
    const d = expectOne(await pair({ touch: (r) => setXattr(path.join(r, 'attrs'), 'user.note', Buffer.from('hellp')) }), '/attrs', 'xattr');
    assert.equal(d.name, 'user.note');
    assert.deepEqual([d.a, d.b], ['0x68656c6c6f', '0x68656c6c70']);
  });

  it('reports an xattr present on one side only', async function () {
    const d = expectOne(await pair({ touch: (r) => setXattr(path.join(r, 'empty'), 'user.extra', Buffer.from([0, 1, 2])) }), '/empty', 'xattr');
    assert.deepEqual([d.name, d.a, d.b], ['user.extra', '(absent)', '0x000102']);
  });

  it('reports a security.capability difference', async function () {
    if (!isRoot()) this.skip();
    const d = expectOne(await pair({ touch: (r) => setXattr(path.join(r, 'bin/run.sh'), 'security.capability', capValue(12)) }), '/bin/run.sh', 'xattr');
    assert.equal(d.name, 'security.capability');
  });

  it('reports a different hardlink grouping with equal link counts', async function () {
    // a: x=y, z=w.  b: x=z, y=w. Every file has nlink 2 and the same bytes.
    const regroup = async (r: string): Promise<void> => {
      const s = path.join(r, 'etc/sub');
      for (const f of ['x', 'y', 'z', 'w']) await rm(path.join(s, f));
      await writeFile(path.join(s, 'x'), 'same bytes');
      await link(path.join(s, 'x'), path.join(s, 'z'));
      await writeFile(path.join(s, 'y'), 'same bytes');
      await link(path.join(s, 'y'), path.join(s, 'w'));
    };
    const diffs = await pair({ shape: regroup });
    assert.ok(diffs.length > 0, 'regrouped hardlinks must be reported');
    assert.ok(diffs.every((d) => d.field === 'hardlinks'), formatDiffs(diffs));
    assert.deepEqual(diffs.map((d) => d.path).sort(), ['/etc/sub/w', '/etc/sub/x', '/etc/sub/y', '/etc/sub/z']);
    assert.equal(diffs.find((d) => d.path === '/etc/sub/x')?.a, '[/etc/sub/x, /etc/sub/y]');
  });

  it('reports a broken hardlink as link count and grouping', async function () {
    const unlink = async (r: string): Promise<void> => {
      await rm(path.join(r, 'etc/sub/y'));
      await writeFile(path.join(r, 'etc/sub/y'), 'same bytes');
    };
    const diffs = await pair({ shape: unlink });
    const fields = new Set(diffs.map((d) => `${d.path} ${d.field}`));
    assert.deepEqual([...fields].sort(), ['/etc/sub/x hardlinks', '/etc/sub/x nlink', '/etc/sub/y hardlinks', '/etc/sub/y nlink'], formatDiffs(diffs));
  });

  it('reports a symlink target difference', async function () {
    const retarget = async (r: string): Promise<void> => {
      await rm(path.join(r, 'bin/link'));
      await symlink('../etc/os-releasX', path.join(r, 'bin/link')); // same length: size is unchanged
    };
    const d = expectOne(await pair({ shape: retarget }), '/bin/link', 'target');
    assert.deepEqual([d.a, d.b], ['../etc/os-release', '../etc/os-releasX']);
  });

  it('reports a fifo replaced by an empty file as a type difference', async function () {
    const swap = async (r: string): Promise<void> => {
      const mode = 0o644 & ~process.umask();
      await rm(path.join(r, 'fifo'));
      await writeFile(path.join(r, 'fifo'), '');
      await chmod(path.join(r, 'fifo'), mode);
    };
    const d = expectOne(await pair({ shape: swap }), '/fifo', 'type');
    assert.deepEqual([d.a, d.b], ['fifo', 'file']);
  });

  it('reports an extra file, and an extra non-UTF-8 name', async function () {
    const d = expectOne(await pair({ shape: (r) => writeFile(path.join(r, 'etc/extra'), 'x') }), '/etc/extra', 'presence');
    assert.deepEqual([d.a, d.b], ['(absent)', 'file']);
    const nonUtf8 = Buffer.from([0x66, 0xff, 0xfe]); // 'f' + two bytes that are not UTF-8
    const diffs = await pair({ shape: (r) => writeFile(Buffer.concat([Buffer.from(`${r}/`), nonUtf8]), 'x') });
    const e = expectOne(diffs, '/f\\xff\\xfe', 'presence');
    assert.equal(e.a, '(absent)');
  });

  it('reports a missing subtree once per path, and the parent link count', async function () {
    const diffs = await pair({ shape: (r) => rm(path.join(r, 'etc/sub'), { recursive: true }) });
    const got = diffs.map((d) => `${d.path} ${d.field}`);
    assert.deepEqual(got, ['/etc nlink', '/etc/sub presence', '/etc/sub/w presence', '/etc/sub/x presence', '/etc/sub/y presence', '/etc/sub/z presence']);
  });

  it('reports content that differs at equal size', async function () {
    const d = expectOne(await pair({ shape: (r) => writeFile(path.join(r, 'etc/os-release'), 'NAME=tesu\n') }), '/etc/os-release', 'content');
    assert.match(d.a, /^sha256:[0-9a-f]{64}$/);
  });

  it('reports a size difference (and does not hash)', async function () {
    const d = expectOne(await pair({ shape: (r) => writeFile(path.join(r, 'etc/os-release'), 'NAME=test2\n') }), '/etc/os-release', 'size');
    assert.deepEqual([d.a, d.b], ['10', '11']);
  });

  it('reports uid, gid and device numbers (root)', async function () {
    if (!isRoot()) this.skip();
    expectOne(await pair({ touch: (r) => chown(path.join(r, 'etc/os-release'), 1002, 1001) }), '/etc/os-release', 'uid');
    expectOne(await pair({ touch: (r) => chown(path.join(r, 'etc/os-release'), 1000, 0) }), '/etc/os-release', 'gid');
    const redev = async (r: string): Promise<void> => {
      await rm(path.join(r, 'null'));
      await run(await python3(), ['-c', 'import os,sys,stat; os.mknod(sys.argv[1], 0o666 | stat.S_IFCHR, os.makedev(1, 5))', path.join(r, 'null')]);
    };
    const d = expectOne(await pair({ shape: redev }), '/null', 'rdev');
    assert.deepEqual([d.a, d.b], ['1:3', '1:5']);
  });

  it('ignores listed paths with their subtrees, adjusting the parent link count', async function () {
    const a = path.join(tmp.path, 'a');
    const b = path.join(tmp.path, 'b');
    await makeTree(a);
    await makeTree(b, { shape: (r) => mkdir(path.join(r, 'lost+found/deep'), { recursive: true }) });
    assert.equal((await compareTrees(a, b)).length > 0, true);
    const diffs = await compareTrees(a, b, { ignore: ['lost+found'] });
    assert.deepEqual(diffs, [], formatDiffs(diffs));
  });

  it('skips fields on request', async function () {
    const a = path.join(tmp.path, 'a');
    const b = path.join(tmp.path, 'b');
    await makeTree(a);
    await makeTree(b, { touch: (r) => setXattr(path.join(r, 'attrs'), 'user.note', Buffer.from('other')) });
    assert.equal((await compareTrees(a, b)).length, 1);
    assert.deepEqual(await compareTrees(a, b, { skipFields: ['xattr'] }), []);
  });

  it('formats diffs with a bound', function () {
    const diffs: TreeDiff[] = Array.from({ length: 5 }, (_, i) => ({ path: `/f${i}`, field: 'mode', a: '00644', b: '00600' }));
    const s = formatDiffs(diffs, 2);
    assert.match(s, /^5 difference\(s\):\n {2}\/f0: mode: a=00644 b=00600\n {2}\/f1: mode/);
    assert.match(s, /and 3 more$/);
    assert.equal(formatDiffs([]), 'trees are identical');
  });

  it('compares a corpus image (py-app, ~7k paths) with its cp -a copy, catching a dropped file capability', async function () {
    const corpus = requireCorpus(this);
    requireRoot(this, 'faithful ownership from umoci unpack');
    requireTool(this, 'umoci', 'cp');
    const u = await umociUnpack(this, corpus, 'py-app');
    try {
      const copy = path.join(tmp.path, 'copy');
      await run('cp', ['-a', u.rootfs, copy]);
      const same = await compareTrees(u.rootfs, copy);
      assert.deepEqual(same, [], formatDiffs(same));
      await run(await python3(), ['-c', 'import os,sys; os.removexattr(sys.argv[1], "security.capability", follow_symlinks=False)', path.join(copy, 'app/bin/capbin')]);
      const d = expectOne(await compareTrees(u.rootfs, copy), '/app/bin/capbin', 'xattr');
      assert.deepEqual([d.name, d.b], ['security.capability', '(absent)']);
    } finally {
      await u.cleanup();
    }
  });
});
