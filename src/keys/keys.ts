import { randomBytes } from 'node:crypto';
import { open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { InputError, NotFoundError, UsageError } from '../errors.js';
import { blake3 } from '../chunks/blake3.js';
import { MAX_SALT_EPOCH, SALT_SECRET_BYTES, type Salt } from '../chunks/salt.js';

/**
 * What a user holds to write and read sealed images:
 *
 * - `manifestKey` (32 random bytes) seals the chunk-key table of every
 *   manifest they write (AES-256-GCM, src/manifest/seal.ts) and unseals it to
 *   read. Without it a manifest still lists chunk names, not keys.
 * - `salt` (epoch + 32 random bytes) is the dedup domain of convergent
 *   encryption (src/chunks/salt.ts). Everyone who shares a salt dedupes
 *   against everyone else with it; share it as far as you want dedup to
 *   reach, no further.
 *
 * The two are independent secrets: giving someone read access to one image
 * (the manifest key) does not let them probe the store for chunks they
 * guess (the salt), nor the reverse.
 *
 * Key file (`chunkyard keygen -o FILE`, mode 0600), JSON:
 *
 *   {
 *     "chunkyard-key": 1,                    format version
 *     "keyId": "9f2c4e…",                    public fingerprint of manifestKey (informative; checked if present)
 *     "manifestKey": "<base64 of 32 bytes>",
 *     "salt": { "epoch": 0, "secret": "<base64 of 32 bytes>" }
 *   }
 *
 * `CHUNKYARD_KEY` holds the same JSON, or base64 of it (one line, for CI
 * secret stores). No message from this module ever contains key material.
 */

export interface Keys {
  readonly manifestKey: Buffer;
  readonly salt: Salt;
}

declare const keyIdBrand: unique symbol;
/**
 * A public fingerprint of a manifest key: 16 lowercase hex digits (the first
 * 8 bytes of a one-way derived value). Manifests record it so that "wrong
 * key" can be told apart from "tampered". Safe to print.
 */
export type KeyId = string & { readonly [keyIdBrand]: true };

export const KEY_FILE_VERSION = 1;
export const MANIFEST_KEY_BYTES = 32;
const KEY_ID_CONTEXT = 'chunkyard v1 manifest key id';
const KEY_ID_RE = /^[0-9a-f]{16}$/;
/** A key file is a few hundred bytes; anything much bigger is not one. */
const MAX_KEY_FILE_BYTES = 64 * 1024;

export function keyId(manifestKey: Buffer): KeyId {
  if (manifestKey.length !== MANIFEST_KEY_BYTES) throw new RangeError(`Cannot fingerprint a manifest key: want ${MANIFEST_KEY_BYTES} bytes`);
  return blake3.deriveKey(KEY_ID_CONTEXT, manifestKey).subarray(0, 8).toString('hex') as KeyId;
}

export function isKeyId(s: unknown): s is KeyId {
  return typeof s === 'string' && KEY_ID_RE.test(s);
}

/** Fresh random keys, salt epoch 0. */
export function generateKeys(): Keys {
  return { manifestKey: randomBytes(MANIFEST_KEY_BYTES), salt: { epoch: 0, secret: randomBytes(SALT_SECRET_BYTES) } };
}

/** The key file text (pretty JSON, newline-terminated). */
export function formatKeyFile(keys: Keys): string {
  checkKeys(keys, 'keys');
  const doc = {
    'chunkyard-key': KEY_FILE_VERSION,
    keyId: keyId(keys.manifestKey),
    manifestKey: keys.manifestKey.toString('base64'),
    salt: { epoch: keys.salt.epoch, secret: keys.salt.secret.toString('base64') },
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

/** Decodes 32 bytes of canonical base64, or returns null (never echoing the text). */
function decode32(v: unknown): Buffer | null {
  if (typeof v !== 'string') return null;
  const b = Buffer.from(v, 'base64');
  return b.length === 32 && b.toString('base64') === v ? b : null;
}

function checkKeys(keys: Keys, label: string): Keys {
  if (keys.manifestKey.length !== MANIFEST_KEY_BYTES) throw new InputError(`${label}: manifestKey must be ${MANIFEST_KEY_BYTES} bytes`);
  if (keys.salt.secret.length !== SALT_SECRET_BYTES) throw new InputError(`${label}: salt secret must be ${SALT_SECRET_BYTES} bytes`);
  if (!Number.isInteger(keys.salt.epoch) || keys.salt.epoch < 0 || keys.salt.epoch > MAX_SALT_EPOCH) {
    throw new InputError(`${label}: salt epoch must be an integer from 0 to ${MAX_SALT_EPOCH}`);
  }
  if (keys.manifestKey.equals(keys.salt.secret)) throw new InputError(`${label}: manifestKey and salt secret must be different keys`);
  return keys;
}

/**
 * Parses key-file text. `label` names where it came from in messages
 * ("key file /path", "CHUNKYARD_KEY"). Errors say which field is wrong and
 * how, never what it holds.
 */
export function parseKeyFile(text: string, label: string): Keys {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    // Not chained: JSON.parse's message quotes the text it choked on.
    throw new InputError(`${label}: not valid JSON`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new InputError(`${label}: not a chunkyard key file (want a JSON object)`);
  const o = doc as Record<string, unknown>;
  const version = o['chunkyard-key'];
  if (version === undefined) throw new InputError(`${label}: not a chunkyard key file (no "chunkyard-key" field)`);
  if (version !== KEY_FILE_VERSION) {
    const shown = typeof version === 'number' && Number.isSafeInteger(version) ? String(version) : 'of an unknown kind';
    throw new InputError(`${label}: key file version ${shown} is not supported (this chunkyard reads version ${KEY_FILE_VERSION})`);
  }
  const manifestKey = decode32(o['manifestKey']);
  if (!manifestKey) throw new InputError(`${label}: manifestKey must be ${MANIFEST_KEY_BYTES} bytes in base64`);
  const salt = o['salt'];
  if (typeof salt !== 'object' || salt === null || Array.isArray(salt)) throw new InputError(`${label}: salt must be an object {epoch, secret}`);
  const s = salt as Record<string, unknown>;
  const epoch = s['epoch'];
  if (typeof epoch !== 'number' || !Number.isInteger(epoch) || epoch < 0 || epoch > MAX_SALT_EPOCH) {
    throw new InputError(`${label}: salt epoch must be an integer from 0 to ${MAX_SALT_EPOCH}`);
  }
  const secret = decode32(s['secret']);
  if (!secret) throw new InputError(`${label}: salt secret must be ${SALT_SECRET_BYTES} bytes in base64`);
  const keys = checkKeys({ manifestKey, salt: { epoch, secret } }, label);
  const given = o['keyId'];
  if (given !== undefined) {
    const actual = keyId(manifestKey);
    if (given !== actual) {
      const shown = isKeyId(given) ? `${given} ` : '';
      throw new InputError(`${label}: keyId ${shown}does not match its manifestKey (whose id is ${actual}); the file was edited`);
    }
  }
  return keys;
}

/** Parses CHUNKYARD_KEY: key-file JSON, or base64 of it. */
export function parseKeyEnv(value: string, label = 'CHUNKYARD_KEY'): Keys {
  const v = value.trim();
  if (v === '') throw new InputError(`${label}: empty`);
  if (v.startsWith('{')) return parseKeyFile(v, label);
  if (/^[A-Za-z0-9+/=_-]+$/.test(v)) {
    const text = Buffer.from(v, 'base64').toString('utf8').trim();
    if (text.startsWith('{')) return parseKeyFile(text, label);
  }
  throw new InputError(`${label}: want the key file's JSON, or base64 of it`);
}

/** Reads a key file. */
export async function readKeyFile(path: string): Promise<Keys> {
  const label = `key file ${path}`;
  let text: string;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new InputError(`${label}: not a regular file`);
    if (st.size > MAX_KEY_FILE_BYTES) throw new InputError(`${label}: too large to be a key file (${st.size} bytes)`);
    text = await readFile(path, 'utf8');
  } catch (e) {
    if (e instanceof InputError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new NotFoundError(`${label}: not found`);
    if (code === 'EACCES' || code === 'EPERM') throw new InputError(`${label}: permission denied`);
    throw new InputError(`${label}: cannot read it (${code ?? 'unknown error'})`);
  }
  return parseKeyFile(text, label);
}

export interface KeySources {
  /** `--key-file FILE`: wins over `env` when both are given. */
  readonly file?: string | undefined;
  /** The value of CHUNKYARD_KEY (the caller reads the environment, not the library). */
  readonly env?: string | undefined;
}

/** The user's keys from `--key-file` or CHUNKYARD_KEY; UsageError if neither is given. */
export async function loadKeys(sources: KeySources): Promise<Keys> {
  if (sources.file !== undefined && sources.file !== '') return readKeyFile(sources.file);
  if (sources.env !== undefined && sources.env !== '') return parseKeyEnv(sources.env);
  throw new UsageError('no key given: pass --key-file FILE or set CHUNKYARD_KEY');
}

export interface WriteKeyOptions {
  /** Replace an existing file (atomically). @default false */
  readonly force?: boolean;
}

/**
 * Writes a secret file created with mode 0600 (never readable by others, not
 * even for a moment: the mode is set at creation). Without `force` an
 * existing file is an error; with it the new file replaces the old by rename.
 */
export async function writeSecretFile(path: string, text: string, what: string, options: WriteKeyOptions = {}): Promise<void> {
  const target = options.force ? join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`) : path;
  let fh;
  try {
    fh = await open(target, 'wx', 0o600);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new UsageError(`${what} ${path} already exists: refusing to overwrite it`);
    if (code === 'ENOENT') throw new NotFoundError(`${what} ${path}: its directory does not exist`);
    if (code === 'EACCES' || code === 'EPERM') throw new InputError(`${what} ${path}: permission denied`);
    throw new InputError(`${what} ${path}: cannot create it (${code ?? 'unknown error'})`);
  }
  let ok = false;
  try {
    await fh.writeFile(text, 'utf8');
    await fh.sync();
    await fh.close();
    if (target !== path) await rename(target, path);
    ok = true;
  } finally {
    if (!ok) {
      await fh.close().catch(() => {});
      await unlink(target).catch(() => {});
    }
  }
}

/** Writes a key file (mode 0600). */
export async function writeKeyFile(path: string, keys: Keys, options: WriteKeyOptions = {}): Promise<void> {
  await writeSecretFile(path, formatKeyFile(keys), 'key file', options);
}
