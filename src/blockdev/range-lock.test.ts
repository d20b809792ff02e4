import assert from 'node:assert/strict';
import { RangeLock } from './range-lock.js';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('blockdev/range-lock', function () {
  it('shares reads, excludes overlapping writes and grants in call order', async function () {
    const lock = new RangeLock();
    const log: string[] = [];
    const take = (name: string, start: number, end: number, mode: 'shared' | 'exclusive') =>
      lock.acquire(start, end, mode).then((release) => {
        log.push(name);
        return release;
      });
    const r1 = take('r1', 0, 10, 'shared');
    const r2 = take('r2', 5, 15, 'shared');
    const w1 = take('w1', 8, 9, 'exclusive'); // waits for r1 and r2
    const r3 = take('r3', 8, 12, 'shared'); // waits for w1 (arrived earlier)
    const w2 = take('w2', 20, 30, 'exclusive'); // disjoint: runs at once
    await tick();
    assert.deepEqual(log, ['r1', 'r2', 'w2']);
    (await r1)();
    await tick();
    assert.deepEqual(log, ['r1', 'r2', 'w2']);
    (await r2)();
    await tick();
    assert.deepEqual(log, ['r1', 'r2', 'w2', 'w1']);
    (await w1)();
    await tick();
    assert.deepEqual(log, ['r1', 'r2', 'w2', 'w1', 'r3']);
    (await r3)();
    (await w2)();
    assert.equal(lock.size, 0);
  });

  it('gives up a waiting place on abort', async function () {
    const lock = new RangeLock();
    const held = await lock.acquire(0, 1, 'exclusive');
    const ac = new AbortController();
    const waiting = lock.acquire(0, 1, 'exclusive', ac.signal);
    ac.abort();
    await assert.rejects(waiting, /interrupted/);
    held();
    assert.equal(lock.size, 0);
  });
});
