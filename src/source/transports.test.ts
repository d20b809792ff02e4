import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { InputError, NotFoundError, UsageError } from '../errors.js';
import { writeDockerArchive, writeOciArchive, writeOciLayout } from '../testing/oci-writer.js';
import { tarOf } from '../testing/tar-writer.js';
import { type TmpDir, tmpDir } from '../testing/tools.js';
import { DockerArchiveReference } from './docker-archive.js';
import { OciArchiveReference } from './oci-archive.js';
import { OciLayoutReference } from './oci.js';
import { parseImageReference, TRANSPORTS } from './transports.js';

const L0 = tarOf([{ name: 'hello', data: 'world' }]);

function roundTrips(s: string): void {
  const ref = parseImageReference(s);
  const again = parseImageReference(ref.toString());
  assert.equal(again.toString(), ref.toString(), s);
  assert.equal(again.transport, ref.transport);
  assert.equal(ref.transport.parse(ref.withinTransport()).toString(), ref.toString());
  assert.equal(ref.toString(), `${ref.transport.name}:${ref.withinTransport()}`);
}

describe('source/transports', () => {
  let tmp: TmpDir;
  let layout: string;
  let ociTar: string;
  let dockerTar: string;
  let colonDir: string;
  before(async () => {
    tmp = await tmpDir('transports');
    layout = path.join(tmp.path, 'layout');
    await writeOciLayout(layout, [{ tag: 'v1', layers: [L0] }]);
    ociTar = path.join(tmp.path, 'image.oci.tar');
    await writeOciArchive(ociTar, [{ tag: 'v1', layers: [L0] }]);
    dockerTar = path.join(tmp.path, 'image.docker.tar');
    await writeDockerArchive(dockerTar, [{ repoTags: ['synth/x:1'], layers: [L0] }]);
    colonDir = path.join(tmp.path, 'with:colon', 'layout');
    await writeOciLayout(colonDir, [{ tag: 'v1', layers: [L0] }]);
  });
  after(async () => {
    await tmp.cleanup();
  });

  it('lists the three file transports and docker://, each once', () => {
    assert.deepEqual(
      TRANSPORTS.map((t) => t.name),
      ['oci', 'oci-archive', 'docker-archive', 'docker'],
    );
  });

  it('splits at the first colon and parses each transport', () => {
    const oci = parseImageReference('oci:/some/dir:tag');
    assert.ok(oci instanceof OciLayoutReference);
    assert.equal(oci.path, '/some/dir');
    assert.equal(oci.tag, 'tag');
    const arch = parseImageReference('oci-archive:rel/file.tar');
    assert.ok(arch instanceof OciArchiveReference);
    assert.equal(arch.tag, undefined);
    const d1 = parseImageReference('docker-archive:/x.tar:localhost:5000/a/b:c');
    assert.ok(d1 instanceof DockerArchiveReference);
    assert.deepEqual(d1.selector, { kind: 'name', name: 'localhost:5000/a/b:c', familiar: 'localhost:5000/a/b:c' });
    const d2 = parseImageReference('docker-archive:/x.tar:@3');
    assert.ok(d2 instanceof DockerArchiveReference);
    assert.deepEqual(d2.selector, { kind: 'index', index: 3 });
  });

  it('round-trips every reference', () => {
    for (const s of [
      'oci:/some/dir',
      'oci:/some/dir:tag',
      'oci:relative:v1.0',
      'oci:/dir:',
      'oci-archive:/a/b.tar',
      'oci-archive:/a/b.tar:name',
      'docker-archive:/x.tar',
      'docker-archive:/x.tar:@0',
      'docker-archive:/x.tar:alpine',
      'docker-archive:/x.tar:docker.io/library/alpine:3.19',
      'docker-archive:/x.tar:localhost:5000/a/b:c',
      `oci:${layout}:v1`,
      `oci:${colonDir}`,
      `oci:${colonDir}:v1`,
      layout,
      `${layout}:v1`,
      ociTar,
      dockerTar,
      `${dockerTar}:synth/x:1`,
      `${dockerTar}:@0`,
      colonDir,
    ]) {
      roundTrips(s);
    }
  });

  it('detects what a bare path holds', () => {
    const a = parseImageReference(layout);
    assert.ok(a instanceof OciLayoutReference);
    assert.equal(a.toString(), `oci:${layout}`);
    const b = parseImageReference(`${layout}:v1`);
    assert.ok(b instanceof OciLayoutReference);
    assert.equal(b.tag, 'v1');
    assert.ok(parseImageReference(ociTar) instanceof OciArchiveReference);
    const d = parseImageReference(dockerTar);
    assert.ok(d instanceof DockerArchiveReference);
    assert.deepEqual(d.selector, { kind: 'only' });
    const e = parseImageReference(`${dockerTar}:@0`);
    assert.ok(e instanceof DockerArchiveReference);
    assert.deepEqual(e.selector, { kind: 'index', index: 0 });
  });

  it('handles paths that contain colons, bare or with a transport', async () => {
    const bare = parseImageReference(colonDir);
    assert.ok(bare instanceof OciLayoutReference);
    assert.equal(bare.path, colonDir);
    assert.equal(bare.tag, undefined);
    const tagged = parseImageReference(`oci:${colonDir}:v1`);
    assert.ok(tagged instanceof OciLayoutReference);
    assert.equal(tagged.path, colonDir);
    assert.equal(tagged.tag, 'v1');
    const src = await tagged.open();
    assert.equal(src.layers.length, 1);
  });

  it('opens detected references', async () => {
    for (const s of [layout, ociTar, dockerTar, `${dockerTar}:synth/x:1`]) {
      const src = await parseImageReference(s).open();
      assert.equal(src.layers.length, 1, s);
    }
  });

  it('rejects unknown transports, missing paths and malformed references with the right class', async () => {
    assert.throws(
      () => parseImageReference('docker2:foo'),
      (e: unknown) => e instanceof UsageError && e.message === 'unknown transport "docker2" in "docker2:foo"; known transports: oci, oci-archive, docker-archive, docker (or give the path of an existing image layout or archive)',
    );
    assert.throws(() => parseImageReference('alpine:3.19'), UsageError);
    assert.throws(() => parseImageReference(''), UsageError);
    assert.throws(() => parseImageReference(path.join(tmp.path, 'absent.tar')), (e: unknown) => e instanceof NotFoundError && /no such file or directory/.test(e.message));
    assert.throws(() => parseImageReference('oci::tag'), (e: unknown) => e instanceof InputError && /missing path/.test(e.message));
    assert.throws(() => parseImageReference('oci:/x:bad tag'), (e: unknown) => e instanceof InputError && /bad tag/.test(e.message));
    assert.throws(() => parseImageReference('docker-archive:/x.tar:@-1'), (e: unknown) => e instanceof InputError && /not @N/.test(e.message));
    assert.throws(() => parseImageReference('docker-archive:/x.tar:@01'), InputError);
    assert.throws(() => parseImageReference(`docker-archive:/x.tar:a@sha256:${'a'.repeat(64)}`), (e: unknown) => e instanceof InputError && /digest references are not supported/.test(e.message));
    const plainDir = path.join(tmp.path, 'plain');
    await mkdir(plainDir);
    assert.throws(() => parseImageReference(plainDir), (e: unknown) => e instanceof InputError && /not an OCI image layout/.test(e.message));
    const notImage = path.join(tmp.path, 'files.tar');
    await writeFile(notImage, tarOf([{ name: 'a', data: 'b' }]));
    assert.throws(() => parseImageReference(notImage), (e: unknown) => e instanceof InputError && /neither a docker save archive/.test(e.message));
  });
});
