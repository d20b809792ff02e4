/**
 * Erasure coding of one chunk for the shared cache tier: k data shards and m
 * parity shards, any k of which give the chunk back (Reed–Solomon; the paper
 * used 4 + 1 with XOR parity, which is what RS with m = 1 amounts to).
 *
 * The chunk is cut into k equal data shards, the last padded with zeros; all
 * k + m shards have the same size, a multiple of 8 when m > 0 (the addon's
 * rule). With m = 0 there is nothing to code: k = 1 is a single full copy,
 * k > 1 a plain split, both used as baselines by bench/shared-tier.ts.
 *
 * Shards carry no header here and nothing is checked: erasure coding repairs
 * *missing* shards, not wrong ones. Spotting a bad shard (so that it can be
 * treated as missing) is the caller's job; redis-ec.ts hashes each one.
 */
import { InputError } from '../errors.js';
import { RS_MAX_DATA_SHARDS, RS_MAX_PARITY_SHARDS, rsCode } from './reed-solomon.js';

export const MAX_DATA_SHARDS = RS_MAX_DATA_SHARDS;
export const MAX_PARITY_SHARDS = RS_MAX_PARITY_SHARDS;

/** Throws a RangeError unless (k, m) is a code we can run. */
export function checkCode(k: number, m: number): void {
  if (!Number.isInteger(k) || k < 1 || k > MAX_DATA_SHARDS) throw new RangeError(`Cannot use ${k} data shards: want an integer from 1 to ${MAX_DATA_SHARDS}`);
  if (!Number.isInteger(m) || m < 0 || m > MAX_PARITY_SHARDS) throw new RangeError(`Cannot use ${m} parity shards: want an integer from 0 to ${MAX_PARITY_SHARDS}`);
}

/** The size of every shard of a `length`-byte chunk under a k + m code. */
export function shardSize(length: number, k: number, m: number): number {
  if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`Cannot shard a chunk of ${length} bytes`);
  const per = Math.ceil(length / k);
  return m === 0 ? per : Math.ceil(per / 8) * 8;
}

/**
 * The k + m shards of `data`, each `shardSize(data.length, k, m)` bytes:
 * shard i < k is bytes [i·size, (i+1)·size) of the zero-padded chunk, shard
 * k + j is parity. The shards are views of one new buffer (or of `data`
 * itself when m = 0 and no padding is needed); the caller must not change
 * `data` while they are in use.
 */
export async function encodeShards(data: Buffer, k: number, m: number): Promise<Buffer[]> {
  checkCode(k, m);
  const size = shardSize(data.length, k, m);
  if (m === 0 && size * k === data.length) return views(data, size, k);
  const all = Buffer.allocUnsafe((k + m) * size);
  data.copy(all, 0);
  all.fill(0, data.length, k * size);
  const dataPart = all.subarray(0, k * size);
  const parityPart = all.subarray(k * size);
  if (m > 0 && size > 0) {
    await rsCode({ k, m, sources: mask(0, k), targets: mask(k, k + m), data: dataPart, parity: parityPart, shardSize: size });
  } else {
    parityPart.fill(0);
  }
  return views(all, size, k + m);
}

/**
 * The `length` bytes of the chunk whose shards are `shards` (index = shard
 * number; undefined = missing). Any k present shards are enough; with fewer
 * it throws InputError. Present shards must all be `shardSize(length, k, m)`
 * bytes. Shards are read, never changed.
 */
export async function decodeShards(shards: readonly (Buffer | undefined)[], k: number, m: number, length: number): Promise<Buffer> {
  checkCode(k, m);
  if (shards.length !== k + m) throw new RangeError(`Cannot decode ${shards.length} shards under a ${k}+${m} code: want ${k + m} slots`);
  const size = shardSize(length, k, m);
  let present = 0;
  let sources = 0;
  for (let i = 0; i < shards.length; i++) {
    const s = shards[i];
    if (s === undefined) continue;
    if (s.length !== size) throw new InputError(`shard ${i} of a ${length}-byte chunk under a ${k}+${m} code is ${s.length} bytes: want ${size}`);
    present++;
    sources |= 1 << i;
  }
  if (present < k) throw new InputError(`cannot rebuild a ${length}-byte chunk from ${present} of ${k + m} shards: a ${k}+${m} code needs ${k}`);
  if (length === 0) return Buffer.alloc(0);
  const dataMissing = (sources & mask(0, k)) !== mask(0, k);
  if (!dataMissing) {
    if (k === 1) return shards[0]!.subarray(0, length);
    return Buffer.concat(shards.slice(0, k) as Buffer[], k * size).subarray(0, length);
  }
  // Some data shard is missing, so m > 0 (present >= k) and RS rebuilds it.
  const data = Buffer.allocUnsafe(k * size);
  const parity = Buffer.allocUnsafe(m * size);
  shards.forEach((s, i) => {
    if (s !== undefined) s.copy(i < k ? data : parity, (i < k ? i : i - k) * size);
  });
  const targets = ~sources & mask(0, k);
  await rsCode({ k, m, sources, targets, data, parity, shardSize: size });
  return data.subarray(0, length);
}

/** Bits from..to-1 set. */
function mask(from: number, to: number): number {
  let b = 0;
  for (let i = from; i < to; i++) b |= 1 << i;
  return b;
}

function views(buf: Buffer, size: number, count: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) out.push(buf.subarray(i * size, (i + 1) * size));
  return out;
}
