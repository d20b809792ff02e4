import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { InputError, IntegrityError } from '../errors.js';
import { openChunk, sealChunk, type ChunkRef } from '../chunks/seal.js';
import type { Salt } from '../chunks/salt.js';
import { generateKeys, keyId } from '../keys/keys.js';
import { parseSigningKey } from '../keys/signing.js';
import type { Digest } from '../source/digest.js';
import { manifestDigest, parseManifest, canonicalJson, type ManifestHeader } from './schema.js';
import { openManifest, sealManifest, unsealKeys, type ManifestInput } from './seal.js';
import { manifestSigner, signManifest, verifySignature } from './sign.js';

const d = (c: string): Digest => `sha256:${c.repeat(64)}` as Digest;
const CHUNK = 512 * 1024;

function input(chunks: number, chunkSize = CHUNK, salt = 0): ManifestInput {
  return {
    createdBy: 'chunkyard 0.1.0',
    source: { manifestDigest: d('a'), configDigest: d('b'), diffIds: [d('c'), d('e')], platform: 'linux/amd64' },
    runtime: {
      entrypoint: ['/usr/bin/python3', '-m', 'app'],
      cmd: null,
      env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'LANG=C.UTF-8', 'PYTHONUNBUFFERED=1'],
      workingDir: '/srv/app',
      user: '1000:1000',
      labels: { 'org.opencontainers.image.source': 'https://example.com/app', 'org.opencontainers.image.version': '1.2.3' },
    },
    filesystem: { type: 'ext4', size: chunks * chunkSize, blockSize: 4096, uuid: '3f0e6c1a-8d2b-5c4e-9f7a-1b2c3d4e5f60' },
    chunkSize,
    saltEpoch: salt,
  };
}

/** Cheap distinct refs: a real seal of a small plaintext per chunk would be the same shape. */
function refs(n: number, holeEvery = 5): (ChunkRef | null)[] {
  return Array.from({ length: n }, (_, i) => {
    if (i % holeEvery === 3) return null;
    const h = createHash('sha512').update(`chunk ${i}`).digest();
    return { id: h.subarray(0, 32).toString('hex'), key: h.subarray(32) } as ChunkRef;
  });
}

function tampered(bytes: Buffer, f: (b: Buffer) => void): Buffer {
  const b = Buffer.from(bytes);
  f(b);
  return b;
}

