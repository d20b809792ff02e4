import { createCipheriv, timingSafeEqual } from 'node:crypto';
import { IntegrityError } from '../errors.js';
import { blake3 } from './blake3.js';
import { chunkIdBytes, chunkIdFromBytes, type ChunkId } from './id.js';
import { epochKey, type Salt } from './salt.js';

/**
 * Convergent encryption of one chunk (DESIGN.md §6, after the paper):
 *
 *   key        = BLAKE3-keyed(epochKey(salt), plaintext)    32 bytes
 *   ciphertext = AES-256-CTR(key, IV = 0, plaintext)         same length as plaintext
 *   name       = BLAKE3(ciphertext)                          the ChunkId
 *
 * Equal plaintexts under one salt give equal ciphertexts, so they dedupe in a
 * store that never sees a key. A reader checks the name (integrity, no key
 * needed), decrypts, and re-derives the key from the plaintext, which
 * authenticates it: only someone holding the salt could have produced a
 * plaintext whose keyed hash is the key the manifest vouches for.
 *
 * Why CTR with a zero IV, not GCM with a fixed nonce: each key is derived from
 * the one plaintext it encrypts, so a key never meets a second plaintext and a
 * fixed IV/nonce is safe for either mode. GCM's tag would add nothing: the name
 * already protects the ciphertext and the key re-derivation the plaintext. CTR
 * keeps the ciphertext exactly chunk-sized (no 16-byte tag), so a chunk's
 * place in the image is its index times the chunk size, as in the paper. Both
 * run at the same speed here (bench/hash.ts).
 */

export const CHUNK_CIPHER = 'aes-256-ctr';
export const CHUNK_HASH = 'blake3';
export const CHUNK_KEY_BYTES = 32;

const ZERO_IV = Buffer.alloc(16);

export interface SealedChunk {
  /** BLAKE3 of the ciphertext: the chunk's name in a store. */
  readonly id: ChunkId;
  /** The convergent key (secret: goes only into the manifest's sealed key table). */
  readonly key: Buffer;
  readonly ciphertext: Buffer;
}

/** What a manifest vouches for one chunk. */
export interface ChunkRef {
  readonly id: ChunkId;
  readonly key: Buffer;
}

/** AES-256-CTR with a zero IV; the same call encrypts and decrypts. */
function ctr(key: Buffer, data: Buffer): Buffer {
  if (key.length !== CHUNK_KEY_BYTES) throw new RangeError(`Cannot use a ${key.length}-byte chunk key: want ${CHUNK_KEY_BYTES}`);
  const c = createCipheriv(CHUNK_CIPHER, key, ZERO_IV);
  const out = c.update(data);
  const tail = c.final(); // CTR is a stream cipher: always empty
  return tail.length === 0 ? out : Buffer.concat([out, tail]);
}

/** The convergent key of a plaintext under a salt. */
export function chunkKey(plain: Buffer, salt: Salt): Buffer {
  return blake3.keyedHash(epochKey(salt), plain);
}

/** The name a ciphertext must have. */
export function chunkName(ciphertext: Uint8Array): ChunkId {
  return chunkIdFromBytes(blake3.hash(ciphertext));
}

export function sealChunk(plain: Buffer, salt: Salt): SealedChunk {
  const key = chunkKey(plain, salt);
  const ciphertext = ctr(key, plain);
  return { id: chunkName(ciphertext), key, ciphertext };
}

/** Checks a stored chunk against its name; needs no key (verify, GC, caches). */
export function checkChunkName(ciphertext: Uint8Array, id: ChunkId): void {
  if (!blake3.hash(ciphertext).equals(chunkIdBytes(id))) {
    throw new IntegrityError(`chunk ${id}: content does not match its name`);
  }
}

/**
 * Checks the name, decrypts, and re-derives the key to authenticate the
 * plaintext. Throws IntegrityError naming the chunk (never the key).
 */
export function openChunk(ciphertext: Buffer, expected: ChunkRef, salt: Salt): Buffer {
  checkChunkName(ciphertext, expected.id);
  return openNamedChunk(ciphertext, expected, salt);
}

/**
 * openChunk for ciphertext already checked against its name (the read
 * path's fetcher checks every tier's answer): decrypts and authenticates
 * without hashing the chunk a second time (~70-100 µs per 512 KiB).
 */
export function openNamedChunk(ciphertext: Buffer, expected: ChunkRef, salt: Salt): Buffer {
  const plain = ctr(expected.key, ciphertext);
  const key = chunkKey(plain, salt);
  if (!timingSafeEqual(key, expected.key)) {
    throw new IntegrityError(`chunk ${expected.id}: plaintext does not match its key`);
  }
  return plain;
}
