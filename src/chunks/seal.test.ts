import assert from 'node:assert/strict';
import { createCipheriv, createHash } from 'node:crypto';
import { IntegrityError } from '../errors.js';
import { loadBlake3Backend } from './blake3.js';
import { checkChunkName, chunkName, openChunk, sealChunk } from './seal.js';
import type { Salt } from './salt.js';

const SECRET = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
const SALT: Salt = { epoch: 7, secret: SECRET };

function pattern(len: number, mul = 7, add = 3): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * mul + add) & 255;
  return b;
}

function isIntegrity(re: RegExp) {
  return (e: unknown): boolean => e instanceof IntegrityError && re.test(e.message);
}

describe('chunks/seal', () => {
  it('known answer: key, ciphertext and name from the primitives, computed independently', async () => {
    const plain = pattern(65536);
    const sealed = sealChunk(plain, SALT);

    // Independently: BLAKE3 from the wasm package directly, AES-256-CTR from node's OpenSSL.
    const wasm = await loadBlake3Backend('wasm');
    const material = Buffer.concat([SECRET, Buffer.from([0, 0, 0, 7])]); // secret ‖ u32be(epoch)
    const epochKey = wasm.deriveKey('chunkyard v1 convergent chunk key, per salt epoch', material);
    const key = wasm.keyedHash(epochKey, plain);
    const c = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
    const ciphertext = Buffer.concat([c.update(plain), c.final()]);
    assert.deepEqual(sealed.key, key);
    assert.deepEqual(sealed.ciphertext, ciphertext);
    assert.equal(sealed.id, wasm.hash(ciphertext).toString('hex'));

    // Pinned (computed once with the independent method above): a change to the
    // construction — context string, epoch encoding, IV — breaks this.
    assert.equal(sealed.key.toString('hex'), '5b0d2cc2dd746b02eb351ba2ad64380d408439dc718ec9f509355e0009a37f46');
    assert.equal(sealed.id, '5a46128eb44e048a0dbf26e31508fc005fd9f56df83ea3fadf31b4bad56f95c8');
    assert.equal(createHash('sha256').update(sealed.ciphertext).digest('hex'), '659304b98380e2f4f0522f855c34d0d34c468db32e0d3c7d0523ae74c33e142c');
  });

  it('round-trips, and equal plaintexts under one salt dedupe', () => {
    const plain = pattern(512 * 1024, 13, 1);
    const a = sealChunk(plain, SALT);
    const b = sealChunk(Buffer.from(plain), SALT);
    assert.equal(a.id, b.id);
    assert.deepEqual(a.ciphertext, b.ciphertext);
    assert.equal(a.ciphertext.length, plain.length, 'CTR: ciphertext is exactly chunk-sized');
    assert.notDeepEqual(a.ciphertext, plain);
    assert.deepEqual(openChunk(a.ciphertext, a, SALT), plain);
    assert.equal(chunkName(a.ciphertext), a.id);
    checkChunkName(a.ciphertext, a.id);
  });

  it('another salt secret, or another epoch, changes every key and name', () => {
    const plain = pattern(65536);
    const base = sealChunk(plain, SALT);
    const otherEpoch = sealChunk(plain, { epoch: 8, secret: SECRET });
    const otherSecret = sealChunk(plain, { epoch: 7, secret: Buffer.alloc(32, 1) });
    for (const s of [otherEpoch, otherSecret]) {
      assert.notEqual(s.id, base.id);
      assert.notDeepEqual(s.key, base.key);
    }
  });

  it('a flipped byte in a stored chunk fails its name', () => {
    const s = sealChunk(pattern(65536), SALT);
    const bad = Buffer.from(s.ciphertext);
    bad[12345]! ^= 0x01;
    assert.throws(() => openChunk(bad, s, SALT), isIntegrity(new RegExp(`^chunk ${s.id}: content does not match its name$`)));
    assert.throws(() => checkChunkName(bad, s.id), IntegrityError);
  });

  it('a wrong key or a wrong salt fails the key re-derivation, and the message holds no key', () => {
    const s = sealChunk(pattern(65536), SALT);
    const other = sealChunk(pattern(65536, 5, 9), SALT);
    const wrongKey = { id: s.id, key: other.key };
    for (const [ref, salt] of [
      [wrongKey, SALT],
      [s, { epoch: 7, secret: Buffer.alloc(32, 9) }],
      [s, { epoch: 6, secret: SECRET }],
    ] as const) {
      assert.throws(
        () => openChunk(s.ciphertext, ref, salt),
        (e: unknown) => {
          assert.ok(e instanceof IntegrityError);
          assert.equal(e.message, `chunk ${s.id}: plaintext does not match its key`);
          for (const k of [s.key, other.key, SECRET]) assert.ok(!e.message.includes(k.toString('hex')) && !e.message.includes(k.toString('base64')));
          return true;
        },
      );
    }
  });

  it('refuses malformed salts and keys with RangeError, not by printing them', () => {
    assert.throws(() => sealChunk(Buffer.alloc(10), { epoch: -1, secret: SECRET }), RangeError);
    assert.throws(() => sealChunk(Buffer.alloc(10), { epoch: 2 ** 32, secret: SECRET }), RangeError);
    assert.throws(() => sealChunk(Buffer.alloc(10), { epoch: 0, secret: Buffer.alloc(16) }), (e: unknown) => e instanceof RangeError && !e.message.includes('00000000'));
    const s = sealChunk(pattern(4096), SALT);
    assert.throws(() => openChunk(s.ciphertext, { id: s.id, key: s.key.subarray(0, 16) }, SALT), RangeError);
  });
});