function integrity(re: RegExp) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof IntegrityError, `want IntegrityError, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  };
}

const AUTH_FAILED = /^manifest: authentication failed \(tampered, or not sealed with this key\)$/;

describe('manifest', () => {
  const keys = generateKeys();
  const n = 40;
  const chunks = refs(n);
  const bytes = sealManifest(input(n), chunks, keys.manifestKey);
  const m = parseManifest(bytes);
  const headerEnd = 8 + bytes.readUInt32BE(4);
  const namesAt = headerEnd + Math.ceil(n / 8);

  it('parses without a key: header and chunk names, holes as null', () => {
    assert.equal(m.header.version, 1);
    assert.equal(m.header.chunks.count, n);
    assert.equal(m.header.chunks.size, CHUNK);
    assert.equal(m.header.chunks.hash, 'blake3');
    assert.equal(m.header.chunks.cipher, 'aes-256-ctr');
    assert.equal(m.header.keys.id, keyId(keys.manifestKey));
    assert.deepEqual(m.header.runtime, input(n).runtime);
    assert.deepEqual(m.header.source, input(n).source);
    assert.deepEqual(
      m.chunks,
      chunks.map((c) => (c === null ? null : c.id)),
    );
    assert.equal(m.layout.signatureAt, null);
    // The header is canonical JSON and says nothing secret.
    const json = bytes.subarray(8, headerEnd).toString('utf8');
    assert.equal(json, canonicalJson(JSON.parse(json)));
    assert.ok(!json.includes(keys.manifestKey.toString('hex')) && !json.includes(keys.manifestKey.toString('base64')));
  });

  it('unseals the keys with the manifest key, index-aligned with the chunks', () => {
    const k = unsealKeys(m, keys.manifestKey);
    assert.deepEqual(
      k,
      chunks.map((c) => (c === null ? null : c.key)),
    );
    assert.deepEqual(openManifest(bytes, keys.manifestKey).chunks, chunks);
  });

  it('is deterministic: same input and key, same bytes and digest; another key, other bytes', () => {
    const again = sealManifest(input(n), refs(n), Buffer.from(keys.manifestKey));
    assert.deepEqual(again, bytes);
    assert.equal(manifestDigest(again), manifestDigest(bytes));
    assert.match(manifestDigest(bytes), /^sha256:[0-9a-f]{64}$/);
    assert.notDeepEqual(sealManifest(input(n), chunks, generateKeys().manifestKey), bytes);
  });

  describe('every tamper is caught and named', () => {
    it('a wrong key: the key-id message, naming both public ids', () => {
      const other = generateKeys().manifestKey;
      assert.throws(() => unsealKeys(m, other), integrity(new RegExp(`^manifest sealed with key ${keyId(keys.manifestKey)}, you gave key ${keyId(other)}$`)));
    });

    it('an edited header value (JSON still valid)', () => {
      const at = bytes.indexOf('/srv/app');
      const b = tampered(bytes, (x) => (x[at + 1] = 'x'.charCodeAt(0)));
      assert.equal(parseManifest(b).header.runtime.workingDir, '/xrv/app', 'parses: only the key holder can tell');
      assert.throws(() => unsealKeys(parseManifest(b), keys.manifestKey), integrity(AUTH_FAILED));
    });

    it('an edited header byte that breaks the JSON', () => {
      const b = tampered(bytes, (x) => (x[8] = 0x20 + 1));
      assert.throws(() => parseManifest(b), integrity(/^manifest: header is not valid JSON \(corrupt or tampered\)$/));
    });

    it('a header that names an inconsistent chunk count', () => {
      const b = tampered(bytes, (x) => {
        const at = x.indexOf('"count":40');
        x.write('"count":41', at, 'latin1');
      });
      assert.throws(() => parseManifest(b), integrity(/^manifest: header field chunks\.count is not/));
    });

    it('a flipped byte in a chunk name', () => {
      const b = tampered(bytes, (x) => (x[namesAt + 40]! ^= 1));
      assert.notEqual(parseManifest(b).chunks[1], m.chunks[1]);
      assert.throws(() => unsealKeys(parseManifest(b), keys.manifestKey), integrity(AUTH_FAILED));
    });

    it('two chunk names swapped', () => {
      const b = tampered(bytes, (x) => {
        const first = Buffer.from(x.subarray(namesAt, namesAt + 32));
        x.copy(x, namesAt, namesAt + 32, namesAt + 64);
        first.copy(x, namesAt + 32);
      });
      const p = parseManifest(b);
      assert.equal(p.chunks[0], m.chunks[1]);
      assert.throws(() => unsealKeys(p, keys.manifestKey), integrity(AUTH_FAILED));
    });

    it('two sealed keys swapped, and a flipped tag', () => {
      const keysAt = m.layout.aadEnd + 12;
      const swapped = tampered(bytes, (x) => {
        const first = Buffer.from(x.subarray(keysAt, keysAt + 32));
        x.copy(x, keysAt, keysAt + 32, keysAt + 64);
        first.copy(x, keysAt + 32);
      });
      assert.throws(() => unsealKeys(parseManifest(swapped), keys.manifestKey), integrity(AUTH_FAILED));
      const tag = tampered(bytes, (x) => (x[x.length - 1]! ^= 0x10));
      assert.throws(() => unsealKeys(parseManifest(tag), keys.manifestKey), integrity(AUTH_FAILED));
      const nonce = tampered(bytes, (x) => (x[m.layout.aadEnd]! ^= 0x10));
      assert.throws(() => unsealKeys(parseManifest(nonce), keys.manifestKey), integrity(AUTH_FAILED));
    });

    it('a hole moved (bitmap bit flipped), truncation, trailing bytes, bad magic', () => {
      const moved = tampered(bytes, (x) => {
        x[headerEnd]! ^= 0b1000; // chunk 3 (a hole) becomes stored …
        x[headerEnd]! ^= 0b0100; // … and chunk 2 a hole: same length, names shift by one
      });
      assert.throws(() => unsealKeys(parseManifest(moved), keys.manifestKey), integrity(AUTH_FAILED));
      const extraHole = tampered(bytes, (x) => (x[headerEnd]! ^= 0b0001));
      assert.throws(() => parseManifest(extraHole), integrity(/^manifest: has trailing bytes/));
      assert.throws(() => parseManifest(bytes.subarray(0, bytes.length - 1)), integrity(/^manifest: truncated \(\d+ bytes, want \d+/));
      assert.throws(() => parseManifest(bytes.subarray(0, 100)), integrity(/^manifest: truncated/));
      assert.throws(() => parseManifest(bytes.subarray(0, 5)), integrity(/^manifest: truncated \(5 bytes\)$/));
      assert.throws(() => parseManifest(Buffer.concat([bytes, Buffer.alloc(3)])), integrity(/^manifest: has trailing bytes/));
      assert.throws(() => parseManifest(tampered(bytes, (x) => (x[0] = 0x41))), integrity(/bad magic/));
      assert.throws(() => parseManifest(tampered(bytes, (x) => (x[3] = 0x32))), (e: unknown) => e instanceof InputError && /format version 2 is not supported/.test(e.message));
    });

    it('a flipped byte in a stored chunk, found through the manifest', () => {
      const salt: Salt = keys.salt;
      const plains = [Buffer.alloc(65536, 1), Buffer.alloc(65536, 2)];
      const sealed = plains.map((p) => sealChunk(p, salt));
      const b = sealManifest(input(2, 65536, salt.epoch), sealed, keys.manifestKey);
      const opened = openManifest(b, keys.manifestKey);
      const ref = opened.chunks[1]!;
      assert.deepEqual(openChunk(sealed[1]!.ciphertext, ref, { epoch: opened.header.chunks.saltEpoch, secret: salt.secret }), plains[1]);
      const bad = tampered(sealed[1]!.ciphertext, (x) => (x[100]! ^= 4));
      assert.throws(() => openChunk(bad, ref, salt), integrity(new RegExp(`^chunk ${ref.id}: content does not match its name$`)));
      // A store that serves one chunk's bytes under another's name is caught the same way.
      assert.throws(() => openChunk(sealed[0]!.ciphertext, ref, salt), integrity(/content does not match its name/));
    });
  });

  describe('signatures', () => {
    const pair = generateKeyPairSync('ed25519', { privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
    const priv = parseSigningKey(pair.privateKey, 'k');
    const pub = pair.publicKey;
    const signed = signManifest(bytes, priv);
    const otherPub = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }) as string;

    it('passes with the right public key and still unseals; is deterministic', () => {
      assert.deepEqual(verifySignature(signed, pub).chunks, m.chunks);
      assert.deepEqual(unsealKeys(parseManifest(signed), keys.manifestKey), unsealKeys(m, keys.manifestKey));
      assert.deepEqual(signManifest(bytes, priv), signed);
      assert.match(manifestSigner(parseManifest(signed))!, /^[0-9a-f]{16}$/);
      assert.equal(manifestSigner(m), null);
      assert.notEqual(manifestDigest(signed), manifestDigest(bytes));
    });

    it('a bad signature: another key, or any byte changed', () => {
      assert.throws(() => verifySignature(signed, otherPub), integrity(/^manifest: bad signature \(signed by key [0-9a-f]{16}, checked with key [0-9a-f]{16}\)$/));
      const flipped = tampered(signed, (x) => (x[namesAt + 5]! ^= 1));
      assert.throws(() => verifySignature(flipped, pub), integrity(/^manifest: bad signature$/));
      const sigFlipped = tampered(signed, (x) => (x[x.length - 3]! ^= 1));
      assert.throws(() => verifySignature(sigFlipped, pub), integrity(/^manifest: bad signature$/));
    });

    it('an unsigned manifest is "not signed"; signing twice is refused', () => {
      assert.throws(() => verifySignature(bytes, pub), integrity(/^manifest: not signed$/));
      assert.throws(() => signManifest(signed, priv), InputError);
    });
  });

  it('is compact: ≤ 0.02% of a 16 GiB image (32768 chunks of 512 KiB)', () => {
    const count = 32768;
    const big = sealManifest(input(count), refs(count, 1e9), keys.manifestKey); // no holes: the worst case
    const ratio = big.length / (count * CHUNK);
    assert.ok(ratio <= 0.0002, `manifest is ${big.length} bytes, ${(ratio * 100).toFixed(4)}% of the image`);
    assert.ok(big.length < 3 * 1024 * 1024);
    assert.equal(parseManifest(big).chunks.length, count);
  });

  it('refuses to write what it would not read', () => {
    assert.throws(() => sealManifest({ ...input(3), chunkSize: 1000 }, refs(3), keys.manifestKey), /chunks\.size/);
    assert.throws(() => sealManifest(input(3), refs(4), keys.manifestKey), /chunks\.count/);
    assert.throws(() => sealManifest(input(3), [null, null], keys.manifestKey), /chunks\.count/);
    const h = { ...input(3), source: { ...input(3).source, configDigest: 'sha256:nope' as Digest } };
    assert.throws(() => sealManifest(h, refs(3), keys.manifestKey), RangeError);
  });

  it('has no key material in any tamper message', () => {
    const secrets = [keys.manifestKey, keys.salt.secret, ...chunks.filter((c) => c !== null).map((c) => c.key)].flatMap((k) => [k.toString('hex'), k.toString('base64')]);
    const messages: string[] = [];
    for (const f of [
      () => unsealKeys(m, generateKeys().manifestKey),
      () => unsealKeys(parseManifest(tampered(bytes, (x) => (x[namesAt]! ^= 1))), keys.manifestKey),
      () => parseManifest(bytes.subarray(0, 50)),
    ]) {
      try {
        f();
      } catch (e) {
        messages.push((e as Error).message);
      }
    }
    assert.equal(messages.length, 3);
    for (const msg of messages) for (const s of secrets) assert.ok(!msg.includes(s));
  });
});

// Keep the header type honest: a header literal must satisfy ManifestHeader.
const _example: ManifestHeader = parseManifest(sealManifest(input(1), [null], generateKeys().manifestKey)).header;
void _example;
