import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { flattenTars, wallClockDirs, type Content } from '../testing/flatten-tars.js';
import { requireCorpus, requireRoot, requireTool, umociUnpack } from '../testing/tools.js';
import { diffSnapshots, snapshotDir, snapshotTree } from '../testing/tree-snapshot.js';
import { utf8ToByteString } from './bytes.js';
import type { Inode, Tree } from './tree.js';

interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly annotations?: Record<string, string>;
}

/** The tag's layers as openers of their uncompressed tar streams (read straight from the blobs). */
async function layersOf(layout: string, tag: string): Promise<Array<() => Readable>> {
  const blob = (d: string): string => path.join(layout, 'blobs', ...d.split(':'));
  const index = JSON.parse(await readFile(path.join(layout, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const m = index.manifests.find((d) => d.annotations?.['org.opencontainers.image.ref.name'] === tag);
  assert.ok(m, `tag ${tag} in ${layout}`);
  const manifest = JSON.parse(await readFile(blob(m.digest), 'utf8')) as { layers: Descriptor[] };
  return manifest.layers.map((l) => {
    assert.match(l.mediaType, /tar\+gzip$/);
    return () => {
      const gunzip = createGunzip();
      pipeline(createReadStream(blob(l.digest)), gunzip, () => {});
      return gunzip;
    };
  });
}

function at(tree: Tree<Content>, p: string): Inode<Content> | undefined {
  let node: Inode<Content> | undefined = tree.root;
  for (const part of p.split('/')) node = node?.kind === 'dir' ? node.children.get(utf8ToByteString(part)) : undefined;
  return node;
}

describe('layers stage on the corpus', function () {
  it('flattens py-app (5 layers) exactly as umoci unpack does', async function () {
    const corpus = requireCorpus(this);
    requireTool(this, 'umoci', 'python3');
    requireRoot(this, 'umoci unpack keeping owners');
    const tree = await flattenTars(await layersOf(corpus, 'py-app'));

    // The edge cases the corpus was built to hold, checked directly too.
    assert.equal(at(tree, 'app/app.py'), at(tree, 'app/app-hardlink.py'), 'hardlink pair is one inode');
    assert.equal(at(tree, 'app/bin/capbin')?.attrs.xattrs.get('security.capability')?.toString('hex'), '0100000200040000000000000000000000000000');
    assert.equal(at(tree, 'app/app.py')?.attrs.xattrs.get('user.corpus')?.toString(), 'xattr-value');
    assert.equal(at(tree, 'app/bin/suidbin')?.attrs.mode, 0o4755);
    assert.equal(at(tree, 'app/fifo')?.kind, 'fifo');
    assert.equal(at(tree, 'app/ünïcødé файл ✓.txt')?.kind, 'file');
    assert.equal(at(tree, `app/${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(120)}.txt`)?.kind, 'file');
    assert.equal((at(tree, 'app/sparse.img') as { data: Content } | undefined)?.data.size, 64 << 20);
    assert.equal(at(tree, 'etc/motd')?.kind, 'dir');
    assert.equal(at(tree, 'usr/local/games')?.kind, 'file');
    assert.equal(at(tree, 'usr/share/man'), undefined, 'whited out by the last layer');
    assert.deepEqual([...((at(tree, 'etc/apt/apt.conf.d') as { children: Map<string, unknown> }).children.keys())], ['99norecommends'], 'opaque');
    assert.equal(at(tree, 'usr/bin/pydoc3.11'), undefined);

    const unpacked = await umociUnpack(this, corpus, 'py-app');
    try {
      const ours = snapshotTree(tree, (c) => c);
      const theirs = await snapshotDir(unpacked.rootfs);
      assert.ok(theirs.size > 5000, `umoci unpacked ${theirs.size} paths`);
      const diffs = diffSnapshots(ours, theirs, { ignoreMtime: wallClockDirs(tree) });
      assert.deepEqual(diffs, [], `ours (a) vs umoci (b):\n${diffs.join('\n')}`);
    } finally {
      await unpacked.cleanup();
    }
  });
});
