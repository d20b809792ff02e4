/**
 * A two-platform image index pushed to a real registry with `skopeo copy
 * --all`: linux/amd64 is the corpus base image, linux/arm64 a small synthetic
 * image. `--platform` picks the member, the default is linux/amd64, and a
 * platform not there is a clear error listing those that are.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { runCli } from '../../testing/cli-run.js';
import { sha256File } from '../../testing/streams.js';
import { blobFile, writeBlob, writeOciLayout } from '../../testing/oci-writer.js';
import { tarOf } from '../../testing/tar-writer.js';
import { type RegistryServer, requireRegistry, startRegistry } from '../../testing/registry-server.js';
import { requireCorpus, requireTool, run, type TmpDir, tmpDir } from '../../testing/tools.js';
import { type Digest, sha256Digest } from '../digest.js';

interface Desc {
  mediaType: string;
  digest: Digest;
  size: number;
  annotations?: Record<string, string>;
}

/** Copies the corpus image tagged `tag` (manifest, config, layers) into the layout `dir`; returns its manifest descriptor. */
async function copyCorpusImage(corpus: string, tag: string, dir: string): Promise<Desc> {
  const index = JSON.parse(await readFile(path.join(corpus, 'index.json'), 'utf8')) as { manifests: Desc[] };
  const desc = index.manifests.find((d) => d.annotations?.['org.opencontainers.image.ref.name'] === tag);
  assert.ok(desc !== undefined, `corpus tag ${tag}`);
  const manifest = JSON.parse(await readFile(blobFile(corpus, desc.digest), 'utf8')) as { config: Desc; layers: Desc[] };
  for (const d of [desc, manifest.config, ...manifest.layers]) {
    await mkdir(path.dirname(blobFile(dir, d.digest)), { recursive: true });
    await copyFile(blobFile(corpus, d.digest), blobFile(dir, d.digest));
  }
  return { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
}

describe('docker:// multi-platform index (skopeo copy --all to a real registry)', function () {
  this.timeout(300_000);
  let corpus: string;
  let tmp: TmpDir | undefined;
  let reg: RegistryServer | undefined;
  let layout: string;
  let indexDigest: Digest;

  before(async function () {
    corpus = requireCorpus(this);
    requireTool(this, 'skopeo');
    requireRegistry(this);
    tmp = await tmpDir('multi-platform');
    layout = path.join(tmp.path, 'layout');
    // The arm64 member: a small synthetic image (its blobs land in the layout; its index.json is replaced below).
    const [arm] = await writeOciLayout(layout, [
      {
        tag: 'arm',
        platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
        layers: [tarOf([{ name: 'etc/', type: 'dir' }, { name: 'etc/os-release', data: 'ID=arm-test\n' }, { name: 'bin/', type: 'dir' }, { name: 'bin/hello', data: 'arm64 '.repeat(5000), mode: 0o755 }])],
      },
    ]);
    const armImage = arm?.images[0];
    assert.ok(armImage !== undefined);
    const amd = await copyCorpusImage(corpus, 'base', layout);
    const index = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        { ...amd, platform: { architecture: 'amd64', os: 'linux' } },
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: armImage.manifestDigest, size: armImage.manifestSize, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
      ],
    };
    const idx = await writeBlob(layout, Buffer.from(JSON.stringify(index)));
    indexDigest = idx.digest;
    await writeFile(
      path.join(layout, 'index.json'),
      JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: index.mediaType, ...idx, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }] }),
    );
    reg = await startRegistry();
    await run('skopeo', ['copy', '-q', '--all', '--dest-tls-verify=false', `oci:${layout}:latest`, `docker://${reg.host}/multi:latest`]);
  });
  after(async () => {
    await reg?.stop();
    await tmp?.cleanup();
  });

  const out = (name: string): string => path.join((tmp as TmpDir).path, name);

  it('the registry serves the index skopeo pushed, unchanged', async function () {
    const { stdout } = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${(reg as RegistryServer).host}/multi:latest`], { stdoutBuffer: true });
    assert.equal(sha256Digest(stdout), indexDigest);
    const served = JSON.parse(stdout.toString('utf8')) as { manifests: { platform: { architecture: string } }[] };
    assert.deepEqual(served.manifests.map((m) => m.platform.architecture), ['amd64', 'arm64']);
  });

  it('--platform linux/arm64 builds the arm64 member, byte-identical to building it from the layout', async function () {
    const r = await runCli(['build', `docker://${(reg as RegistryServer).host}/multi:latest`, '--platform', 'linux/arm64', '-o', out('reg-arm.ext4')]);
    assert.equal(r.code, 0, r.stderr);
    const l = await runCli(['build', `oci:${layout}:latest`, '--platform', 'linux/arm64', '-o', out('oci-arm.ext4')]);
    assert.equal(l.code, 0, l.stderr);
    assert.equal(await sha256File(out('reg-arm.ext4')), await sha256File(out('oci-arm.ext4')));
    // Pinned by the index digest, the same member comes out.
    const p = await runCli(['build', `docker://${(reg as RegistryServer).host}/multi@${indexDigest}`, '--platform', 'linux/arm64/v8', '-o', out('pin-arm.ext4')]);
    assert.equal(p.code, 0, p.stderr);
    assert.equal(await sha256File(out('pin-arm.ext4')), await sha256File(out('oci-arm.ext4')));
  });

  it('without --platform takes linux/amd64: the corpus base image', async function () {
    const r = await runCli(['build', `docker://${(reg as RegistryServer).host}/multi:latest`, '-o', out('reg-default.ext4')]);
    assert.equal(r.code, 0, r.stderr);
    const b = await runCli(['build', `oci:${corpus}:base`, '-o', out('oci-base.ext4')]);
    assert.equal(b.code, 0, b.stderr);
    assert.equal(await sha256File(out('reg-default.ext4')), await sha256File(out('oci-base.ext4')));
    assert.notEqual(await sha256File(out('reg-default.ext4')), await sha256File(out('oci-arm.ext4')));
  });

  it('a platform not in the index is a clear error (exit 4) listing those present', async function () {
    const r = await runCli(['build', `docker://${(reg as RegistryServer).host}/multi:latest`, '--platform', 'linux/s390x', '-o', out('none.ext4')]);
    assert.equal(r.code, 4, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.match(r.stderr, /no image for linux\/s390x; platforms present: linux\/amd64, linux\/arm64\/v8/);
  });
});
