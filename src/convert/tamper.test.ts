/**
 * Damage to a published image, done the way an attacker or a broken disk
 * would (bytes changed in the store's files), must be caught by `verify` and
 * named: which chunk (index, offset, name), which manifest, which key. Runs
 * the real CLI on a small synthetic image (no corpus needed), each case on
 * a fresh copy of one converted store.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cp, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { buildImage, loadKeys, openStore, verifyImage, type Keys } from '../index.js';
import { IntegrityError } from '../errors.js';
import { CHUNK_ID_BYTES } from '../chunks/id.js';
import { parseManifest } from '../manifest/schema.js';
import { writeOciLayout } from '../testing/oci-writer.js';
import { CliLog, sha256File, storeEntries, type CliRun } from '../testing/store-files.js';
import { tarOf } from '../testing/tar-writer.js';
import { tmpDir, type TmpDir } from '../testing/tools.js';

const T = 1_700_000_000;
const CHUNK = 64 * 1024;

/** Deterministic bytes that do not compress or repeat (so every chunk is distinct). */
function noise(n: number, seed: string): Buffer {
  const out = Buffer.alloc(n);
  for (let at = 0, i = 0; at < n; i++) at += createHash('sha256').update(`${seed}/${i}`).digest().copy(out, at);
  return out;
}

interface VerifyJson {
  manifest: string;
  ok: boolean;
  decrypted: boolean;
  signature: string;
  signer?: string;
  rebuild?: string;
  filesystemInodes?: number;
  chunks: { total: number; holes: number; checked: number; missing: number; corrupt: number };
  problems: Array<{ kind: string; message: string; index?: number; offset?: number; id?: string }>;
}

/** The report `verify --json` prints first (a failing run also prints the CLI's {"error"} line after it). */
function report(r: CliRun): VerifyJson {
  return JSON.parse(r.stdout.split('\n')[0]!) as VerifyJson;
}

