import assert from 'node:assert/strict';
import { threadId } from 'node:worker_threads';
import { IntegrityError } from '../errors.js';
import { createSealer, defaultThreads } from './pool.js';
import { sealChunk } from './seal.js';
import type { Salt } from './salt.js';

const SALT: Salt = { epoch: 3, secret: Buffer.alloc(32, 0x5a) };

function chunk(seed: number, len = 128 * 1024): Buffer {
  const b = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 17 + (i >> 9)) & 255;
  return b;
}

describe('chunks/pool', () => {
  it('defaults to min(availableParallelism, 4) threads, at least 1', () => {
    assert.ok(defaultThreads() >= 1 && defaultThreads() <= 4);
  });

  it('seals exactly as the inline function does, on worker threads, transferring the input', async () => {
    const sealer = createSealer(SALT, { threads: 2 });
    try {
      const plains = Array.from({ length: 8 }, (_, i) => chunk(i));
      const expected = plains.map((p) => sealChunk(p, SALT));
      const sent = plains.map((p) => Buffer.from(p)); // the pool takes ownership of what it is given
      const results = await Promise.all(sent.map((p, i) => sealer.seal(i, p)));
      for (let i = 0; i < plains.length; i++) {
        assert.equal(results[i]!.index, i);
        assert.equal(results[i]!.id, expected[i]!.id);
        assert.deepEqual(results[i]!.key, expected[i]!.key);
        assert.deepEqual(results[i]!.ciphertext, expected[i]!.ciphertext);
        assert.equal(sent[i]!.length, 0, 'the plaintext buffer was transferred, not copied');
        assert.deepEqual(results[i]!.plain, plains[i], 'and handed back unchanged, for reuse');
      }
      const stats = sealer.stats();
      assert.equal(stats.sealed, 8);
      assert.equal(stats.byThread.size, 2, 'both workers took jobs');
      assert.ok(!stats.byThread.has(threadId), 'no job ran on the main thread');
    } finally {
      await sealer.close();
    }
  });

  it('opens through the workers, and names tampering with an IntegrityError', async () => {
    const sealer = createSealer(SALT, { threads: 1, maxInFlight: 1 });
    try {
      const plain = chunk(42);
      const s = sealChunk(plain, SALT);
      assert.deepEqual(await sealer.open(Buffer.from(s.ciphertext), s), plain);
      const bad = Buffer.from(s.ciphertext);
      bad[7]! ^= 0x80;
      await assert.rejects(sealer.open(bad, s), (e: unknown) => e instanceof IntegrityError && e.message === `chunk ${s.id}: content does not match its name`);
      const other = sealChunk(chunk(43), SALT);
      await assert.rejects(
        sealer.open(Buffer.from(s.ciphertext), { id: s.id, key: other.key }),
        (e: unknown) => e instanceof IntegrityError && e.message === `chunk ${s.id}: plaintext does not match its key`,
      );
      // More jobs than maxInFlight: they wait for a slot and all complete, in order.
      const many = await Promise.all(Array.from({ length: 6 }, (_, i) => sealer.seal(i, chunk(i, 4096))));
      assert.deepEqual(
        many.map((r) => r.index),
        [0, 1, 2, 3, 4, 5],
      );
      assert.equal(sealer.stats().opened, 1);
    } finally {
      await sealer.close();
    }
  });

  it('refuses work after close', async () => {
    const sealer = createSealer(SALT, { threads: 1 });
    await sealer.close();
    await sealer.close();
    await assert.rejects(sealer.seal(0, chunk(1, 4096)), /closed/);
  });
});
