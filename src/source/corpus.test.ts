/**
 * Every transport over real images: the corpus layout, and docker-archive,
 * oci-archive and zstd copies of it made by skopeo at test time.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { drain } from '../testing/streams.js';
import { requireCorpus, requireTool, run, type TmpDir, tmpDir } from '../testing/tools.js';
import { DockerArchiveReference } from './docker-archive.js';
import { OciArchiveReference } from './oci-archive.js';
import { OciLayoutReference } from './oci.js';
import type { ImageSource } from './source.js';
import { parseImageReference } from './transports.js';

describe('source transports on the corpus (skopeo-made fixtures)', function () {
  let corpus: string;
  let tmp: TmpDir | undefined;
  let dockerTar: string;
  let ociTar: string;
  let zstdDir: string;
  const opened: ImageSource[] = [];

  before(async function () {
    corpus = requireCorpus(this);
    requireTool(this, 'skopeo');
    tmp = await tmpDir('corpus-sources');
    dockerTar = path.join(tmp.path, 'base-docker.tar');
    ociTar = path.join(tmp.path, 'base-oci.tar');
    zstdDir = path.join(tmp.path, 'zstd');
    await run('skopeo', ['copy', '-q', `oci:${corpus}:base`, `docker-archive:${dockerTar}:corpus/base:latest`]);
    await run('skopeo', ['copy', '-q', `oci:${corpus}:base`, `oci-archive:${ociTar}:base`]);
    await run('skopeo', ['copy', '-q', '--dest-compress-format', 'zstd', `oci:${corpus}:py`, `oci:${zstdDir}:py`]);
  });
  after(async () => {
    for (const s of opened) await s.close();
    await tmp?.cleanup();
  });

  async function openRef(s: string): Promise<ImageSource> {
    const src = await parseImageReference(s).open();
    opened.push(src);
    return src;
  }

  it('every transport yields the same config and diff_ids, and each layer stream hashes to its diff_id', async () => {
    const ref = await openRef(`oci:${corpus}:base`);
    assert.equal(ref.layers.length, 1);
    for (const s of [`oci:${corpus}:base`, `oci-archive:${ociTar}`, `oci-archive:${ociTar}:base`, `docker-archive:${dockerTar}`]) {
      const src = await openRef(s);
      assert.equal(src.configDigest, ref.configDigest, s);
      assert.deepEqual(src.config, ref.config, s);
      assert.deepEqual(
        src.layers.map((l) => l.diffId),
        ref.config.rootfs.diff_ids,
        s,
      );
      for (const l of src.layers) {
        const { digest, bytes } = await drain(l.open());
        assert.equal(digest, l.diffId, `${s} layer ${l.index}`);
        assert.ok(bytes > 1_000_000);
      }
    }
    const oci = await openRef(`oci-archive:${ociTar}`);
    assert.equal(oci.manifestDigest, ref.manifestDigest, 'oci-archive keeps the manifest');
    const docker = await openRef(`docker-archive:${dockerTar}`);
    assert.equal(docker.layers[0]?.mediaType, 'application/vnd.docker.image.rootfs.diff.tar');
  });

  it('reads a zstd layout (py, 2 layers)', async () => {
    const py = await openRef(`oci:${corpus}:py`);
    const z = await openRef(`oci:${zstdDir}:py`);
    assert.deepEqual(z.config.rootfs.diff_ids, py.config.rootfs.diff_ids);
    assert.equal(z.layers.length, 2);
    for (const l of z.layers) {
      assert.equal(l.mediaType, 'application/vnd.oci.image.layer.v1.tar+zstd');
      assert.equal((await drain(l.open())).digest, l.diffId);
    }
  });

  it('selects docker-archive images by @0 and by name:tag', async () => {
    const all = await openRef(`docker-archive:${dockerTar}`);
    for (const s of [`docker-archive:${dockerTar}:@0`, `docker-archive:${dockerTar}:corpus/base:latest`, `docker-archive:${dockerTar}:docker.io/corpus/base`]) {
      assert.equal((await openRef(s)).configDigest, all.configDigest, s);
    }
    await assert.rejects(openRef(`docker-archive:${dockerTar}:corpus/other:latest`), /no image named corpus\/other:latest; images: @0 \(docker\.io\/corpus\/base:latest\)/);
  });

  it('detects bare paths and round-trips their references', () => {
    const cases: [string, new (...a: never[]) => object][] = [
      [corpus, OciLayoutReference],
      [zstdDir, OciLayoutReference],
      [ociTar, OciArchiveReference],
      [dockerTar, DockerArchiveReference],
      [`${corpus}:py-app`, OciLayoutReference],
      [`${dockerTar}:@0`, DockerArchiveReference],
    ];
    for (const [s, cls] of cases) {
      const ref = parseImageReference(s);
      assert.ok(ref instanceof cls, s);
      assert.equal(parseImageReference(ref.toString()).toString(), ref.toString());
    }
  });
});
