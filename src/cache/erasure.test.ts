import assert from 'node:assert/strict';
import { createCipheriv, createHash } from 'node:crypto';
import { InputError } from '../errors.js';
import { decodeShards, encodeShards, shardSize } from './erasure.js';

const KiB = 1024;
const CODES: readonly [number, number][] = [
  [4, 1],
  [4, 2],
  [2, 1],
  [1, 1],
  [6, 3],
];
const LENGTHS = [0, 1, 7, 8, 512 * KiB, 512 * KiB - 3];

/** Bytes that differ everywhere (AES-CTR keystream), so a shard in the wrong place shows. */
function bytes(length: number, seed: string): Buffer {
  const key = createHash('sha256').update(seed).digest();
  const c = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return Buffer.concat([c.update(Buffer.alloc(length)), c.final()]);
}

/** Every subset of {0..n-1} with at most `max` members. */
function lossPatterns(n: number, max: number): number[][] {
  const out: number[][] = [];
  for (let bits = 0; bits < 1 << n; bits++) {
    const set = [...Array(n).keys()].filter((i) => (bits & (1 << i)) !== 0);
    if (set.length <= max) out.push(set);
  }
  return out;
}

function without(shards: readonly Buffer[], lost: readonly number[]): (Buffer | undefined)[] {
  return shards.map((s, i) => (lost.includes(i) ? undefined : s));
}

describe('erasure coding (k data + m parity shards)', () => {
  for (const [k, m] of CODES) {
    it(`${k}+${m}: every loss of up to ${m} shards gives the bytes back, for every length`, async () => {
      const patterns = lossPatterns(k + m, m);
      for (const length of LENGTHS) {
        const data = bytes(length, `${k}+${m}/${length}`);
        const shards = await encodeShards(data, k, m);
        assert.equal(shards.length, k + m);
        const size = shardSize(length, k, m);
        assert.equal(size % 8, 0);
        assert.ok(size * k >= length && size * k < length + 8 * k, `shard size ${size} fits ${length} bytes`);
        for (const s of shards) assert.equal(s.length, size);
        // Data shards are the chunk itself, zero-padded: a reader with all of them needs no decoding.
        assert.deepEqual(Buffer.concat(shards.slice(0, k)).subarray(0, length), data);
        for (const lost of patterns) {
          const got = await decodeShards(without(shards, lost), k, m, length);
          assert.ok(got.equals(data), `${k}+${m}, ${length} bytes, lost ${JSON.stringify(lost)}`);
        }
      }
    });

    it(`${k}+${m}: losing ${m + 1} shards is refused`, async () => {
      const data = bytes(1000, 'refuse');
      const shards = await encodeShards(data, k, m);
      for (const lost of lossPatterns(k + m, m + 1).filter((p) => p.length === m + 1)) {
        await assert.rejects(decodeShards(without(shards, lost), k, m, data.length), (e: unknown) => {
          assert.ok(e instanceof InputError);
          assert.match(e.message, new RegExp(`from ${k - 1} of ${k + m} shards: a ${k}\\+${m} code needs ${k}`));
          return true;
        });
      }
    });
  }

  it('decodes from shards that are not the first k (parity takes the place of lost data)', async () => {
    const data = bytes(4096, 'parity');
    const shards = await encodeShards(data, 4, 2);
    // Parity is not a copy of data: a lost data shard really is rebuilt.
    for (const p of shards.slice(4)) for (const d of shards.slice(0, 4)) assert.ok(!p.equals(d));
    const got = await decodeShards([undefined, shards[1], undefined, shards[3], shards[4], shards[5]], 4, 2, data.length);
    assert.ok(got.equals(data));
  });

  it('does not change the shards it decodes from', async () => {
    const data = bytes(10_000, 'readonly');
    const shards = await encodeShards(data, 4, 1);
    const copies = shards.map((s) => Buffer.from(s));
    await decodeShards([undefined, ...shards.slice(1)], 4, 1, data.length);
    shards.forEach((s, i) => assert.ok(s.equals(copies[i]!), `shard ${i} unchanged`));
  });

  it('k+0 (no parity) splits without padding to 8 and needs every shard', async () => {
    for (const length of LENGTHS) {
      const data = bytes(length, `k+0/${length}`);
      const shards = await encodeShards(data, 4, 0);
      assert.equal(shards.length, 4);
      assert.equal(shards[0]!.length, Math.ceil(length / 4));
      assert.ok((await decodeShards(shards, 4, 0, length)).equals(data));
      if (length > 0) await assert.rejects(decodeShards([...shards.slice(0, 3), undefined], 4, 0, length), InputError);
    }
  });

  it('single copy (1+0) is the chunk itself', async () => {
    for (const length of LENGTHS) {
      const data = bytes(length, `1+0/${length}`);
      const shards = await encodeShards(data, 1, 0);
      assert.equal(shards.length, 1);
      assert.ok(shards[0]!.equals(data));
      assert.ok((await decodeShards(shards, 1, 0, length)).equals(data));
      await assert.rejects(decodeShards([undefined], 1, 0, length), InputError);
    }
  });

  it('refuses shards of the wrong size and codes it cannot run', async () => {
    const shards = await encodeShards(bytes(100, 'size'), 4, 1);
    await assert.rejects(decodeShards([shards[0]!.subarray(1), ...shards.slice(1)], 4, 1, 100), /shard 0 of a 100-byte chunk .* want 32/);
    await assert.rejects(decodeShards(shards, 4, 1, 200), InputError);
    await assert.rejects(decodeShards(shards.slice(1), 4, 1, 100), RangeError);
    await assert.rejects(encodeShards(Buffer.alloc(8), 0, 1), RangeError);
    await assert.rejects(encodeShards(Buffer.alloc(8), 4, 7), RangeError);
    await assert.rejects(encodeShards(Buffer.alloc(8), 25, 1), RangeError);
  });
});
