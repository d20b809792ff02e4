/**
 * The bytes the shared tier stores per shard: a 32-byte header, then the
 * shard. Each shard checks itself, so a reader can tell *which* shard is bad
 * and decode around it (erasure coding fills gaps; it cannot find wrong
 * bytes), and each is bound to its chunk, so a value copied under another
 * chunk's key is refused too.
 *
 * ```
 *  0  4  magic "CYEC"
 *  4 16  check: first 16 bytes of BLAKE3-keyed(key = the chunk id's 32 bytes, bytes 20..end)
 * 20  1  version (1)
 * 21  1  k (data shards)
 * 22  1  m (parity shards)
 * 23  1  index of this shard, 0 .. k+m-1 (data first, then parity)
 * 24  4  chunk length in bytes, big-endian
 * 28  4  reserved, zero
 * 32  …  the shard, erasure.shardSize(length, k, m) bytes
 * ```
 *
 * The check covers everything after itself (header fields and payload) in
 * one contiguous hash, so writing and checking copy nothing. It is keyed by
 * the chunk id, which binds the shard to the chunk without storing the id.
 * 128 bits is plenty against accidents (bit rot, a stray write, a bug); a
 * forger who can write to the cache nodes is stopped one level up, where the
 * fetcher checks the decoded chunk against its name.
 */
import { blake3 } from '../chunks/blake3.js';
import { chunkIdBytes, type ChunkId } from '../chunks/id.js';
import { shardSize } from './erasure.js';

export const SHARD_HEADER_BYTES = 32;
/** The header keeps the chunk length in 32 bits. */
export const MAX_CHUNK_BYTES = 0xffff_ffff;
const MAGIC = Buffer.from('CYEC', 'latin1');
const VERSION = 1;
const CHECK_AT = 4;
const CHECK_BYTES = 16;
const CHECKED_FROM = CHECK_AT + CHECK_BYTES;

export interface ShardFields {
  readonly k: number;
  readonly m: number;
  readonly index: number;
  /** Length of the whole chunk (not of this shard). */
  readonly length: number;
}

/** Header + payload, ready to store under the chunk's key. */
export function packShard(id: ChunkId, f: ShardFields, payload: Uint8Array): Buffer {
  const v = Buffer.allocUnsafe(SHARD_HEADER_BYTES + payload.length);
  MAGIC.copy(v, 0);
  v[20] = VERSION;
  v[21] = f.k;
  v[22] = f.m;
  v[23] = f.index;
  v.writeUInt32BE(f.length, 24);
  v.writeUInt32BE(0, 28);
  v.set(payload, SHARD_HEADER_BYTES);
  check(id, v).copy(v, CHECK_AT);
  return v;
}

export type UnpackedShard =
  | { readonly ok: true; readonly index: number; readonly length: number; readonly payload: Buffer }
  | { readonly ok: false; readonly why: string };

/**
 * The shard in `value` if it is whole, is for chunk `id` under the k + m
 * code, and has the payload size its chunk length implies; else why not.
 */
export function unpackShard(id: ChunkId, k: number, m: number, value: Buffer): UnpackedShard {
  if (value.length < SHARD_HEADER_BYTES) return { ok: false, why: `${value.length} bytes, shorter than a shard header` };
  if (!value.subarray(0, 4).equals(MAGIC)) return { ok: false, why: 'bad magic' };
  if (value[20] !== VERSION) return { ok: false, why: `version ${value[20]}, want ${VERSION}` };
  if (value[21] !== k || value[22] !== m) return { ok: false, why: `a ${value[21]}+${value[22]} shard, want ${k}+${m}` };
  const index = value[23]!;
  if (index >= k + m) return { ok: false, why: `shard index ${index} out of range for ${k}+${m}` };
  const length = value.readUInt32BE(24);
  const want = shardSize(length, k, m);
  if (value.length - SHARD_HEADER_BYTES !== want) {
    return { ok: false, why: `payload of ${value.length - SHARD_HEADER_BYTES} bytes, want ${want} for a ${length}-byte chunk` };
  }
  if (!check(id, value).equals(value.subarray(CHECK_AT, CHECKED_FROM))) return { ok: false, why: 'check mismatch (corrupt, or not this chunk)' };
  return { ok: true, index, length, payload: value.subarray(SHARD_HEADER_BYTES) };
}

function check(id: ChunkId, value: Buffer): Buffer {
  return blake3.keyedHash(chunkIdBytes(id), value.subarray(CHECKED_FROM)).subarray(0, CHECK_BYTES);
}
