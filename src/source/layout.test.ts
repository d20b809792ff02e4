/**
 * The OCI layout reader (oci: and oci-archive:) on small synthetic layouts
 * written by src/testing/oci-writer.ts: happy paths for each compression,
 * tags, platforms, and every kind of bad input with its error class.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { type ChunkyardError, InputError, IntegrityError, InterruptedError, NotFoundError } from '../errors.js';
import { blobFile, compressLayer, writeBlob, writeOciArchive, writeOciLayout } from '../testing/oci-writer.js';
import { drain, openFdCount, readAllBytes } from '../testing/streams.js';
import { tarOf } from '../testing/tar-writer.js';
import { type TmpDir, tmpDir } from '../testing/tools.js';
import { type Digest, sha256Digest } from './digest.js';
import { OciArchiveReference } from './oci-archive.js';
import { OciLayoutReference } from './oci.js';
import { parsePlatform } from './platform.js';
import type { ImageSource, OpenOptions } from './source.js';

const L0 = tarOf([
  { name: 'etc/', type: 'dir' },
  { name: 'etc/hostname', data: 'synthetic\n' },
  { name: 'bin/sh', data: randomBytes(20_000), mode: 0o755 },
]);
const L1 = tarOf([{ name: 'app/data', data: Buffer.concat([randomBytes(100_000), Buffer.alloc(100_000)]) }]);
const L2 = tarOf([{ name: 'app/.wh.data', data: '' }]);

function rejectsWith<T extends ChunkyardError>(cls: new (...a: never[]) => T, re: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    assert.match(e.message, re);
    assert.ok(!e.message.includes('\n'), 'one-line message');
    return true;
  };
}

async function openOci(dir: string, tag?: string, options: OpenOptions = {}): Promise<ImageSource> {
  return new OciLayoutReference(dir, tag).open(options);
}

/** Opens the image and reads every layer to its end. */
async function openAndDrain(dir: string, tag?: string, options: OpenOptions = {}): Promise<ImageSource> {
  const src = await openOci(dir, tag, options);
  for (const l of src.layers) await drain(l.open());
  return src;
}

