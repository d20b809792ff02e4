import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { ChunkId } from '../chunks/id.js';
import { shardSize } from './erasure.js';
import { SHARD_HEADER_BYTES, packShard, unpackShard } from './shard-format.js';

const id = (s: string): ChunkId => createHash('sha256').update(s).digest('hex') as ChunkId;

describe('shard format (header + payload, checked and bound to its chunk)', () => {
  const chunkLength = 1000;
  const payload = Buffer.alloc(shardSize(chunkLength, 4, 1), 0x5a);
  const a = id('a');
  const packed = packShard(a, { k: 4, m: 1, index: 3, length: chunkLength }, payload);

  it('round-trips index, length and payload', () => {
    assert.equal(packed.length, SHARD_HEADER_BYTES + payload.length);
    const u = unpackShard(a, 4, 1, packed);
    assert.ok(u.ok);
    assert.equal(u.index, 3);
    assert.equal(u.length, chunkLength);
    assert.ok(u.payload.equals(payload));
  });

  it('refuses a change to any byte, another chunk, another code, and short values', () => {
    for (let i = 0; i < packed.length; i++) {
      const bad = Buffer.from(packed);
      bad[i]! ^= 0x80;
      assert.equal(unpackShard(a, 4, 1, bad).ok, false, `byte ${i} flipped`);
    }
    assert.match(JSON.stringify(unpackShard(id('b'), 4, 1, packed)), /check mismatch/);
    assert.match(JSON.stringify(unpackShard(a, 4, 2, packed)), /a 4\+1 shard, want 4\+2/);
    assert.match(JSON.stringify(unpackShard(a, 4, 1, packed.subarray(0, 10))), /shorter than a shard header/);
    assert.match(JSON.stringify(unpackShard(a, 4, 1, packed.subarray(0, packed.length - 8))), /payload of 248 bytes, want 256/);
    const wrongIndex = packShard(a, { k: 4, m: 1, index: 5, length: chunkLength }, payload);
    assert.match(JSON.stringify(unpackShard(a, 4, 1, wrongIndex)), /index 5 out of range/);
  });
});
