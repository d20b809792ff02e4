/**
 * The bundled example image (examples/hello) stays valid and reproducible,
 * and the reference tools (umoci, skopeo) read it as the README says.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { lstat, readFile, readdir, readlink } from 'node:fs/promises';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { exampleImageDir, repoRoot, requireTool, run, tmpDir, umociUnpack } from './tools.js';

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

async function readBlob(layout: string, digest: string): Promise<Buffer> {
  return readFile(path.join(layout, 'blobs', 'sha256', digest.replace(/^sha256:/, '')));
}

async function manifestOf(layout: string): Promise<{ config: Descriptor; layers: Descriptor[] }> {
  const index = JSON.parse(await readFile(path.join(layout, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const latest = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === 'latest');
  assert.ok(latest, 'index.json has a manifest tagged latest');
  return JSON.parse((await readBlob(layout, latest.digest)).toString('utf8')) as { config: Descriptor; layers: Descriptor[] };
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('examples/hello', function () {
  const layout = exampleImageDir();

  it('every committed blob matches its digest and the manifest sizes', async function () {
    const blobs = await readdir(path.join(layout, 'blobs', 'sha256'));
    assert.ok(blobs.length >= 4, `expected config, manifest and 2 layers, found ${blobs.length} blobs`);
    for (const name of blobs) {
      assert.equal(sha256(await readFile(path.join(layout, 'blobs', 'sha256', name))), `sha256:${name}`);
    }
    const m = await manifestOf(layout);
    assert.equal(m.layers.length, 2);
    for (const d of [m.config, ...m.layers]) assert.equal((await readBlob(layout, d.digest)).length, d.size, d.digest);
    const config = JSON.parse((await readBlob(layout, m.config.digest)).toString('utf8')) as {
      config: { Cmd: string[]; Env: string[] };
      rootfs: { diff_ids: string[] };
    };
    assert.deepEqual(config.config.Cmd, ['/bin/hello']);
    assert.ok(config.config.Env.some((e) => e.startsWith('PATH=')));
    const diffIds = await Promise.all(m.layers.map(async (l) => sha256(gunzipSync(await readBlob(layout, l.digest)))));
    assert.deepEqual(diffIds, config.rootfs.diff_ids);
  });

  it('regenerates with the same config and layer contents', async function () {
    const tmp = await tmpDir('hello');
    try {
      const out = path.join(tmp.path, 'hello');
      await run(process.execPath, [path.join(repoRoot(), 'examples', 'make-hello.mjs'), out]);
      const [a, b] = [await manifestOf(layout), await manifestOf(out)];
      assert.equal(b.config.digest, a.config.digest, 'config (which lists the diff_ids) differs: commit the regenerated examples/hello');
      const unzipped = async (l: string, m: { layers: Descriptor[] }): Promise<Buffer[]> =>
        Promise.all(m.layers.map(async (d) => gunzipSync(await readBlob(l, d.digest))));
      assert.deepEqual(await unzipped(out, b), await unzipped(layout, a));
    } finally {
      await tmp.cleanup();
    }
  });

  it('umoci unpacks it with the whiteout and the mode change applied', async function () {
    const u = await umociUnpack(this, layout, 'latest');
    try {
      const p = (rel: string): string => path.join(u.rootfs, rel);
      assert.equal((await lstat(p('bin/hello'))).mode & 0o7777, 0o755);
      assert.match(await readFile(p('etc/os-release'), 'utf8'), /^NAME="Hello"/);
      assert.equal(await readlink(p('usr/bin/hello')), '../../bin/hello');
      assert.equal(await readFile(p('usr/share/hello/added.txt'), 'utf8'), 'Added by the second layer.\n');
      assert.equal((await lstat(p('usr/share/hello/greeting.txt'))).mode & 0o7777, 0o600);
      assert.equal((await lstat(p('var/tmp'))).mode & 0o7777, 0o1777);
      await assert.rejects(lstat(p('usr/share/hello/old.txt')), { code: 'ENOENT' });
      await assert.rejects(lstat(p('usr/share/hello/.wh.old.txt')), { code: 'ENOENT' });
    } finally {
      await u.cleanup();
    }
  });

  it('skopeo inspects it', async function () {
    requireTool(this, 'skopeo');
    const ref = `oci:${layout}:latest`;
    const info = JSON.parse((await run('skopeo', ['inspect', ref])).stdout) as { Layers: string[]; Env: string[]; Os: string };
    assert.equal(info.Layers.length, 2);
    assert.equal(info.Os, 'linux');
    assert.ok(info.Env.includes('GREETING=hello'));
    const config = JSON.parse((await run('skopeo', ['inspect', '--config', ref])).stdout) as { config: { Cmd: string[] } };
    assert.deepEqual(config.config.Cmd, ['/bin/hello']);
  });
});
