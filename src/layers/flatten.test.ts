import assert from 'node:assert/strict';
import { mkdir, open, readFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { InputError } from '../errors.js';
import { flattenTars, wallClockDirs } from '../testing/flatten-tars.js';
import { tarOf, type TarItem } from '../testing/tar-writer.js';
import { diffSnapshots, snapshotDir, snapshotTree } from '../testing/tree-snapshot.js';
import { requireRoot, requireTool, run, skipWith, tmpDir, umociUnpack } from '../testing/tools.js';
import { umociImageOf } from '../testing/umoci-layout.js';
import { utf8ToByteString, type ByteString } from './bytes.js';
import type { Attrs, LayerEntry } from './entry.js';
import { Flattener, IMPLICIT_DIR_ATTRS } from './flatten.js';
import { MAX_SYMLINKS } from './resolve.js';
import type { Inode, Tree } from './tree.js';

// --- building entries -----------------------------------------------------------

const p = (s: string): ByteString => utf8ToByteString(s);
const attrs = (mode: number, more: Partial<Attrs> = {}): Attrs => ({ mode, uid: 0, gid: 0, mtime: { sec: 100, nsec: 0 }, xattrs: new Map(), ...more });
const dir = (path: string, a: Attrs = attrs(0o755)): LayerEntry<string> => ({ type: 'dir', path: p(path), attrs: a });
const file = (path: string, data = path, a: Attrs = attrs(0o644)): LayerEntry<string> => ({ type: 'file', path: p(path), attrs: a, data });
const symlink = (path: string, target: string): LayerEntry<string> => ({ type: 'symlink', path: p(path), attrs: attrs(0o777), target: p(target) });
const hardlink = (path: string, target: string, a: Attrs = attrs(0o600)): LayerEntry<string> => ({
  type: 'hardlink',
  path: p(path),
  attrs: a,
  target: p(target),
});
const whiteout = (path: string): LayerEntry<string> => ({ type: 'whiteout', path: p(path) });
const opaque = (path: string): LayerEntry<string> => ({ type: 'opaque', path: p(path) });

function flatten(...layers: Array<Array<LayerEntry<string>>>): Tree<string> {
  const f = new Flattener<string>();
  layers.forEach((entries, i) => {
    f.beginLayer(i);
    for (const e of entries) f.apply(e);
  });
  return f.tree();
}

/** One line per path: `path kind detail`, sorted; the root is '/'. */
function listing(tree: Tree<string>): string[] {
  const out: string[] = [];
  const visit = (path: string, node: Inode<string>): void => {
    let detail = '';
    if (node.kind === 'file') detail = `=${node.data}`;
    else if (node.kind === 'symlink') detail = `->${node.target}`;
    else if (node.kind === 'char' || node.kind === 'block') detail = `${node.major}:${node.minor}`;
    out.push(`${path || '/'} ${node.kind}${detail ? ` ${detail}` : ''}`);
    if (node.kind === 'dir') for (const [n, c] of node.children) visit(path ? `${path}/${n}` : n, c);
  };
  visit('', tree.root);
  return out.sort();
}

function at(tree: Tree<string>, path: string): Inode<string> | undefined {
  let node: Inode<string> | undefined = tree.root;
  for (const part of path.split('/').filter((s) => s !== '')) node = node?.kind === 'dir' ? node.children.get(p(part)) : undefined;
  return node;
}

function throwsInput(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof InputError, `expected InputError, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  });
}

describe('Flattener', () => {
  describe('adding entries', () => {
    it('places every type and creates missing parents with the implicit attributes', () => {
      const t = flatten([
        file('a/b/c/f', 'F'),
        symlink('a/s', '../x'),
        { type: 'char', path: p('dev/null'), attrs: attrs(0o666), major: 1, minor: 3 },
        { type: 'block', path: p('dev/sda'), attrs: attrs(0o660), major: 8, minor: 0 },
        { type: 'fifo', path: p('run/fifo'), attrs: attrs(0o600) },
      ]);
      assert.deepEqual(listing(t), [
        '/ dir',
        'a dir',
        'a/b dir',
        'a/b/c dir',
        'a/b/c/f file =F',
        'a/s symlink ->../x',
        'dev dir',
        'dev/null char 1:3',
        'dev/sda block 8:0',
        'run dir',
        'run/fifo fifo',
      ]);
      for (const d of ['', 'a', 'a/b', 'a/b/c', 'dev', 'run']) assert.equal(at(t, d)?.attrs, IMPLICIT_DIR_ATTRS, d);
      assert.deepEqual(IMPLICIT_DIR_ATTRS, { mode: 0o755, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, xattrs: new Map() });
    });

    it('gives every symlink mode 0777, as Linux does', () => {
      const t = flatten([{ type: 'symlink', path: p('s'), attrs: attrs(0o755, { uid: 7 }), target: p('t') }]);
      assert.deepEqual(at(t, 's')?.attrs, attrs(0o777, { uid: 7 }));
    });

    it('a root entry sets only the root attributes; a non-directory root is refused', () => {
      const t = flatten([file('x')], [dir('', attrs(0o700, { uid: 5 }))]);
      assert.deepEqual(t.root.attrs, attrs(0o700, { uid: 5 }));
      assert.deepEqual(listing(t), ['/ dir', 'x file =x']);
      throwsInput(() => flatten([file('')]), /layer 0: the entry for the root directory is a file, not a directory/);
    });

    it('drops the xattrs umoci never applies (security.selinux, overlay bookkeeping), keeps the rest', () => {
      const cap = Buffer.from('0100000200040000000000000000000000000000', 'hex');
      const xattrs = new Map([
        ['security.selinux', Buffer.from('system_u:object_r:bin_t:s0')],
        ['trusted.overlay.opaque', Buffer.from('y')],
        ['security.capability', cap],
        ['user.x', Buffer.from('1')],
      ]);
      const t = flatten([file('f', 'f', attrs(0o755, { xattrs })), dir('d', attrs(0o755, { xattrs }))]);
      for (const path of ['f', 'd']) assert.deepEqual([...(at(t, path)?.attrs.xattrs.keys() ?? [])], ['security.capability', 'user.x']);
      assert.equal(at(t, 'f')?.attrs.xattrs.get('security.capability'), cap);
    });
  });

  describe('an entry over an existing path', () => {
    it('directory over directory: takes the new attributes (chmod/chown/xattrs), keeps the children', () => {
      const lower = [dir('etc', attrs(0o755, { xattrs: new Map([['user.old', Buffer.from('1')]]) })), file('etc/passwd'), dir('etc/sub'), file('etc/sub/x')];
      const t = flatten(lower, [dir('etc', attrs(0o700, { uid: 1000, gid: 1000, mtime: { sec: 5, nsec: 6 } }))]);
      assert.deepEqual(at(t, 'etc')?.attrs, attrs(0o700, { uid: 1000, gid: 1000, mtime: { sec: 5, nsec: 6 } }));
      assert.deepEqual(listing(t), ['/ dir', 'etc dir', 'etc/passwd file =etc/passwd', 'etc/sub dir', 'etc/sub/x file =etc/sub/x']);
    });

    it('file → directory and directory → file replace the whole old node', () => {
      const t = flatten(
        [file('etc/motd', 'old'), dir('usr/local/games'), file('usr/local/games/g')],
        [dir('etc/motd'), file('etc/motd/README', 'R'), file('usr/local/games', 'now a file')],
      );
      assert.deepEqual(listing(t), [
        '/ dir',
        'etc dir',
        'etc/motd dir',
        'etc/motd/README file =R',
        'usr dir',
        'usr/local dir',
        'usr/local/games file =now a file',
      ]);
    });

    it('a later entry in the same layer wins', () => {
      const t = flatten([file('f', 'one'), file('f', 'two'), symlink('f', 'three')]);
      assert.deepEqual(listing(t), ['/ dir', 'f symlink ->three']);
    });

    it('an entry whose parent is a file is refused (umoci: mkdir parent: not a directory)', () => {
      throwsInput(() => flatten([file('f')], [file('f/x')]), /layer 1: "f\/x": its parent "f" is a file, not a directory/);
      throwsInput(() => flatten([file('f'), symlink('s', 'f'), file('s/x')]), /"s\/x": its parent "f" is a file/);
    });
  });

  describe('whiteouts', () => {
    const lower = [
      dir('usr'),
      dir('usr/share'),
      dir('usr/share/man'),
      file('usr/share/man/a'),
      dir('usr/share/man/sub'),
      file('usr/share/man/sub/b'),
      file('usr/bin/pydoc'),
      file('keep'),
    ];

    it('.wh.NAME removes a file, or a directory with its subtree', () => {
      const t = flatten(lower, [whiteout('usr/share/man'), whiteout('usr/bin/pydoc')]);
      assert.deepEqual(listing(t), ['/ dir', 'keep file =keep', 'usr dir', 'usr/bin dir', 'usr/share dir']);
    });

    it('a whiteout of a missing path, or under a file, does nothing (and creates no parents)', () => {
      const t = flatten([file('keep')], [whiteout('nothing/here'), whiteout('keep/x'), opaque('no/such/dir'), opaque('keep')]);
      assert.deepEqual(listing(t), ['/ dir', 'keep file =keep']);
    });

    it('removes only what lower layers made, before or after this layer re-creates the path', () => {
      for (const order of ['before', 'after'] as const) {
        const mine = [file('usr/bin/pydoc', 'new'), dir('usr/share/man', attrs(0o700)), file('usr/share/man/new', 'N')];
        const marks = [whiteout('usr/bin/pydoc'), whiteout('usr/share/man')];
        const t = flatten(lower, order === 'before' ? [...marks, ...mine] : [...mine, ...marks]);
        assert.deepEqual(
          listing(t),
          ['/ dir', 'keep file =keep', 'usr dir', 'usr/bin dir', 'usr/bin/pydoc file =new', 'usr/share dir', 'usr/share/man dir', 'usr/share/man/new file =N'],
          order,
        );
        assert.equal(at(t, 'usr/share/man')?.attrs.mode, 0o700);
      }
    });

    it('a whiteout in a later layer removes what an earlier layer re-created', () => {
      const t = flatten(lower, [file('usr/share/man/a', 'again')], [whiteout('usr/share/man/a')]);
      assert.equal(at(t, 'usr/share/man/a'), undefined);
    });

    it('opaque: hides the lower children, keeps this layer’s, marker before or after its siblings', () => {
      for (const order of ['before', 'after'] as const) {
        const mine = [dir('usr/share/man', attrs(0o711)), file('usr/share/man/mine', 'M'), dir('usr/share/man/sub'), file('usr/share/man/sub/c', 'C')];
        const t = flatten(lower, order === 'before' ? [opaque('usr/share/man'), ...mine] : [...mine, opaque('usr/share/man')]);
        assert.deepEqual(
          listing(t),
          [
            '/ dir',
            'keep file =keep',
            'usr dir',
            'usr/bin dir',
            'usr/bin/pydoc file =usr/bin/pydoc',
            'usr/share dir',
            'usr/share/man dir',
            'usr/share/man/mine file =M',
            'usr/share/man/sub dir',
            'usr/share/man/sub/c file =C',
          ],
          order,
        );
        assert.equal(at(t, 'usr/share/man')?.attrs.mode, 0o711, order);
      }
    });

    it('an opaque marker alone empties the directory but keeps it and its attributes', () => {
      const t = flatten(lower, [opaque('usr/share/man')]);
      assert.deepEqual(listing(t).filter((l) => l.startsWith('usr/share')), ['usr/share dir', 'usr/share/man dir']);
      assert.equal(at(t, 'usr/share/man')?.attrs.mode, 0o755);
    });

    it('an opaque root hides everything lower layers made', () => {
      const t = flatten(lower, [opaque(''), file('new')]);
      assert.deepEqual(listing(t), ['/ dir', 'new file =new']);
    });

    it('whiteouts resolve their parent through symlinks inside the tree', () => {
      const t = flatten(
        [dir('real'), file('real/a'), file('real/b'), dir('real/d'), file('real/d/x'), symlink('link', '/real')],
        [whiteout('link/a'), opaque('link/d'), whiteout('link')],
      );
      assert.deepEqual(listing(t), ['/ dir', 'real dir', 'real/b file =real/b', 'real/d dir']);
    });
  });

  describe('hardlinks', () => {
    it('share one Inode with a file made earlier in the layer or by a lower layer; their own attributes are ignored', () => {
      const t = flatten([file('app/app.py', 'py', attrs(0o755))], [hardlink('app/copy', 'app/app.py', attrs(0o600)), file('x', 'X'), hardlink('y', 'x')]);
      assert.equal(at(t, 'app/copy'), at(t, 'app/app.py'));
      assert.equal(at(t, 'y'), at(t, 'x'));
      assert.equal(at(t, 'app/copy')?.attrs.mode, 0o755);
    });

    it('a later entry over one name, or a whiteout of it, affects only that name', () => {
      const t = flatten([file('a', 'old'), hardlink('b', 'a'), hardlink('c', 'a')], [file('a', 'new')], [whiteout('b')]);
      assert.deepEqual(listing(t), ['/ dir', 'a file =new', 'c file =old']);
      const t2 = flatten([file('a', 'old'), hardlink('b', 'a')], [dir('a', attrs(0o700))]);
      assert.deepEqual(listing(t2), ['/ dir', 'a dir', 'b file =old']);
    });

    it('may link to a symlink, a device or a fifo, and resolves the target’s parent through symlinks', () => {
      const t = flatten([
        symlink('s', 'nowhere'),
        hardlink('h', 's'),
        dir('d'),
        file('d/f'),
        symlink('ds', 'd'),
        hardlink('viasym', 'ds/f'),
        { type: 'fifo', path: p('p'), attrs: attrs(0o600) },
        hardlink('p2', 'p'),
      ]);
      assert.equal(at(t, 'h'), at(t, 's'));
      assert.equal(at(t, 'viasym'), at(t, 'd/f'));
      assert.equal(at(t, 'p2'), at(t, 'p'));
    });

    it('to a missing path or a directory is refused, naming both paths', () => {
      throwsInput(() => flatten([hardlink('h', 'missing')]), /layer 0: hardlink "h" → "missing": the target does not exist/);
      throwsInput(() => flatten([dir('d')], [hardlink('h', 'd')]), /layer 1: hardlink "h" → "d": the target is a directory/);
      throwsInput(() => flatten([hardlink('h', '')]), /hardlink "h" → "\/": the target is a directory/);
      // As in umoci, the old path is removed before the target is looked up.
      throwsInput(() => flatten([file('f'), hardlink('f', 'f')]), /hardlink "f" → "f": the target does not exist/);
      throwsInput(() => flatten([whiteout('x'), file('a')], [whiteout('a'), hardlink('b', 'a')]), /hardlink "b" → "a": the target does not exist/);
    });
  });

  describe('symlinked parents', () => {
    const base = [
      dir('etc'),
      file('etc/passwd', 'lower'),
      dir('data'),
      symlink('abs', '/etc'),
      symlink('up', '../../..'),
      symlink('in', 'data'),
      symlink('dangling', '/nonexist/deep'),
      symlink('rel', 'data/../x'),
    ];

    it('are followed inside the tree: absolute targets start at the root', () => {
      const t = flatten(base, [
        file('abs/new', 'via abs'),
        file('in/f', 'in data'),
        file('dangling/f', 'made'),
        file('rel/g', 'rel'),
      ]);
      assert.deepEqual(
        listing(t).filter((l) => l.includes('file')),
        [
          'data/f file =in data',
          'etc/new file =via abs',
          'etc/passwd file =lower',
          'nonexist/deep/f file =made',
          'x/g file =rel',
        ],
      );
      assert.equal(at(t, 'nonexist')?.attrs, IMPLICIT_DIR_ATTRS);
    });

    it('never lead out of the tree: a target that climbs above the root is refused', () => {
      const inside: Array<[target: string, landsAt: string]> = [
        ['..', 'f'],
        ['/', 'f'],
        ['//etc//', 'etc/f'],
        ['.', 'd/f'],
        ['', 'd/f'],
      ];
      for (const [target, landsAt] of inside) {
        const t = flatten([dir('d'), symlink('d/l', target)], [file('d/l/f', 'x')]);
        const files = listing(t).filter((l) => l.endsWith('file =x'));
        assert.deepEqual(files, [`${landsAt} file =x`], `symlink target ${JSON.stringify(target)}`);
      }
      for (const target of ['../..', '../../../..', '/..', '/../../..', '../../etc', './../x/../../y', 'a/../../../..']) {
        throwsInput(() => flatten([dir('d'), symlink('d/l', target)], [file('d/l/f', 'x')]), /"d\/l" resolves through a symbolic link above the image root/);
      }
      throwsInput(() => flatten(base, [file('up/top', 'via up')]), /above the image root/);
    });

    it('the last component is never followed: an entry over a symlink replaces the symlink', () => {
      const t = flatten(base, [dir('abs', attrs(0o700)), file('in', 'was a link')]);
      assert.equal(at(t, 'abs')?.kind, 'dir');
      assert.equal(at(t, 'in')?.kind, 'file');
      assert.equal(at(t, 'etc')?.attrs.mode, 0o755);
    });

    it('symlink loops and over-long chains are refused', () => {
      throwsInput(() => flatten([symlink('a', 'b'), symlink('b', 'a'), file('a/x')]), /too many levels of symbolic links resolving "a"/);
      const chain = Array.from({ length: MAX_SYMLINKS + 1 }, (_, i) => symlink(`l${i}`, `l${i + 1}`));
      throwsInput(() => flatten([...chain, dir(`l${MAX_SYMLINKS + 1}`), file('l0/f')]), /too many levels/);
      const ok = flatten([...chain.slice(1), dir(`l${MAX_SYMLINKS + 1}`), file('l1/f')]);
      assert.equal(at(ok, `l${MAX_SYMLINKS + 1}/f`)?.kind, 'file');
    });
  });
});

// --- the same layers through umoci ------------------------------------------------

/**
 * Each scenario is a list of layers; the test writes them as tars, flattens
 * them with readLayerEntries + Flattener and with `umoci unpack`, and requires
 * identical trees (types, modes, owners, mtimes to the nanosecond, sizes,
 * content, symlink targets, devices, xattrs, hardlink groups). Only the
 * mtimes umoci takes from the wall clock (implicit directories) are skipped.
 */
const cap = Buffer.from('0100000200040000000000000000000000000000', 'hex');
const T = 1_700_000_000;
interface Scenario {
  readonly layers: TarItem[][];
  /**
   * Directories umoci leaves with a wall-clock mtime besides implicit ones:
   * a whiteout that descends into a directory this layer re-created and
   * removes lower children there changes that directory's mtime, and umoci
   * only restores the mtime of the marker's own parent. We keep the mtime
   * the layer gave.
   */
  readonly wallClock?: readonly string[];
}

const scenarios: Record<string, Scenario> = {
  'whiteouts and opaque directories': {
    wallClock: ['usr/share/doc'],
    layers: [
      [
        { name: './', type: 'dir', mtime: T },
        { name: 'usr/', type: 'dir', mtime: T },
        { name: 'usr/share/', type: 'dir', mtime: T },
        { name: 'usr/share/man/', type: 'dir', mtime: T },
        { name: 'usr/share/man/a', data: 'a', mtime: T },
        { name: 'usr/share/man/sub/', type: 'dir', mtime: T },
        { name: 'usr/share/man/sub/b', data: 'b', mtime: T },
        { name: 'usr/share/doc/', type: 'dir', mtime: T },
        { name: 'usr/share/doc/x', data: 'x', mtime: T },
        { name: 'usr/bin/', type: 'dir', mtime: T },
        { name: 'usr/bin/pydoc', data: 'pydoc', mtime: T },
        { name: 'usr/bin/keep', data: 'keep', mtime: T },
        { name: 'etc/', type: 'dir', mtime: T },
        { name: 'etc/apt/', type: 'dir', mtime: T },
        { name: 'etc/apt/a', data: 'a', mtime: T },
        { name: 'etc/apt/d/', type: 'dir', mtime: T },
        { name: 'etc/apt/d/z', data: 'z', mtime: T },
        { name: 'etc/after/', type: 'dir', mtime: T },
        { name: 'etc/after/old', data: 'old', mtime: T },
      ],
      [
        { name: 'usr/bin/.wh.pydoc' },
        { name: 'usr/share/.wh.man' },
        { name: 'usr/share/doc/', type: 'dir', mtime: T + 1, mode: 0o700 },
        { name: 'usr/share/doc/new', data: 'new', mtime: T + 1 },
        { name: 'usr/share/.wh.doc' }, // after its re-creation: only the lower content goes
        { name: 'etc/apt/', type: 'dir', mtime: T + 1 },
        { name: 'etc/apt/.wh..wh..opq' }, // before its siblings
        { name: 'etc/apt/mine', data: 'mine', mtime: T + 1 },
        { name: 'etc/after/', type: 'dir', mtime: T + 1 },
        { name: 'etc/after/new', data: 'new', mtime: T + 1 },
        { name: 'etc/after/.wh..wh..opq' }, // after its siblings
        { name: 'etc/.wh.nothing-here' },
      ],
      [{ name: 'usr/share/doc/.wh.new' }],
    ],
  },
  'hardlinks across layers': {
    layers: [
      [
        { name: 'app/', type: 'dir', mtime: T },
        { name: 'app/app.py', data: 'print(1)\n', mode: 0o755, mtime: T, pax: { 'SCHILY.xattr.user.corpus': 'xattr-value' } },
        { name: 'app/copy.py', type: 'hardlink', linkname: 'app/app.py', mode: 0o600, uid: 9 },
        { name: 'app/third.py', type: 'hardlink', linkname: './app/app.py' },
        { name: 'app/s', type: 'symlink', linkname: 'app.py', mtime: T },
        { name: 'app/s-link', type: 'hardlink', linkname: 'app/s' },
      ],
      [
        { name: 'app/', type: 'dir', mtime: T },
        { name: 'app/app.py', data: 'print(2)\n', mode: 0o755, mtime: T + 1 },
        { name: 'app/lower-link', type: 'hardlink', linkname: 'app/third.py' },
        { name: 'app/.wh.copy.py' },
      ],
    ],
  },
  'replacements, metadata-only changes, special files': {
    layers: [
      [
        { name: 'etc/', type: 'dir', mtime: T, pax: { 'SCHILY.xattr.user.d': 'dir-xattr' } },
        { name: 'etc/motd', data: 'motd', mtime: T },
        { name: 'etc/hostname', data: 'host', mtime: T },
        { name: 'etc/debian_version', data: '12', mtime: T, mode: 0o644 },
        { name: 'usr/', type: 'dir', mtime: T },
        { name: 'usr/local/', type: 'dir', mtime: T },
        { name: 'usr/local/games/', type: 'dir', mtime: T },
        { name: 'usr/local/games/g', data: 'g', mtime: T },
        { name: 'dev/', type: 'dir', mtime: T },
        { name: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666, mtime: T },
        { name: 'dev/sda', type: 'block', devmajor: 8, devminor: 1, mode: 0o660, mtime: T },
        { name: 'dev/big', type: 'char', devmajor: 300, devminor: 70000, mode: 0o600, mtime: T },
        { name: 'fifo', type: 'fifo', mode: 0o644, mtime: T },
      ],
      [
        { name: 'etc/', type: 'dir', mode: 0o750, uid: 1000, gid: 1000, mtime: T + 5, pax: { 'SCHILY.xattr.user.e': 'changed' } },
        { name: 'etc/motd/', type: 'dir', mtime: T + 5 },
        { name: 'etc/motd/README', data: 'now a dir', mtime: T + 5 },
        { name: 'etc/debian_version', data: '12', mtime: T, mode: 0o600 },
        { name: 'etc/hostname', data: 'host', mtime: T, uid: 1000, gid: 1000 },
        { name: 'usr/local/games', data: 'now a file', mtime: T + 5 },
        { name: 'bin/', type: 'dir', mtime: T },
        { name: 'bin/suid', data: 'elf', mode: 0o4755, mtime: T },
        { name: 'bin/sgid-sticky/', type: 'dir', mode: 0o3775, mtime: T },
        {
          name: 'bin/cap',
          data: 'elf',
          mode: 0o755,
          mtime: T,
          pax: { 'SCHILY.xattr.security.capability': cap, 'SCHILY.xattr.user.bin': Buffer.from([0xff, 0, 0x80]) },
        },
        { name: 'fifo', type: 'fifo', mode: 0o600, mtime: T + 5 },
      ],
    ],
  },
  'symlinked parents and hostile names': {
    layers: [
      [
        { name: 'etc/', type: 'dir', mtime: T },
        { name: 'etc/passwd', data: 'root', mtime: T },
        { name: 'data/', type: 'dir', mtime: T },
        { name: 'data/old/', type: 'dir', mtime: T },
        { name: 'data/old/x', data: 'x', mtime: T },
        { name: 'lib/', type: 'dir', mtime: T },
        { name: 'lib/a', data: 'a', mtime: T },
        { name: 'lib64', type: 'symlink', linkname: 'lib', mtime: T },
        { name: 'abs', type: 'symlink', linkname: '/etc', mtime: T },
        { name: 'up', type: 'symlink', linkname: '../../..', mtime: T },
        { name: 'in', type: 'symlink', linkname: 'data', mtime: T },
        { name: 'rel', type: 'symlink', linkname: 'data/../data', mtime: T },
        { name: 'dangling', type: 'symlink', linkname: '/nonexist/deep', mtime: T },
      ],
      [
        { name: 'abs/via-abs', data: 'abs', mtime: T },
        { name: 'in/via-in', data: 'in', mtime: T },
        { name: 'rel/via-rel', data: 'rel', mtime: T },
        { name: 'dangling/made', data: 'made', mtime: T },
        { name: '/etc/absolute', data: 'absolute', mtime: T },
        { name: 'data/../etc/mixed', data: 'mixed', mtime: T },
        { name: 'new/implicit/parents/f', data: 'f', mtime: T },
        { name: 'in/.wh.nothing' },
        { name: 'in/old/.wh.x' },
        { name: 'lib64/.wh..wh..opq' },
        { name: 'lib64/b', data: 'b', mtime: T },
        { name: 'hl', type: 'hardlink', linkname: '/abs/passwd' },
      ],
      [{ name: 'abs/.wh.absolute' }],
    ],
  },
  'PAX and GNU names, times and ids': {
    layers: [
      [
        { name: 'app/', type: 'dir', mtime: T },
        { name: 'app/ünïcødé файл ✓.txt', data: '', mtime: T },
        { name: `app/${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(120)}.txt`, data: 'long\n', mtime: T },
        { name: `app/${'g'.repeat(130)}`, data: 'gnu', longNames: 'gnu', format: 'gnu', mtime: T },
        { name: Buffer.from([0x61, 0x70, 0x70, 0x2f, 0xff, 0xfe, 0x41]), data: 'latin1 name', mtime: T },
        { name: 'app/ns', data: 'ns', pax: { mtime: '1795809009.123456789' } },
        { name: 'app/neg', data: 'neg', pax: { mtime: '-1.25' } },
        { name: 'app/old', data: 'old', mtime: -86_400 },
        { name: 'app/ids', data: 'ids', pax: { uid: '3000000', gid: '4000000' }, mtime: T },
        { name: 'app/sym-ns', type: 'symlink', linkname: 'ns', pax: { mtime: '1600000000.5' } },
        { name: 'app/dir-ns/', type: 'dir', pax: { mtime: '1600000000.000000001' } },
      ],
    ],
  },
};

describe('Flattener matches umoci unpack', function () {
  before(function () {
    requireTool(this, 'umoci', 'python3');
    requireRoot(this, 'umoci unpack keeping owners and device nodes');
  });

  for (const [title, { layers, wallClock = [] }] of Object.entries(scenarios)) {
    it(title, async function () {
      const tars = layers.map((l) => tarOf(l));
      const tmp = await tmpDir('flatten-umoci');
      try {
        const { layout, tag } = await umociImageOf(tmp.path, tars);
        const unpacked = await umociUnpack(this, layout, tag);
        try {
          const tree = await flattenTars(tars.map((t) => () => Readable.from([t])));
          const ours = snapshotTree(tree, (c) => c);
          const theirs = await snapshotDir(unpacked.rootfs);
          const diffs = diffSnapshots(ours, theirs, { ignoreMtime: new Set([...wallClockDirs(tree), ...wallClock.map(p)]) });
          assert.deepEqual(diffs, [], `ours (a) vs umoci (b):\n${diffs.join('\n')}`);
        } finally {
          await unpacked.cleanup();
        }
      } finally {
        await tmp.cleanup();
      }
    });
  }

  it('PAX sparse files written by GNU tar (0.0, 0.1, 1.0; umoci rejects the old GNU S type)', async function () {
    requireTool(this, 'tar');
    if (!/GNU tar/.test((await run('tar', ['--version'])).stdout)) skipWith(this, 'needs GNU tar (tar is not GNU tar)');
    const tmp = await tmpDir('sparse-umoci');
    try {
      const tars: Buffer[] = [];
      for (const v of ['0.0', '0.1', '1.0']) {
        const src = path.join(tmp.path, `src${v}`);
        await mkdir(src);
        const fh = await open(path.join(src, `sparse-${v}.img`), 'w');
        await fh.write(Buffer.from(`data at 1 MiB (${v})`), 0, undefined, 1 << 20);
        await fh.write(Buffer.from('tail'), 0, undefined, (3 << 20) - 4);
        await fh.close();
        const out = path.join(tmp.path, `layer${v}.tar`);
        await run('tar', ['--sparse', '--format=pax', `--sparse-version=${v}`, '--numeric-owner', '-C', src, '-cf', out, '.']);
        tars.push(await readFile(out));
      }
      const { layout, tag } = await umociImageOf(tmp.path, tars);
      const unpacked = await umociUnpack(this, layout, tag);
      try {
        const tree = await flattenTars(tars.map((t) => () => Readable.from([t])));
        const diffs = diffSnapshots(snapshotTree(tree, (c) => c), await snapshotDir(unpacked.rootfs), { ignoreMtime: wallClockDirs(tree) });
        assert.deepEqual(diffs, [], `ours (a) vs umoci (b):\n${diffs.join('\n')}`);
        assert.equal(tree.root.children.size, 3);
      } finally {
        await unpacked.cleanup();
      }
    } finally {
      await tmp.cleanup();
    }
  });
});
