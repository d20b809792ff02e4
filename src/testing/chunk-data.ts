/**
 * Known chunk contents for store tests: chunk `i` of a seeded series, with
 * a length that varies (1 KiB .. maxBytes) and bytes that differ everywhere,
 * named by the sha256 of its bytes (stores don't compute names, so any
 * 64-hex function of the content lets a test check every stored byte).
 * Test-only code.
 */
import { createCipheriv, createHash } from 'node:crypto';
import type { ChunkId } from '../store/ids.js';

export interface KnownChunk {
  readonly id: ChunkId;
  readonly data: Buffer;
}

export function knownChunk(i: number, seed = 'chunkyard', maxBytes = 512 * 1024): KnownChunk {
  const key = createHash('sha256').update(`${seed}/${i}`).digest();
  const len = 1024 + (key.readUInt32BE(0) % Math.max(1, maxBytes - 1024 + 1));
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const data = Buffer.concat([cipher.update(Buffer.alloc(len)), cipher.final()]);
  return { id: nameOf(data), data };
}

/** The name the tests give bytes: sha256 hex. */
export function nameOf(data: Uint8Array): ChunkId {
  return createHash('sha256').update(data).digest('hex') as ChunkId;
}
