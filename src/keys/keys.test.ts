import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ChunkyardError, InputError, NotFoundError, UsageError } from '../errors.js';
import { tmpDir, type TmpDir } from '../testing/tools.js';
import { formatKeyFile, generateKeys, isKeyId, keyId, loadKeys, parseKeyEnv, parseKeyFile, readKeyFile, writeKeyFile, type Keys } from './keys.js';
import { generateSigningKey, loadPublicKey, loadSigningKey, parsePublicKey, parseSigningKey, rawPublicKey, writeSigningKeyFiles } from './signing.js';

/** Every way the secret bytes could leak into a message: hex, base64, and 8-char pieces of those. */
function secretsOf(keys: Keys): string[] {
  const out: string[] = [];
  for (const b of [keys.manifestKey, keys.salt.secret]) {
    for (const s of [b.toString('hex'), b.toString('base64')]) {
      for (let i = 0; i + 8 <= s.length; i += 4) out.push(s.slice(i, i + 8));
    }
  }
  return out;
}

function assertNoSecrets(e: unknown, keys: Keys): true {
  assert.ok(e instanceof ChunkyardError, `a ChunkyardError, got ${String(e)}`);
  const text = `${e.message}\n${e.stack ?? ''}\n${String((e as Error).cause ?? '')}`;
  for (const s of secretsOf(keys)) assert.ok(!text.includes(s), `message leaks key material: ${e.message}`);
  return true;
}

