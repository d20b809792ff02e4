/**
 * The corpus (base, py, py-app), converted in order into a file store through
 * the CLI and into an S3-compatible server (s3rver on loopback) through the
 * library, with one pair of keys: what `stats` predicts is what `convert`
 * uploads, the two backends get byte-identical manifests, and what comes back
 * out (extract, verify, ls/cat) is the image `build` makes.
 */
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { buildImage, convertImage, Ext4Reader, extractImage, fetchManifest, loadKeys, openImage, openStore, statsImages, StoreByteSource, verifyImage } from '../index.js';
import type { ConvertResult, Keys, StatsReport, Store } from '../index.js';
import { utf8ToByteString } from '../layers/bytes.js';
import { manifestSalt, openManifest } from '../manifest/seal.js';
import { requireS3Server, type S3TestServer } from '../testing/s3-server.js';
import { assertChunksNamedByContent, CliLog, sha256File } from '../testing/store-files.js';
import { exampleImageDir, requireCorpus, tmpDir, type TmpDir } from '../testing/tools.js';

const TAGS = ['base', 'py', 'py-app'] as const;
type Tag = (typeof TAGS)[number];
const CHUNK = 512 * 1024;

/** The fields of `convert --json` this suite relies on. */
interface ConvertJson {
  manifest: string;
  tag?: string;
  source: string;
  chunkSize: number;
  imageBytes: number;
  manifestBytes: number;
  chunks: { total: number; zero: number; existing: number; duplicate: number; new: number };
  bytes: { total: number; zero: number; existing: number; duplicate: number; new: number };
  files: number;
  layers: number;
}

interface StatsJson {
  images: Array<Pick<ConvertJson, 'source' | 'chunks' | 'bytes' | 'imageBytes'> & { requests: { put: number }; cost: { requests: number; storagePerMonth: number } }>;
  total: { chunks: ConvertJson['chunks']; bytes: ConvertJson['bytes']; requests: { put: number } };
}

type Counts = ConvertJson['chunks'];

/** What a convert said it did, against what stats said it would do. */
function assertPredicted(tag: string, predicted: { chunks: Counts; bytes: Counts }, actual: { chunks: Counts; bytes: Counts }): void {
  assert.deepEqual(predicted.chunks, actual.chunks, `${tag}: stats chunks vs convert chunks`);
  assert.equal(predicted.bytes.new, actual.bytes.new, `${tag}: stats bytes.new vs convert bytes.new`);
  assert.deepEqual(predicted.bytes, actual.bytes, `${tag}: stats bytes vs convert bytes`);
}

function assertCountsAddUp(tag: string, r: { chunks: Counts; bytes: ConvertJson['bytes']; chunkSize: number; imageBytes: number }): void {
  const c = r.chunks;
  assert.equal(c.total, Math.ceil(r.imageBytes / r.chunkSize), `${tag}: chunks.total`);
  assert.equal(c.zero + c.existing + c.duplicate + c.new, c.total, `${tag}: zero + existing + duplicate + new = total`);
  assert.equal(r.bytes.new, c.new * r.chunkSize, `${tag}: bytes.new`);
}

/** sha256 of `build` of the corpus image, computed once per process. */
const builtSha = new Map<string, Promise<string>>();
function buildSha(corpus: string, tag: Tag, dir: string): Promise<string> {
  let p = builtSha.get(tag);
  if (p === undefined) {
    p = (async () => {
      const out = path.join(dir, `${tag}.built.ext4`);
      await buildImage(`oci:${corpus}:${tag}`, out);
      return sha256File(out);
    })();
    builtSha.set(tag, p);
  }
  return p;
}

