import assert from 'node:assert/strict';
import { InputError } from '../errors.js';
import { chunkIdBytes, chunkIdFromBytes, isChunkId, parseChunkId } from './id.js';

describe('chunks/id', () => {
  const hex = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';

  it('round-trips between text and bytes', () => {
    const id = parseChunkId(hex);
    assert.equal(chunkIdBytes(id).length, 32);
    assert.equal(chunkIdFromBytes(chunkIdBytes(id)), id);
  });

  it('refuses anything but 64 lowercase hex digits, naming what was wrong', () => {
    for (const bad of [hex.toUpperCase(), hex.slice(1), `${hex}0`, `sha256:${hex}`, 42, null]) {
      assert.equal(isChunkId(bad), false);
      assert.throws(() => parseChunkId(bad, 'chunk name'), (e: unknown) => e instanceof InputError && /^invalid chunk name .*64 lowercase hex/.test(e.message));
    }
  });

  it('makes ids only from 32 bytes', () => {
    assert.throws(() => chunkIdFromBytes(Buffer.alloc(31)), RangeError);
  });
});
