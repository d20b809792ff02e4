import { blake3 } from './blake3.js';

/**
 * The dedup domain. Chunks convergently encrypted under the same salt (same
 * secret, same epoch) dedupe against each other; under different salts they
 * share nothing, not even names. The secret scopes dedup (a tenant, a region);
 * the epoch lets the salt be rotated — to bound how many images one popular
 * chunk can break (the paper's "blast radius"), or to move new chunks to a new
 * GC root — without handing out a new secret.
 */
export interface Salt {
  /** 0 .. 2^32-1. Recorded in every manifest sealed under it. */
  readonly epoch: number;
  /** 32 random bytes, kept as secret as the manifest key. */
  readonly secret: Buffer;
}

export const SALT_SECRET_BYTES = 32;
export const MAX_SALT_EPOCH = 0xffff_ffff;

/** BLAKE3 derive_key context: fixed, unique to this one use (domain separation). */
const CHUNK_KEY_CONTEXT = 'chunkyard v1 convergent chunk key, per salt epoch';

export function checkSalt(salt: Salt): Salt {
  if (!Number.isInteger(salt.epoch) || salt.epoch < 0 || salt.epoch > MAX_SALT_EPOCH) {
    throw new RangeError(`Cannot use salt epoch ${salt.epoch}: want an integer from 0 to ${MAX_SALT_EPOCH}`);
  }
  // The message names the rule, never the bytes.
  if (!Buffer.isBuffer(salt.secret) || salt.secret.length !== SALT_SECRET_BYTES) {
    throw new RangeError(`Cannot use salt: its secret must be ${SALT_SECRET_BYTES} bytes`);
  }
  return salt;
}

/**
 * The key under which chunk keys are derived for this salt and epoch:
 * `derive_key(CONTEXT, secret ‖ u32be(epoch))`. Every epoch gets an unrelated
 * key, so rotating the epoch changes every chunk key and every chunk name.
 */
export function epochKey(salt: Salt): Buffer {
  checkSalt(salt);
  const material = Buffer.alloc(SALT_SECRET_BYTES + 4);
  salt.secret.copy(material, 0);
  material.writeUInt32BE(salt.epoch, SALT_SECRET_BYTES);
  const key = blake3.deriveKey(CHUNK_KEY_CONTEXT, material);
  material.fill(0);
  return key;
}
