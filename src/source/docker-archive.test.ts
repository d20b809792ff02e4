/** docker-archive: synthetic `docker save` tarballs, classic and Docker 25+ forms. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import zlib from 'node:zlib';
import { type ChunkyardError, InputError, NotFoundError } from '../errors.js';
import { writeDockerArchive, writeOciArchive } from '../testing/oci-writer.js';
import { drain } from '../testing/streams.js';
import { tarOf } from '../testing/tar-writer.js';
import { type TmpDir, tmpDir } from '../testing/tools.js';
import { sha256Digest } from './digest.js';
import { dockerArchiveTransport, familiarDockerName } from './docker-archive.js';
import { ociArchiveTransport } from './oci-archive.js';
import type { ImageSource } from './source.js';

const L0 = tarOf([{ name: 'etc/os-release', data: 'ID=synthetic\n' }]);
const L1 = tarOf([{ name: 'usr/bin/tool', data: randomBytes(50_000) }]);

function rejectsWith(cls: abstract new (...a: never[]) => ChunkyardError, re: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  };
}

function open(rest: string): Promise<ImageSource> {
  return dockerArchiveTransport.parse(rest).open();
}

async function checkLayers(src: ImageSource, tars: readonly Buffer[]): Promise<void> {
  assert.deepEqual(
    src.layers.map((l) => l.diffId),
    tars.map((t) => sha256Digest(t)),
  );
  for (const l of src.layers) assert.equal((await drain(l.open())).digest, l.diffId);
}

describe('source/docker-archive (synthetic docker save archives)', () => {
  let tmp: TmpDir;
  before(async () => {
    tmp = await tmpDir('docker-archive');
  });
  after(async () => {
    await tmp.cleanup();
  });

  it('normalises names to the familiar form RepoTags use', () => {
    assert.equal(familiarDockerName('docker.io/library/alpine:3.19'), 'alpine:3.19');
    assert.equal(familiarDockerName('alpine'), 'alpine:latest');
    assert.equal(familiarDockerName('library/alpine:1'), 'alpine:1');
    assert.equal(familiarDockerName('docker.io/corpus/base:latest'), 'corpus/base:latest');
    assert.equal(familiarDockerName('localhost:5000/a/b:c'), 'localhost:5000/a/b:c');
    assert.equal(familiarDockerName('quay.io/x/y'), 'quay.io/x/y:latest');
    assert.equal(familiarDockerName('upper/Case:x'), undefined);
    assert.equal(familiarDockerName('a/b:bad tag'), undefined);
    assert.equal(familiarDockerName('a@sha256:' + 'a'.repeat(64)), undefined);
  });

  it('reads a classic archive, following a duplicate layer symlink', async () => {
    const file = path.join(tmp.path, 'classic.tar');
    const [w] = await writeDockerArchive(file, [{ repoTags: ['synth/app:1'], layers: [L0, L1, L0] }]);
    const src = await open(file);
    assert.equal(src.configDigest, w?.configDigest);
    assert.equal(src.manifestDigest, w?.configDigest, 'classic: manifest digest is the config digest');
    await checkLayers(src, [L0, L1, L0]);
    for (const l of src.layers) {
      assert.equal(l.mediaType, 'application/vnd.docker.image.rootfs.diff.tar');
      assert.equal(l.digest, l.diffId, 'an uncompressed layer blob is its diff_id');
    }
  });

  it('hashes compressed classic layers (umoci-style archives) to learn their digest', async () => {
    const file = path.join(tmp.path, 'umoci.tar');
    await writeDockerArchive(file, [{ layers: [L0, L1] }], { layerCompression: 'gzip' });
    const src = await open(file);
    await checkLayers(src, [L0, L1]);
    assert.equal(src.layers[1]?.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
    assert.equal(src.layers[1]?.digest, sha256Digest(zlib.gzipSync(L1)));
  });

  it('selects by @N or NAME:TAG; without either needs exactly one image', async () => {
    const file = path.join(tmp.path, 'two.tar');
    const w = await writeDockerArchive(file, [
      { repoTags: ['first:latest'], layers: [L0] },
      { repoTags: ['docker.io/second/img:v2', 'second/img:latest'], layers: [L0, L1] },
    ]);
    assert.equal((await open(`${file}:@0`)).configDigest, w[0]?.configDigest);
    assert.equal((await open(`${file}:@1`)).configDigest, w[1]?.configDigest);
    assert.equal((await open(`${file}:first`)).configDigest, w[0]?.configDigest);
    assert.equal((await open(`${file}:docker.io/library/first:latest`)).configDigest, w[0]?.configDigest);
    assert.equal((await open(`${file}:second/img:v2`)).configDigest, w[1]?.configDigest);
    assert.equal((await open(`${file}:second/img`)).configDigest, w[1]?.configDigest);
    await assert.rejects(open(file), rejectsWith(InputError, /holds 2 images, pick one with :NAME:TAG or :@N; images: @0 \(first:latest\), @1 \(docker\.io\/second\/img:v2, second\/img:latest\)$/));
    await assert.rejects(open(`${file}:@2`), rejectsWith(NotFoundError, /no image @2; the archive holds 2/));
    await assert.rejects(open(`${file}:third:x`), rejectsWith(NotFoundError, /no image named third:x; images: /));
  });

  it('reads the Docker 25+ form through its OCI index', async () => {
    const file = path.join(tmp.path, 'moby25.tar');
    const [w] = await writeDockerArchive(file, [{ repoTags: ['new/style:1'], layers: [L0, L1] }], { format: 'oci' });
    const src = await open(`${file}:new/style:1`);
    assert.equal(src.manifestDigest, w?.manifestDigest);
    assert.equal(src.configDigest, w?.configDigest);
    assert.equal(src.layers[0]?.mediaType, 'application/vnd.oci.image.layer.v1.tar');
    await checkLayers(src, [L0, L1]);
  });

  it('falls back to manifest.json when the OCI manifest has no layers (Docker 25.0.0)', async () => {
    const file = path.join(tmp.path, 'moby2500.tar');
    const [w] = await writeDockerArchive(file, [{ repoTags: ['broken/one:1'], layers: [L0, L1] }], { format: 'oci', emptyOciLayers: true });
    const src = await open(file);
    assert.equal(src.manifestDigest, w?.configDigest, 'built from manifest.json');
    await checkLayers(src, [L0, L1]);
  });

  it('explains what is wrong with archives that are not docker save output', async () => {
    const oci = path.join(tmp.path, 'oci.tar');
    await writeOciArchive(oci, [{ layers: [L0] }]);
    await assert.rejects(open(oci), rejectsWith(InputError, /no manifest\.json in the archive; it is an OCI layout, open it as oci-archive:$/));
    const classic = path.join(tmp.path, 'for-oci.tar');
    await writeDockerArchive(classic, [{ layers: [L0] }]);
    await assert.rejects(ociArchiveTransport.parse(classic).open(), rejectsWith(InputError, /it is a docker save archive, open it as docker-archive:$/));
    await assert.rejects(open(path.join(tmp.path, 'absent.tar')), rejectsWith(NotFoundError, /no such file/));
    await assert.rejects(open(tmp.path), rejectsWith(InputError, /is not a regular file/));
  });
});