describe('keys', () => {
  let tmp: TmpDir;
  beforeEach(async () => {
    tmp = await tmpDir('keys');
  });
  afterEach(async () => {
    await tmp.cleanup();
  });

  it('writes a key file with mode 0600 (whatever the umask) and reads it back', async () => {
    const keys = generateKeys();
    const file = path.join(tmp.path, 'k.json');
    const old = process.umask(0);
    try {
      await writeKeyFile(file, keys);
    } finally {
      process.umask(old);
    }
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const back = await readKeyFile(file);
    assert.deepEqual(back.manifestKey, keys.manifestKey);
    assert.deepEqual(back.salt, keys.salt);
    const doc = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    assert.equal(doc['chunkyard-key'], 1);
    assert.equal(doc['keyId'], keyId(keys.manifestKey));
    assert.deepEqual(Object.keys(doc).sort(), ['chunkyard-key', 'keyId', 'manifestKey', 'salt']);
  });

  it('refuses to overwrite without force; with force replaces atomically, still 0600', async () => {
    const file = path.join(tmp.path, 'k.json');
    const a = generateKeys();
    const b = generateKeys();
    await writeKeyFile(file, a);
    await assert.rejects(writeKeyFile(file, b), (e: unknown) => e instanceof UsageError && /already exists: refusing to overwrite/.test(e.message));
    assert.deepEqual((await readKeyFile(file)).manifestKey, a.manifestKey);
    await writeFile(file, formatKeyFile(a), { mode: 0o644 });
    await writeKeyFile(file, b, { force: true });
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.deepEqual((await readKeyFile(file)).manifestKey, b.manifestKey);
  });

  it('loads from --key-file first, then CHUNKYARD_KEY as JSON or base64; neither is a usage error', async () => {
    const a = generateKeys();
    const b = generateKeys();
    const file = path.join(tmp.path, 'k.json');
    await writeKeyFile(file, a);
    const json = formatKeyFile(b);
    assert.deepEqual((await loadKeys({ file, env: json })).manifestKey, a.manifestKey);
    assert.deepEqual((await loadKeys({ env: json })).manifestKey, b.manifestKey);
    assert.deepEqual((await loadKeys({ env: Buffer.from(json).toString('base64') })).salt, b.salt);
    await assert.rejects(loadKeys({}), (e: unknown) => e instanceof UsageError && /--key-file FILE or set CHUNKYARD_KEY/.test(e.message));
    await assert.rejects(loadKeys({ file: path.join(tmp.path, 'nope.json') }), (e: unknown) => e instanceof NotFoundError && /nope\.json: not found/.test(e.message));
  });

  it('names what is wrong with a bad key file, never what it holds', () => {
    const keys = generateKeys();
    const good = JSON.parse(formatKeyFile(keys)) as Record<string, unknown>;
    const mk = keys.manifestKey.toString('base64');
    const secret = keys.salt.secret.toString('base64');
    const cases: [string, string, RegExp][] = [
      ['truncated JSON', formatKeyFile(keys).slice(0, 60), /^L: not valid JSON$/],
      ['JSON with the key in a syntax error', `{"manifestKey": ${mk}}`, /^L: not valid JSON$/],
      ['an array', `[${JSON.stringify(mk)}]`, /want a JSON object/],
      ['no version', JSON.stringify({ ...good, 'chunkyard-key': undefined }), /no "chunkyard-key" field/],
      ['a future version', JSON.stringify({ ...good, 'chunkyard-key': 2 }), /version 2 is not supported \(this chunkyard reads version 1\)/],
      ['a short manifest key', JSON.stringify({ ...good, manifestKey: mk.slice(4) }), /manifestKey must be 32 bytes in base64/],
      ['a hex manifest key', JSON.stringify({ ...good, manifestKey: keys.manifestKey.toString('hex') }), /manifestKey must be 32 bytes in base64/],
      ['a bad epoch', JSON.stringify({ ...good, salt: { epoch: -1, secret } }), /salt epoch must be an integer/],
      ['a string epoch', JSON.stringify({ ...good, salt: { epoch: '1', secret } }), /salt epoch must be an integer/],
      ['a short secret', JSON.stringify({ ...good, salt: { epoch: 0, secret: secret.slice(8) } }), /salt secret must be 32 bytes in base64/],
      ['the same key twice', JSON.stringify({ ...good, salt: { epoch: 0, secret: mk } }), /must be different keys/],
      ['an edited keyId', JSON.stringify({ ...good, keyId: '0000000000000000' }), /keyId 0000000000000000 does not match its manifestKey \(whose id is [0-9a-f]{16}\)/],
      ['a keyId holding the secret', JSON.stringify({ ...good, keyId: secret }), /keyId does not match/],
    ];
    for (const [what, text, re] of cases) {
      assert.throws(
        () => parseKeyFile(text, 'L'),
        (e: unknown) => {
          assert.ok(e instanceof InputError, what);
          assert.match(e.message, re, what);
          return assertNoSecrets(e, keys);
        },
        what,
      );
    }
    for (const env of ['not a key', `${mk}`, Buffer.from(`{"manifestKey":"${mk}"`).toString('base64')]) {
      assert.throws(
        () => parseKeyEnv(env),
        (e: unknown) => e instanceof InputError && e.message.startsWith('CHUNKYARD_KEY: ') && assertNoSecrets(e, keys),
      );
    }
  });

  it('key ids are short public fingerprints that tell keys apart', () => {
    const a = generateKeys();
    const b = generateKeys();
    assert.ok(isKeyId(keyId(a.manifestKey)));
    assert.equal(keyId(a.manifestKey), keyId(Buffer.from(a.manifestKey)));
    assert.notEqual(keyId(a.manifestKey), keyId(b.manifestKey));
    assert.ok(!a.manifestKey.toString('hex').includes(keyId(a.manifestKey)));
  });

  describe('signing keys', () => {
    it('writes FILE (0600) and FILE.pub (0644) and loads both', async () => {
      const file = path.join(tmp.path, 'sign.pem');
      const pair = await generateSigningKey();
      const fp = await writeSigningKeyFiles(file, pair);
      assert.match(fp, /^[0-9a-f]{16}$/);
      assert.equal((await stat(file)).mode & 0o777, 0o600);
      assert.equal((await stat(`${file}.pub`)).mode & 0o777, 0o644);
      const priv = await loadSigningKey(file);
      const pub = await loadPublicKey(`${file}.pub`);
      assert.deepEqual(rawPublicKey(priv), rawPublicKey(pub));
      await assert.rejects(writeSigningKeyFiles(file, pair), UsageError);
    });

    it('refuses keys that are not Ed25519, or not keys, without quoting them', () => {
      const rsa = generateKeyPairSync('rsa', { modulusLength: 1024, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
      assert.throws(() => parseSigningKey(rsa.privateKey, 'signing key K'), /^InputError: signing key K: a rsa key, want Ed25519$/);
      assert.throws(() => parsePublicKey(rsa.publicKey, 'public key P'), /^InputError: public key P: a rsa key, want Ed25519$/);
      const garbage = '-----BEGIN PRIVATE KEY-----\nc2VjcmV0c2VjcmV0\n-----END PRIVATE KEY-----\n';
      assert.throws(
        () => parseSigningKey(garbage, 'signing key K'),
        (e: unknown) => e instanceof InputError && e.message === 'signing key K: not a PEM private key' && e.cause === undefined,
      );
    });
  });
});
