import { createHash, createPrivateKey, createPublicKey, generateKeyPair, type KeyObject } from 'node:crypto';
import { chmod, readFile, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { InputError, NotFoundError } from '../errors.js';
import { writeSecretFile, type WriteKeyOptions } from './keys.js';

/**
 * Ed25519 signing keys for manifests (`--sign-key FILE`). Separate from the
 * key file: the signer (a CI job) holds the private key, while anyone who
 * runs an image needs only the public one to check where a manifest came from.
 *
 * `chunkyard keygen --signing -o FILE` writes FILE (PKCS#8 PEM private key,
 * mode 0600) and FILE.pub (SPKI PEM public key, mode 0644).
 */

export interface SigningKeyPair {
  readonly privateKeyPem: string;
  readonly publicKeyPem: string;
}

export async function generateSigningKey(): Promise<SigningKeyPair> {
  const { privateKey, publicKey } = await promisify(generateKeyPair)('ed25519', {
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  return { privateKeyPem: privateKey, publicKeyPem: publicKey };
}

/** The 32 raw bytes of an Ed25519 public key (or of a private key's public half). */
export function rawPublicKey(key: KeyObject): Buffer {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const jwk = pub.export({ format: 'jwk' });
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') throw new RangeError('Cannot use the key: not Ed25519');
  return Buffer.from(jwk.x, 'base64url');
}

/** A short public fingerprint of a raw Ed25519 public key, for messages: 16 hex digits. */
export function signerFingerprint(rawPublic: Uint8Array): string {
  return createHash('sha256').update(rawPublic).digest('hex').slice(0, 16);
}

/** Writes FILE (private, 0600) and FILE.pub (public); returns the public key's fingerprint. */
export async function writeSigningKeyFiles(path: string, pair: SigningKeyPair, options: WriteKeyOptions = {}): Promise<string> {
  const pub = createPublicKey(pair.publicKeyPem);
  // The public half is not secret, but it goes through the same no-clobber
  // write; then made world-readable on purpose.
  await writeSecretFile(path, pair.privateKeyPem, 'signing key', options);
  await writeSecretFile(`${path}.pub`, pair.publicKeyPem, 'public key', options);
  await chmod(`${path}.pub`, 0o644);
  return signerFingerprint(rawPublicKey(pub));
}

async function readPem(path: string, what: string): Promise<string> {
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new InputError(`${what} ${path}: not a regular file`);
    if (st.size > 64 * 1024) throw new InputError(`${what} ${path}: too large to be a PEM key (${st.size} bytes)`);
    return await readFile(path, 'utf8');
  } catch (e) {
    if (e instanceof InputError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new NotFoundError(`${what} ${path}: not found`);
    if (code === 'EACCES' || code === 'EPERM') throw new InputError(`${what} ${path}: permission denied`);
    throw new InputError(`${what} ${path}: cannot read it (${code ?? 'unknown error'})`);
  }
}

function requireEd25519(key: KeyObject, what: string): KeyObject {
  if (key.asymmetricKeyType !== 'ed25519') throw new InputError(`${what}: a ${key.asymmetricKeyType ?? 'non-asymmetric'} key, want Ed25519`);
  return key;
}

/** Parses an Ed25519 private key (PKCS#8 PEM). `label` names it in messages. */
export function parseSigningKey(pem: string, label: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    throw new InputError(`${label}: not a PEM private key`);
  }
  return requireEd25519(key, label);
}

/** Parses an Ed25519 public key (SPKI PEM); a private key's PEM gives its public half. */
export function parsePublicKey(pem: string, label: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw new InputError(`${label}: not a PEM public key`);
  }
  return requireEd25519(key, label);
}

export async function loadSigningKey(path: string): Promise<KeyObject> {
  return parseSigningKey(await readPem(path, 'signing key'), `signing key ${path}`);
}

export async function loadPublicKey(path: string): Promise<KeyObject> {
  return parsePublicKey(await readPem(path, 'public key'), `public key ${path}`);
}