describe('source/layout (synthetic OCI layouts)', () => {
  let tmp: TmpDir;
  let n = 0;
  const fresh = (): string => path.join(tmp.path, `l${n++}`);
  before(async () => {
    tmp = await tmpDir('layout');
  });
  after(async () => {
    await tmp.cleanup();
  });

  for (const compression of ['gzip', 'zstd', 'none'] as const) {
    it(`reads a ${compression} image: config, layers, and uncompressed streams equal to the tars`, async () => {
      const dir = fresh();
      const [w] = await writeOciLayout(dir, [{ tag: 'v1', layers: [L0, L1, L2], compression, config: { config: { Env: ['A=1'], Cmd: ['/bin/sh'], User: '1000' } } }]);
      const img = w?.images[0];
      assert.ok(img !== undefined);
      const src = await openOci(dir, 'v1');
      assert.equal(src.manifestDigest, img.manifestDigest);
      assert.equal(src.configDigest, img.configDigest);
      assert.deepEqual(src.config.rootfs.diff_ids, [L0, L1, L2].map((l) => sha256Digest(l)));
      assert.deepEqual(src.config.config?.Env, ['A=1']);
      assert.equal(src.config.config?.User, '1000');
      assert.equal(src.layers.length, 3);
      for (const [i, tar] of [L0, L1, L2].entries()) {
        const layer = src.layers[i];
        assert.ok(layer !== undefined);
        assert.equal(layer.index, i);
        assert.equal(layer.digest, img.layerDigests[i]);
        assert.equal(layer.size, img.layerSizes[i]);
        assert.equal(layer.diffId, sha256Digest(tar));
        assert.match(layer.mediaType, /^application\/vnd\.oci\.image\.layer\.v1\.tar/);
        assert.ok((await readAllBytes(layer.open())).equals(tar));
        // Fresh stream each call.
        assert.equal((await drain(layer.open())).digest, layer.diffId);
      }
      await src.close();
      await src.close();
    });
  }

  it('also reads the layout packed as an oci-archive (with ./ names)', async () => {
    const file = path.join(tmp.path, 'packed.tar');
    const [w] = await writeOciArchive(file, [{ tag: 'x', layers: [L0, L1], compression: 'gzip' }], { dotSlash: true });
    const src = await new OciArchiveReference(file, 'x').open();
    assert.equal(src.manifestDigest, w?.digest);
    assert.deepEqual(
      src.layers.map((l) => l.diffId),
      [L0, L1].map((l) => sha256Digest(l)),
    );
    for (const l of src.layers) assert.equal((await drain(l.open())).digest, l.diffId);
    assert.equal((await new OciArchiveReference(file).open()).manifestDigest, w?.digest);
  });

  it('picks images by tag; without one, needs a single image', async () => {
    const dir = fresh();
    const w = await writeOciLayout(dir, [
      { tag: 'a', layers: [L0] },
      { tag: 'b', layers: [L0, L1] },
    ]);
    assert.equal((await openOci(dir, 'a')).manifestDigest, w[0]?.digest);
    assert.equal((await openOci(dir, 'b')).layers.length, 2);
    await assert.rejects(openOci(dir), rejectsWith(InputError, /holds 2 images, name one with :TAG; tags: a, b$/));
    await assert.rejects(openOci(dir, 'c'), rejectsWith(NotFoundError, /no image tagged "c" in .*; tags: a, b$/));
    const one = fresh();
    const [only] = await writeOciLayout(one, [{ layers: [L0] }]);
    assert.equal((await openOci(one)).manifestDigest, only?.digest);
    await assert.rejects(openOci(one, 'latest'), rejectsWith(NotFoundError, /no image tagged "latest" .*; tags: \(none\)$/));
  });

  describe('platforms', () => {
    let dir: string;
    let amd64: Digest;
    let arm64: Digest;
    let armv7: Digest;
    before(async () => {
      dir = fresh();
      const [w] = await writeOciLayout(dir, [
        {
          tag: 'multi',
          attestation: true,
          platforms: [
            { layers: [L0], platform: { os: 'linux', architecture: 'amd64' } },
            { layers: [L0, L1], platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
            { layers: [L1], platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
          ],
        },
      ]);
      [amd64, arm64, armv7] = (w?.images ?? []).map((i) => i.manifestDigest) as [Digest, Digest, Digest];
    });

    it('defaults to linux/amd64, skipping the attestation entry', async () => {
      const src = await openOci(dir, 'multi');
      assert.equal(src.manifestDigest, amd64);
      assert.equal(src.config.architecture, 'amd64');
    });

    it('takes the requested platform, normalised', async () => {
      assert.equal((await openOci(dir, 'multi', { platform: parsePlatform('linux/arm64') })).manifestDigest, arm64);
      assert.equal((await openOci(dir, 'multi', { platform: { os: 'linux', architecture: 'aarch64' } })).manifestDigest, arm64);
      assert.equal((await openOci(dir, 'multi', { platform: parsePlatform('linux/arm/v7') })).manifestDigest, armv7);
    });

    it('lists the platforms present when none matches', async () => {
      await assert.rejects(
        openOci(dir, 'multi', { platform: parsePlatform('linux/s390x') }),
        rejectsWith(NotFoundError, /no image for linux\/s390x; platforms present: linux\/amd64, linux\/arm64\/v8, linux\/arm\/v7$/),
      );
      await assert.rejects(openOci(dir, 'multi', { platform: parsePlatform('linux/arm/v6') }), NotFoundError);
    });

    it('follows nested indexes', async () => {
      const nested = fresh();
      const [w] = await writeOciLayout(nested, [
        {
          platforms: [
            { layers: [L0], platform: { os: 'linux', architecture: 'amd64' } },
            { layers: [L1], platform: { os: 'linux', architecture: 'arm64' } },
          ],
        },
      ]);
      assert.ok(w !== undefined);
      // index.json → outer index (unlabelled entry) → the platform index → manifests
      const outer = await writeBlob(nested, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ mediaType: w.mediaType, digest: w.digest, size: w.size }] })));
      await writeFile(
        path.join(nested, 'index.json'),
        JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', ...outer, annotations: { 'org.opencontainers.image.ref.name': 'n' } }] }),
      );
      assert.equal((await openOci(nested, 'n', { platform: parsePlatform('linux/arm64') })).manifestDigest, w.images[1]?.manifestDigest);
      assert.equal((await openOci(nested)).manifestDigest, w.images[0]?.manifestDigest);
      await assert.rejects(openOci(nested, 'n', { platform: parsePlatform('linux/ppc64le') }), rejectsWith(NotFoundError, /platforms present: linux\/amd64, linux\/arm64$/));
    });

    it('takes a single unlabelled manifest as is, whatever its architecture', async () => {
      const d = fresh();
      await writeOciLayout(d, [{ tag: 't', layers: [L0], platform: { os: 'linux', architecture: 'arm64' } }]);
      assert.equal((await openOci(d, 't')).config.architecture, 'arm64');
    });

    it('cross-checks the config against the index platform', async () => {
      const d = fresh();
      await writeOciLayout(d, [{ platforms: [{ layers: [L0], platform: { os: 'linux', architecture: 'arm64' }, config: { architecture: 'amd64' } }] }]);
      await assert.rejects(
        openOci(d, undefined, { platform: parsePlatform('linux/arm64') }),
        rejectsWith(InputError, /the index says linux\/arm64 but the image config says linux\/amd64$/),
      );
    });
  });

  describe('bad input', () => {
    it('one flipped byte in a layer blob: IntegrityError at the end of that layer', async () => {
      for (const compression of ['gzip', 'none', 'zstd'] as const) {
        const dir = fresh();
        const [w] = await writeOciLayout(dir, [{ layers: [L0, L1], compression }]);
        const digest = w?.images[0]?.layerDigests[1] as Digest;
        const file = blobFile(dir, digest);
        const blob = await readFile(file);
        const at = Math.floor(blob.length / 2);
        blob[at] = (blob[at] ?? 0) ^ 0x01;
        await writeFile(file, blob);
        const src = await openOci(dir); // sizes still match: opening succeeds
        assert.equal((await drain(src.layers[0]!.open())).digest, src.layers[0]!.diffId);
        let seen = 0;
        const s = src.layers[1]!.open();
        s.on('data', (c: Buffer) => (seen += c.length));
        await assert.rejects(once(s, 'end'), rejectsWith(IntegrityError, new RegExp(`^layer 1 ${digest} \\(.*\\): content hashes to sha256:[0-9a-f]{64}, expected ${digest}$`)));
        assert.ok(seen > 0 || compression !== 'none', `${compression}: data flowed before the failure`);
      }
    });

    it('a truncated gzip layer whose manifest vouches for it: InputError "truncated gzip stream"', async () => {
      const dir = fresh();
      const gz = zlib.gzipSync(L1);
      await writeOciLayout(dir, [{ layers: [L0, L1], layerBlobs: [undefined, gz.subarray(0, gz.length - 100)] }]);
      const src = await openOci(dir);
      await assert.rejects(drain(src.layers[1]!.open()), rejectsWith(InputError, new RegExp(`^layer 1 ${src.layers[1]!.digest}: truncated gzip stream$`)));
    });

    it('a diff_id that does not match the uncompressed content: IntegrityError', async () => {
      const dir = fresh();
      const wrong = sha256Digest('not the layer');
      await writeOciLayout(dir, [{ layers: [L0], config: { rootfs: { type: 'layers', diff_ids: [wrong] } } }]);
      const src = await openOci(dir);
      await assert.rejects(drain(src.layers[0]!.open()), rejectsWith(IntegrityError, new RegExp(`uncompressed content hashes to ${sha256Digest(L0)}, but the config's diff_id is ${wrong}$`)));
    });

    it('a manifest naming a missing blob: NotFoundError', async () => {
      const dir = fresh();
      const [w] = await writeOciLayout(dir, [{ layers: [L0, L1] }]);
      const img = w!.images[0]!;
      await rm(blobFile(dir, img.layerDigests[1]!));
      await assert.rejects(openOci(dir), rejectsWith(NotFoundError, new RegExp(`layer 1 blob ${img.layerDigests[1]} not found in `)));
      await rm(blobFile(dir, img.configDigest));
      await assert.rejects(openOci(dir), rejectsWith(NotFoundError, new RegExp(`config of oci:.*: blob ${img.configDigest} not found`)));
      await rm(blobFile(dir, img.manifestDigest));
      await assert.rejects(openOci(dir), rejectsWith(NotFoundError, new RegExp(`blob ${img.manifestDigest} not found`)));
    });

    it('a blob whose size differs from its descriptor: IntegrityError before reading it', async () => {
      const dir = fresh();
      await writeOciLayout(dir, [{ layers: [L0], editManifest: (m) => ({ ...m, layers: (m['layers'] as { size: number }[]).map((l) => ({ ...l, size: l.size + 1 })) }) }]);
      await assert.rejects(openOci(dir), rejectsWith(IntegrityError, /is \d+ bytes, but its descriptor says \d+$/));
    });

    it('malformed index.json or manifest JSON: InputError naming the file', async () => {
      const dir = fresh();
      await writeOciLayout(dir, [{ layers: [L0] }]);
      await writeFile(path.join(dir, 'index.json'), '{"schemaVersion": 2, "manifests": [');
      await assert.rejects(openOci(dir), rejectsWith(InputError, /index\.json: malformed JSON \(/));
      const bad = await writeBlob(dir, Buffer.from('{"schemaVersion": 2, oops}'));
      await writeFile(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...bad }] }));
      await assert.rejects(openOci(dir), rejectsWith(InputError, new RegExp(`${bad.digest.slice(7)}\\): malformed JSON`)));
      await writeFile(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ digest: 'sha256:XYZ', size: 1 }] }));
      await assert.rejects(openOci(dir), rejectsWith(InputError, /invalid digest in .*index\.json manifests\[0\]/));
    });

    it('a directory that is not a layout, or absent: InputError / NotFoundError', async () => {
      const dir = fresh();
      await writeOciLayout(dir, [{ layers: [L0] }]);
      await rm(path.join(dir, 'oci-layout'));
      await assert.rejects(openOci(dir), rejectsWith(InputError, /not an OCI image layout \(no oci-layout file\)$/));
      await assert.rejects(openOci(path.join(tmp.path, 'nope')), rejectsWith(NotFoundError, /no such directory/));
    });

    it('refuses schema1 manifests, artifacts, unknown layer types and unsupported compression', async () => {
      const dir = fresh();
      await writeOciLayout(dir, [{ layers: [L0] }]);
      const point = async (doc: unknown, mediaType = 'application/vnd.oci.image.manifest.v1+json'): Promise<void> => {
        const b = await writeBlob(dir, Buffer.from(JSON.stringify(doc)));
        await writeFile(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType, ...b }] }));
      };
      await point({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] }, 'application/vnd.docker.distribution.manifest.v1+prettyjws');
      await assert.rejects(openOci(dir), rejectsWith(InputError, /schema1 manifests are not supported/));
      const cfg = await writeBlob(dir, Buffer.from('{}'));
      await point({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.empty.v1+json', ...cfg }, layers: [] });
      await assert.rejects(openOci(dir), rejectsWith(InputError, /is an artifact \(config media type application\/vnd\.oci\.empty\.v1\+json\), not a container image$/));
      await point({ schemaVersion: 2, artifactType: 'application/vnd.example+type', config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg }, layers: [] });
      await assert.rejects(openOci(dir), rejectsWith(InputError, /is an artifact \(artifactType application\/vnd\.example\+type\)/));
      await point({ schemaVersion: 2, config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg }, layers: [{ mediaType: 'application/vnd.cncf.helm.chart.content.v1.tar+gzip', ...cfg }] });
      await assert.rejects(openOci(dir), rejectsWith(InputError, /has media type application\/vnd\.cncf\.helm\.chart\.content\.v1\.tar\+gzip, not a container image layer$/));
      await point({ schemaVersion: 2, mediaType: 'text/plain', config: {} }, 'text/plain');
      await assert.rejects(openOci(dir), rejectsWith(InputError, /media type "text\/plain" is not an image manifest or index$/));

      const xz = fresh();
      await writeOciLayout(xz, [{ layers: [L0], layerBlobs: [Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), randomBytes(100)])] }]);
      await assert.rejects(openOci(xz), rejectsWith(InputError, /unsupported compression xz/));
    });

    it('refuses a foreign layer whose blob is absent', async () => {
      const dir = fresh();
      const [w] = await writeOciLayout(dir, [
        {
          layers: [L0],
          editManifest: (m) => ({
            ...m,
            layers: (m['layers'] as object[]).map((l) => ({ ...l, mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', urls: ['https://example.com/layer'] })),
          }),
        },
      ]);
      await rm(blobFile(dir, w!.images[0]!.layerDigests[0]!));
      await assert.rejects(openOci(dir), rejectsWith(InputError, /foreign \(non-distributable\) layer whose blob is not included \(urls: https:\/\/example\.com\/layer\)/));
    });

    it('refuses a config whose diff_ids do not match the layer count', async () => {
      const dir = fresh();
      await writeOciLayout(dir, [{ layers: [L0], config: { rootfs: { type: 'layers', diff_ids: [sha256Digest(L0), sha256Digest(L1)] } } }]);
      await assert.rejects(openOci(dir), rejectsWith(InputError, /the manifest lists 1 layers but the config has 2 diff_ids$/));
    });
  });

  describe('streams', () => {
    it('a consumer that stops early leaks no file descriptors', async function () {
      const before = openFdCount();
      if (before === undefined) this.skip();
      const dir = fresh();
      const big = tarOf([{ name: 'big', data: randomBytes(8 * 1024 * 1024) }]);
      for (const compression of ['gzip', 'zstd', 'none'] as const) {
        await writeOciLayout(dir, [{ tag: compression, layers: [big], compression }]);
        const src = await openOci(dir, compression);
        for (let i = 0; i < 5; i++) {
          const s = src.layers[0]!.open();
          await once(s, 'readable');
          s.read();
          s.destroy();
          await once(s, 'close');
        }
      }
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(openFdCount(), before);
    });

    it('an aborted signal fails the stream with InterruptedError', async () => {
      const dir = fresh();
      await writeOciLayout(dir, [{ layers: [compressLayer(L1, 'none')] }]);
      const src = await openOci(dir);
      const ac = new AbortController();
      const s = src.layers[0]!.open(ac.signal);
      ac.abort();
      await assert.rejects(drain(s), InterruptedError);
      const pre = new AbortController();
      pre.abort();
      await assert.rejects(new OciLayoutReference(dir).open({ signal: pre.signal }), InterruptedError);
    });
  });
});
