import { InputError } from '../errors.js';

declare const chunkIdBrand: unique symbol;
/**
 * A chunk's name: 64 lowercase hex digits of the 32-byte BLAKE3 hash of its
 * ciphertext. Anyone can check a stored chunk against its name without keys.
 * Validated once by parseChunkId / made by chunkIdFromBytes.
 */
export type ChunkId = string & { readonly [chunkIdBrand]: true };

export const CHUNK_ID_BYTES = 32;
const CHUNK_ID_RE = /^[0-9a-f]{64}$/;

export function isChunkId(s: unknown): s is ChunkId {
  return typeof s === 'string' && CHUNK_ID_RE.test(s);
}

/** Parses a chunk name from text (a store listing, a command line). */
export function parseChunkId(s: unknown, what = 'chunk id'): ChunkId {
  if (!isChunkId(s)) throw new InputError(`invalid ${what} ${JSON.stringify(s)}: want 64 lowercase hex digits`);
  return s;
}

/** The name for 32 raw hash bytes (as stored in a manifest's chunk table). */
export function chunkIdFromBytes(b: Uint8Array): ChunkId {
  if (b.length !== CHUNK_ID_BYTES) throw new RangeError(`Cannot make a chunk id from ${b.length} bytes: want ${CHUNK_ID_BYTES}`);
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex') as ChunkId;
}

/** The 32 raw bytes of a name. */
export function chunkIdBytes(id: ChunkId): Buffer {
  return Buffer.from(id, 'hex');
}