describe('convert: the corpus into a file store (CLI) and into S3 (library)', function () {
  let corpus: string;
  let dir: TmpDir;
  let keyFile: string;
  let keys: Keys;
  let storeDir: string;
  const cli = new CliLog();
  let predicted: StatsJson;
  const converted = new Map<Tag, ConvertJson>();
  const src = (tag: Tag): string => `oci:${corpus}:${tag}`;
  const withKey = (): string[] => ['--store', storeDir, '--key-file', keyFile];

  before(async function () {
    corpus = requireCorpus(this);
    dir = await tmpDir('convert-corpus');
    keyFile = path.join(dir.path, 'keys', 'key.json');
    const kg = await cli.ok(['keygen', '-o', keyFile, '--json']);
    assert.match((JSON.parse(kg.stdout) as { keyId: string }).keyId, /^[0-9a-f]{16}$/);
    keys = await loadKeys({ file: keyFile });
    storeDir = path.join(dir.path, 'store');
    // The dry run first, on the empty store, over all three in order.
    predicted = JSON.parse((await cli.ok(['stats', ...TAGS.map(src), ...withKey(), '--json'])).stdout) as StatsJson;
    for (const tag of TAGS) {
      const r = await cli.ok(['convert', src(tag), ...withKey(), '--tag', tag, '--json']);
      converted.set(tag, JSON.parse(r.stdout) as ConvertJson);
    }
  });
  after(async () => dir?.cleanup());

  it('convert --json gives the manifest (usable as REF) and chunk and byte counts that add up', async function () {
    for (const tag of TAGS) {
      const r = converted.get(tag)!;
      assert.match(r.manifest, /^sha256:[0-9a-f]{64}$/);
      assert.equal(r.tag, tag);
      assert.equal(r.source, src(tag));
      assert.equal(r.chunkSize, CHUNK);
      for (const k of ['total', 'zero', 'existing', 'duplicate', 'new'] as const) assert.equal(typeof r.chunks[k], 'number', `chunks.${k}`);
      assertCountsAddUp(tag, r);
      await stat(path.join(storeDir, 'manifests', 'sha256', r.manifest.slice('sha256:'.length)));
      assert.equal((await stat(path.join(storeDir, 'manifests', 'sha256', r.manifest.slice(7)))).size, r.manifestBytes);
      // The digest is a REF: ls through it.
      const ls = await cli.ok(['ls', r.manifest, '/', ...withKey()]);
      assert.match(ls.stdout, /^etc$/m);
    }
  });

  it('stats predicted exactly the chunks each convert then uploaded, counting earlier images of the list as stored', async function () {
    assert.equal(predicted.images.length, 3);
    let sumNew = 0;
    for (const [i, tag] of TAGS.entries()) {
      const p = predicted.images[i]!;
      const c = converted.get(tag)!;
      assert.equal(p.source, src(tag));
      assert.equal(p.imageBytes, c.imageBytes, `${tag}: imageBytes`);
      assertPredicted(tag, p, c);
      assertCountsAddUp(tag, { ...p, chunkSize: CHUNK });
      sumNew += c.chunks.new;
    }
    // The store was empty during the dry run: base found nothing, and what py and py-app
    // count as existing is only what the images before them in the list would add.
    assert.equal(predicted.images[0]!.chunks.existing, 0);
    assert.ok(predicted.images[1]!.chunks.existing > 0, 'py: stats counts chunks base would add as existing');
    assert.ok(predicted.images[2]!.chunks.existing > predicted.images[1]!.chunks.existing, 'py-app: more existing than py');
    assert.equal(predicted.total.chunks.new, sumNew);
    assert.deepEqual(predicted.total.bytes.new, sumNew * CHUNK);
    for (const k of ['total', 'zero', 'existing', 'duplicate', 'new'] as const) {
      assert.equal(predicted.total.chunks[k], TAGS.reduce((n, t) => n + converted.get(t)!.chunks[k], 0), `total.chunks.${k}`);
    }
    // The store holds exactly the chunks the converts said they uploaded, each under its own hash.
    const files = await assertChunksNamedByContent(storeDir);
    assert.equal(files.final.length, sumNew, 'chunk files in the store = sum of chunks.new');
    assert.deepEqual(files.other, [], 'no temp files left');
    const line = TAGS.map((t) => {
      const c = converted.get(t)!;
      return `${t}: ${c.chunks.new}/${c.chunks.total} new (${(c.bytes.new / 2 ** 20).toFixed(1)} MiB), ${c.chunks.existing} existing, manifest ${c.manifestBytes} B = ${((100 * c.manifestBytes) / c.imageBytes).toFixed(4)}% of ${(c.imageBytes / 2 ** 20).toFixed(1)} MiB`;
    });
    process.stdout.write(`      ${line.join('\n      ')}\n`);
  });

  it('extract of py-app equals build byte for byte', async function () {
    const store = await openStore(storeDir);
    const out = path.join(dir.path, 'py-app.extracted.ext4');
    const r = await extractImage(store, 'py-app', out, { keys });
    const c = converted.get('py-app')!;
    assert.equal(r.manifest, c.manifest);
    assert.equal(r.imageBytes, c.imageBytes);
    assert.equal(r.holes, c.chunks.zero);
    const st = await stat(out);
    assert.equal(st.size, c.imageBytes);
    assert.equal(await sha256File(out), await buildSha(corpus, 'py-app', dir.path));
    // py-app's 64 MiB sparse file is a hole inside ext4 (no blocks), not zero chunks, so the
    // image may have no chunk-level holes at all; where it has some, they stay unwritten.
    if (r.holes > 0) assert.ok(st.blocks * 512 <= st.size - r.holes * CHUNK, `holes written: ${st.blocks} blocks`);
    process.stdout.write(`      py-app: ${r.chunks} chunks, ${r.holes} holes, ${st.blocks * 512} bytes allocated of ${st.size}\n`);
  });

  it('verify passes with the key (decrypted, filesystem walked) and without (names only)', async function () {
    const store = await openStore(storeDir);
    for (const tag of TAGS) {
      const c = converted.get(tag)!;
      const r = await verifyImage(store, tag, { keys });
      assert.deepEqual(r.problems, []);
      assert.equal(r.ok, true);
      assert.equal(r.manifest, c.manifest);
      assert.equal(r.decrypted, true);
      assert.equal(r.chunks.checked, c.chunks.total - c.chunks.zero);
      assert.ok((r.filesystemInodes ?? 0) > 1000, `${tag}: walked ${r.filesystemInodes} inodes`);
      const bare = await verifyImage(store, c.manifest);
      assert.equal(bare.ok, true);
      assert.equal(bare.decrypted, false);
      assert.equal(bare.filesystemInodes, undefined);
    }
    // The CLI: exit 0 both ways; without any key (no flag, no CHUNKYARD_KEY, no default key file) it says so.
    const withK = await cli.ok(['verify', 'py', ...withKey()]);
    assert.match(withK.stdout, /: OK; \d+\/\d+ chunks checked, decrypted and authenticated, filesystem walked \(\d+ inodes\)/);
    const noKeyEnv = { HOME: path.join(dir.path, 'nohome') };
    const noK = await cli.ok(['verify', 'py', '--store', storeDir, '--json'], noKeyEnv);
    const j = JSON.parse(noK.stdout) as { ok: boolean; decrypted: boolean; chunks: { checked: number } };
    assert.equal(j.ok, true);
    assert.equal(j.decrypted, false);
    assert.equal(j.chunks.checked, converted.get('py')!.chunks.total - converted.get('py')!.chunks.zero);
  });

  it('verify --rebuild: the same source gives the identical manifest, another image a different one (exit 5)', async function () {
    const same = await cli.ok(['verify', 'base', ...withKey(), '--rebuild', src('base')]);
    assert.match(same.stdout, /rebuild identical/);
    const other = await cli.run(['verify', 'base', ...withKey(), '--rebuild', `oci:${exampleImageDir()}:latest`]);
    assert.equal(other.code, 5, other.stderr);
    assert.match(other.stdout, /rebuild different/);
    assert.match(other.stderr, /^chunkyard: verify base: 1 problem\(s\), first: a rebuild from the source gives a different manifest: the source is another image/);
  });

  it('ls and cat work on REF --store', async function () {
    const ls = await cli.ok(['ls', 'py', '/usr/bin', ...withKey()]);
    assert.match(ls.stdout, /^python3$/m);
    const cat = await cli.ok(['cat', converted.get('py')!.manifest, '/etc/debian_version', ...withKey()]);
    assert.match(cat.stdout, /^12\.\d+\n$/);
    const missing = await cli.run(['cat', 'py', '/etc/no-such-file', ...withKey()]);
    assert.equal(missing.code, 4, missing.stderr);
  });

  it('no CLI output carries the manifest key or the salt secret', function () {
    const n = cli.assertNoKeyLeaked([keys]);
    assert.ok(n >= 2 * 12, `searched ${n} outputs`);
  });

  describe('into S3 (s3rver on loopback)', function () {
    let server: S3TestServer;
    let store: Store;
    let stats: StatsReport;
    const results = new Map<Tag, ConvertResult>();

    before(async function () {
      server = await requireS3Server(this);
      store = await openStore(`s3://${server.bucket}/corpus`, { endpoint: server.endpoint, s3ClientConfig: server.clientConfig });
      const images = [];
      try {
        for (const tag of TAGS) images.push(await openImage(src(tag)));
        stats = await statsImages(images, { store, keys });
      } finally {
        for (const i of images) await i.close();
      }
      for (const tag of TAGS) {
        const image = await openImage(src(tag));
        try {
          results.set(tag, await convertImage(image, { store, keys, tag }));
        } finally {
          await image.close();
        }
      }
    });
    after(async () => {
      await store?.close();
      await server?.stop();
    });

    it('stats predicted exactly the chunks and PUTs of each convert; the bucket holds the sum of the new chunks', async function () {
      let sumNew = 0;
      for (const [i, tag] of TAGS.entries()) {
        const p = stats.images[i]!;
        const c = results.get(tag)!;
        assertPredicted(tag, p, c);
        assertCountsAddUp(tag, c);
        assert.equal(p.requests.put, c.requests.put, `${tag}: predicted PUTs (chunks, manifest, tag)`);
        assert.notEqual(c.presence, 'stat');
        sumNew += c.chunks.new;
      }
      assert.ok(stats.images[1]!.chunks.existing > 0, 'py: stats counts chunks base would add as existing');
      let listed = 0;
      for await (const _ of store.listChunks()) listed++;
      assert.equal(listed, sumNew);
      process.stdout.write(`      s3: presence ${TAGS.map((t) => `${t} ${results.get(t)!.presence} (${results.get(t)!.requests.head} HEAD, ${results.get(t)!.requests.list} LIST)`).join(', ')}\n`);
    });

    it('the same keys give byte-identical manifests in S3 and in the file store', async function () {
      for (const tag of TAGS) {
        const r = results.get(tag)!;
        assert.equal(r.manifest, converted.get(tag)!.manifest, tag);
        assert.deepEqual(r.chunks, converted.get(tag)!.chunks, `${tag}: same counts as into the file store`);
        assert.equal(await store.getTag(tag), r.manifest);
      }
    });

    it('verify passes from S3 with the key and without', async function () {
      const r = await verifyImage(store, 'py-app', { keys });
      assert.deepEqual(r.problems, []);
      assert.ok(r.ok && r.decrypted && (r.filesystemInodes ?? 0) > 1000);
      const bare = await verifyImage(store, 'py-app');
      assert.ok(bare.ok && !bare.decrypted);
    });

    it('extract of py-app from S3 equals build byte for byte', async function () {
      const out = path.join(dir.path, 'py-app.from-s3.ext4');
      await extractImage(store, results.get('py-app')!.manifest, out, { keys });
      assert.equal(await sha256File(out), await buildSha(corpus, 'py-app', dir.path));
    });

    it('cat of one small file of py fetches only a few chunks', async function () {
      const before = store.requestCounts();
      const { digest, manifest } = await fetchManifest(store, 'py');
      const opened = openManifest(manifest.bytes, keys.manifestKey);
      const source = new StoreByteSource(store, opened.header, opened.chunks, manifestSalt(opened.header, keys.salt), { name: digest });
      const reader = await Ext4Reader.open(source);
      let text: string;
      try {
        const ino = await reader.lookup(utf8ToByteString('/etc/os-release'), { followFinalSymlink: true });
        const parts: Buffer[] = [];
        for await (const c of reader.openFile(ino)) parts.push(c as Buffer);
        text = Buffer.concat(parts).toString('utf8');
      } finally {
        await reader.close();
      }
      assert.match(text, /^ID=debian$/m);
      const gets = store.requestCounts().get - before.get;
      const fetched = source.fetchedChunks;
      const total = source.totalChunks;
      process.stdout.write(`      cat /etc/os-release of py: fetched ${fetched}/${total} chunks (${gets} GETs with tag and manifest)\n`);
      assert.ok(fetched >= 1);
      assert.ok(fetched * 20 < total, `fetched ${fetched} of ${total} chunks`);
      assert.equal(gets, fetched + 2, 'one GET per fetched chunk, plus the tag and the manifest');
    });
  });
});