/** Exit 5 and exactly one line on stderr, matching `re`. */
function assertCaught(r: CliRun, re: RegExp): void {
  assert.equal(r.code, 5, `exit code of chunkyard ${r.argv.join(' ')}; stderr: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0]!, /^chunkyard: /);
  assert.match(lines[0]!, re);
}

/** `bytes` with the 32-byte names of chunk entries i and j swapped (layout in manifest/schema.ts). */
function swapNames(bytes: Buffer, i: number, j: number): Buffer {
  const m = parseManifest(bytes);
  const namesAt = m.layout.aadEnd - m.layout.stored * CHUNK_ID_BYTES;
  const slot = (k: number): number => namesAt + CHUNK_ID_BYTES * m.chunks.slice(0, k).filter((c) => c !== null).length;
  const out = Buffer.from(bytes);
  bytes.copy(out, slot(i), slot(j), slot(j) + CHUNK_ID_BYTES);
  bytes.copy(out, slot(j), slot(i), slot(i) + CHUNK_ID_BYTES);
  return out;
}

describe('tamper: damage to a published image is caught and named', function () {
  let dir: TmpDir;
  let cli: CliLog;
  let layout: string;
  let source: string;
  let other: string;
  let keyFile: string;
  let keyId: string;
  let keys: Keys;
  let pristine: string;
  let digest: string;
  let signedDigest: string;
  let signA: { file: string; publicKey: string; signer: string };
  let signB: { file: string; publicKey: string; signer: string };
  let otherKeys: Keys;
  let otherKeyFile: string;
  let otherKeyId: string;
  let copies = 0;

  /** A fresh copy of the converted store. */
  async function fresh(): Promise<string> {
    const s = path.join(dir.path, `store-${++copies}`);
    await cp(pristine, s, { recursive: true });
    return s;
  }
  const k = (store: string, file = keyFile): string[] => ['--store', store, '--key-file', file];

  before(async function () {
    dir = await tmpDir('tamper');
    // HOME points at an empty dir, so runs without --key-file really have no key.
    cli = new CliLog({ HOME: path.join(dir.path, 'home') });
    layout = path.join(dir.path, 'layout');
    await writeOciLayout(layout, [
      {
        tag: 'v1',
        layers: [
          tarOf([
            { name: 'etc/', type: 'dir', mtime: T },
            { name: 'etc/hostname', data: 'tamper\n', mtime: T },
            { name: 'data/', type: 'dir', mtime: T },
            { name: 'data/a.bin', data: noise(700_000, 'a'), mtime: T },
            { name: 'data/b.bin', data: noise(300_000, 'b'), mtime: T },
          ]),
        ],
      },
      { tag: 'v2', layers: [tarOf([{ name: 'other', data: noise(100_000, 'c'), mtime: T }])] },
    ]);
    source = `oci:${layout}:v1`;
    other = `oci:${layout}:v2`;
    keyFile = path.join(dir.path, 'key.json');
    keyId = (JSON.parse((await cli.ok(['keygen', '-o', keyFile, '--json'])).stdout) as { keyId: string }).keyId;
    keys = await loadKeys({ file: keyFile });
    otherKeyFile = path.join(dir.path, 'other-key.json');
    otherKeyId = (JSON.parse((await cli.ok(['keygen', '-o', otherKeyFile, '--json'])).stdout) as { keyId: string }).keyId;
    otherKeys = await loadKeys({ file: otherKeyFile });
    assert.notEqual(keyId, otherKeyId);
    const signing = async (name: string): Promise<{ file: string; publicKey: string; signer: string }> =>
      JSON.parse((await cli.ok(['keygen', '--signing', '-o', path.join(dir.path, name), '--json'])).stdout) as { file: string; publicKey: string; signer: string };
    signA = await signing('sign-a.pem');
    signB = await signing('sign-b.pem');
    pristine = path.join(dir.path, 'pristine');
    digest = (await cli.ok(['convert', source, ...k(pristine), '--chunk-size', '64K', '--tag', 'v1'])).stdout.trim();
    signedDigest = (await cli.ok(['convert', source, ...k(pristine), '--chunk-size', '64K', '--tag', 'signed', '--sign-key', signA.file])).stdout.trim();
    assert.match(digest, /^sha256:[0-9a-f]{64}$/);
    assert.notEqual(signedDigest, digest);
  });
  after(async () => dir?.cleanup());

  /** The parsed manifest of `d` in `store`, read straight from its file. */
  async function manifestOf(store: string, d: string): Promise<ReturnType<typeof parseManifest>> {
    return parseManifest(await readFile(path.join(store, 'manifests', 'sha256', d.slice('sha256:'.length))));
  }

  /** A chunk index whose name appears once in the manifest (so one damaged file is one problem). */
  async function uniqueChunk(store: string, nth = 0): Promise<{ index: number; id: string; file: string }> {
    const m = await manifestOf(store, digest);
    const once = m.chunks.flatMap((id, index) => (id !== null && m.chunks.indexOf(id) === m.chunks.lastIndexOf(id) ? [{ index, id }] : []));
    assert.ok(once.length > nth + 2, `the image has ${once.length} distinct chunks`);
    const c = once[Math.floor(once.length / 2) + nth]!;
    return { ...c, file: path.join(store, 'chunks', c.id.slice(0, 2), c.id) };
  }

  it('an intact image verifies: with the key (decrypted, filesystem walked) and without (names only)', async function () {
    const s = await fresh();
    const withKey = report(await cli.ok(['verify', 'v1', ...k(s), '--json']));
    assert.deepEqual(withKey.problems, []);
    assert.equal(withKey.ok, true);
    assert.equal(withKey.manifest, digest);
    assert.equal(withKey.decrypted, true);
    assert.ok((withKey.filesystemInodes ?? 0) >= 6);
    assert.ok(withKey.chunks.checked >= 16, `${withKey.chunks.checked} chunks`);
    const bare = report(await cli.ok(['verify', digest, '--store', s, '--json']));
    assert.equal(bare.ok, true);
    assert.equal(bare.decrypted, false);
    assert.equal(bare.chunks.checked, withKey.chunks.checked);
  });

  it('one flipped byte in a stored chunk: exit 5, the problem names its index, offset and name; extract refuses', async function () {
    const s = await fresh();
    const c = await uniqueChunk(s);
    const b = await readFile(c.file);
    b[1000]! ^= 0x20;
    await writeFile(c.file, b);
    for (const argv of [['verify', 'v1', ...k(s), '--json'], ['verify', 'v1', '--store', s, '--json']]) {
      const r = await cli.run(argv);
      assertCaught(r, new RegExp(`chunk ${c.index} at offset ${c.index * CHUNK} \\(${c.id}\\): content does not match its name`));
      const rep = report(r);
      assert.equal(rep.ok, false);
      assert.equal(rep.chunks.corrupt, 1);
      assert.deepEqual(
        rep.problems.map(({ kind, index, offset, id }) => ({ kind, index, offset, id })),
        [{ kind: 'corrupt-chunk', index: c.index, offset: c.index * CHUNK, id: c.id }],
      );
    }
    const out = path.join(dir.path, 'flipped.ext4');
    assertCaught(await cli.run(['extract', 'v1', ...k(s), '-o', out]), new RegExp(`chunk ${c.id}: content does not match its name`));
    await assert.rejects(stat(out), { code: 'ENOENT' });
    assert.deepEqual((await storeEntries(dir.path, '.')).filter((n) => n.includes('flipped')), [], 'no partial output left');
  });

  it('a deleted chunk: exit 5, named as missing with its index, offset and name', async function () {
    const s = await fresh();
    const c = await uniqueChunk(s);
    await unlink(c.file);
    for (const argv of [['verify', 'v1', ...k(s), '--json'], ['verify', 'v1', '--store', s, '--json']]) {
      const r = await cli.run(argv);
      assertCaught(r, new RegExp(`chunk ${c.index} at offset ${c.index * CHUNK} \\(${c.id}\\) is missing`));
      const rep = report(r);
      assert.equal(rep.chunks.missing, 1);
      assert.deepEqual(
        rep.problems.map(({ kind, index, offset, id }) => ({ kind, index, offset, id })),
        [{ kind: 'missing-chunk', index: c.index, offset: c.index * CHUNK, id: c.id }],
      );
    }
  });

  it('every damaged chunk is reported, not just the first', async function () {
    const s = await fresh();
    const a = await uniqueChunk(s, 0);
    const b = await uniqueChunk(s, 1);
    await unlink(a.file);
    const bytes = await readFile(b.file);
    bytes[0]! ^= 1;
    await writeFile(b.file, bytes);
    const rep = report(await cli.run(['verify', 'v1', ...k(s), '--json']));
    const want = [
      { kind: 'missing-chunk', index: a.index },
      { kind: 'corrupt-chunk', index: b.index },
    ].sort((x, y) => x.index - y.index);
    assert.deepEqual(
      rep.problems.map(({ kind, index }) => ({ kind, index })),
      want,
    );
  });

  it('an edited manifest: the store\'s digest check catches it (exit 5, naming the manifest)', async function () {
    const s = await fresh();
    const file = path.join(s, 'manifests', 'sha256', digest.slice('sha256:'.length));
    const b = await readFile(file);
    b[20]! ^= 0x01; // inside the header JSON
    await writeFile(file, b);
    const re = new RegExp(`manifest ${digest} in file://\\S+ is corrupt: its bytes hash to sha256:[0-9a-f]{64}`);
    assertCaught(await cli.run(['verify', 'v1', ...k(s)]), re);
    assertCaught(await cli.run(['verify', digest, '--store', s]), re);
    assertCaught(await cli.run(['cat', 'v1', '/etc/hostname', ...k(s)]), re);
  });

  it('two chunk entries swapped: undetectable by names alone, an authentication failure with the key', async function () {
    const s = await fresh();
    const store = await openStore(s);
    const bytes = await readFile(path.join(s, 'manifests', 'sha256', digest.slice('sha256:'.length)));
    const m = parseManifest(bytes);
    const i = m.chunks.findIndex((c) => c !== null);
    const j = m.chunks.findIndex((c, n) => n > i && c !== null && c !== m.chunks[i]);
    const swapped = swapNames(bytes, i, j);
    const sm = parseManifest(swapped);
    assert.equal(sm.chunks[i], m.chunks[j]);
    assert.equal(sm.chunks[j], m.chunks[i]);
    const d = await store.putManifest(swapped);
    assert.notEqual(d, digest);
    // Without the key this is NOT detectable: every named chunk is present and hashes
    // to its name; only the manifest key's GCM tag covers the order of the names.
    const bare = await verifyImage(store, d);
    assert.equal(bare.ok, true, 'names-only verify cannot see a reordering');
    assert.equal(report(await cli.ok(['verify', d, '--store', s, '--json'])).ok, true);
    // With the key the tag fails before any chunk is trusted.
    await assert.rejects(verifyImage(store, d, { keys }), (e: unknown) => e instanceof IntegrityError && /authentication failed/.test(e.message));
    assertCaught(await cli.run(['verify', d, ...k(s)]), /manifest: authentication failed \(tampered, or not sealed with this key\)/);
    assertCaught(await cli.run(['extract', d, ...k(s), '-o', path.join(dir.path, 'swapped.ext4')]), /authentication failed/);
  });

  it('a wrong key: one clear error naming both key ids (exit 5), for verify, extract and cat', async function () {
    const s = await fresh();
    const re = new RegExp(`manifest sealed with key ${keyId}, you gave key ${otherKeyId}`);
    await assert.rejects(verifyImage(await openStore(s), 'v1', { keys: otherKeys }), (e: unknown) => e instanceof IntegrityError && re.test(e.message));
    assertCaught(await cli.run(['verify', 'v1', ...k(s, otherKeyFile)]), re);
    assertCaught(await cli.run(['extract', 'v1', ...k(s, otherKeyFile), '-o', path.join(dir.path, 'wrong.ext4')]), re);
    assertCaught(await cli.run(['cat', 'v1', '/etc/hostname', ...k(s, otherKeyFile)]), re);
    // The right key still reads it.
    assert.equal((await cli.ok(['cat', 'v1', '/etc/hostname', ...k(s)])).stdout, 'tamper\n');
  });

  it('signatures: valid with the signer\'s public key, bad with another, bad when the block is edited, missing when unsigned', async function () {
    const s = await fresh();
    const good = report(await cli.ok(['verify', 'signed', ...k(s), '--public-key', signA.publicKey, '--json']));
    assert.equal(good.signature, 'valid');
    assert.equal(good.signer, signA.signer);
    assert.equal(good.manifest, signedDigest);
    // Same image, same keys: the signed manifest is the unsigned one plus the block.
    const unsignedBytes = await readFile(path.join(s, 'manifests', 'sha256', digest.slice(7)));
    const signedBytes = await readFile(path.join(s, 'manifests', 'sha256', signedDigest.slice(7)));
    assert.deepEqual(signedBytes.subarray(0, unsignedBytes.length), unsignedBytes);
    assert.equal(signedBytes.length, unsignedBytes.length + 100);

    const wrong = await cli.run(['verify', 'signed', ...k(s), '--public-key', signB.publicKey, '--json']);
    assertCaught(wrong, new RegExp(`manifest: bad signature \\(signed by key ${signA.signer}, checked with key ${signB.signer}\\)`));
    assert.equal(report(wrong).signature, 'invalid');
    assert.deepEqual(report(wrong).problems.map((p) => p.kind), ['signature']);

    const store = await openStore(s);
    for (const [what, at] of [
      ['signature', signedBytes.length - 10],
      ['signer key', signedBytes.length - 64 - 5],
    ] as const) {
      const edited = Buffer.from(signedBytes);
      edited[at]! ^= 0x01;
      const d = await store.putManifest(edited);
      const r = await cli.run(['verify', d, ...k(s), '--public-key', signA.publicKey, '--json']);
      assertCaught(r, /manifest: bad signature/);
      assert.equal(report(r).signature, 'invalid', what);
      // The signature block is outside what the manifest key authenticates: without
      // --public-key, an edited signature goes unnoticed (and the image is intact).
      assert.equal(report(await cli.ok(['verify', d, ...k(s), '--json'])).signature, 'not checked');
    }

    assertCaught(await cli.run(['verify', 'v1', ...k(s), '--public-key', signA.publicKey]), /manifest is not signed/);
  });

  it('verify --rebuild: identical from the source, different from another image (exit 5), and told the convert options', async function () {
    const s = await fresh();
    assert.match((await cli.ok(['verify', 'v1', ...k(s), '--rebuild', source])).stdout, /rebuild identical/);
    const r = await cli.run(['verify', 'v1', ...k(s), '--rebuild', other, '--json']);
    assertCaught(r, /a rebuild from the source gives a different manifest: the source is another image/);
    assert.equal(report(r).rebuild, 'different');
    // Headroom shapes the filesystem but is not in the manifest: verify must be told.
    const roomy = (await cli.ok(['convert', source, ...k(s), '--chunk-size', '64K', '--headroom', '50', '--tag', 'roomy'])).stdout.trim();
    assertCaught(await cli.run(['verify', roomy, ...k(s), '--rebuild', source]), /the filesystem is \d+ bytes, the stored one \d+ \(was it converted with another --headroom\?\)/);
    assert.match((await cli.ok(['verify', roomy, ...k(s), '--rebuild', source, '--headroom', '50'])).stdout, /rebuild identical/);
    const usage = await cli.run(['verify', roomy, ...k(s), '--headroom', '50']);
    assert.equal(usage.code, 2, usage.stderr);
  });

  it('extract leaves hole chunks unwritten (sparse) and equals build', async function () {
    const s = await fresh();
    const roomy = (await cli.ok(['convert', source, ...k(s), '--chunk-size', '64K', '--headroom', '300', '--tag', 'roomy', '--json'])).stdout;
    const c = JSON.parse(roomy) as { chunks: { zero: number; total: number }; imageBytes: number };
    assert.ok(c.chunks.zero > 0, 'headroom gives all-zero chunks');
    const out = path.join(dir.path, 'roomy.ext4');
    const x = JSON.parse((await cli.ok(['extract', 'roomy', ...k(s), '-o', out, '--json'])).stdout) as { holes: number; chunks: number };
    assert.equal(x.holes, c.chunks.zero);
    const st = await stat(out);
    assert.equal(st.size, c.imageBytes);
    assert.ok(st.blocks * 512 <= st.size - x.holes * CHUNK, `${st.blocks * 512} bytes allocated of ${st.size}, ${x.holes} holes`);
    const built = path.join(dir.path, 'roomy.built.ext4');
    await buildImage(source, built, { chunkSize: CHUNK, headroom: 3 });
    assert.equal(await sha256File(out), await sha256File(built));
    await rm(built);
    process.stdout.write(`      ${x.holes}/${x.chunks} chunks are holes: ${st.blocks * 512} of ${st.size} bytes allocated\n`);
  });

  it('no CLI output carries a manifest key or salt secret', function () {
    const n = cli.assertNoKeyLeaked([keys, otherKeys]);
    assert.ok(n > 40, `searched ${n} outputs`);
  });
});
