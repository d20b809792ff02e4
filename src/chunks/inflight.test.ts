import assert from 'node:assert/strict';
import { InFlight } from './inflight.js';

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('chunks/inflight', () => {
  it('starts at most max tasks; run waits for a slot', async () => {
    const f = new InFlight(2);
    const gates = [deferred(), deferred(), deferred()];
    let started = 0;
    await f.run(async () => {
      started++;
      await gates[0]!.promise;
    });
    await f.run(async () => {
      started++;
      await gates[1]!.promise;
    });
    let third = false;
    const p = f.run(async () => {
      started++;
      await gates[2]!.promise;
    }).then(() => (third = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(started, 2);
    assert.equal(third, false);
    gates[1]!.resolve();
    await p;
    assert.equal(started, 3);
    gates[0]!.resolve();
    gates[2]!.resolve();
    await f.drain();
    assert.equal(f.size, 0);
  });

  it('reports the first failure at the next run or drain, also for synchronous throws', async () => {
    const f = new InFlight(4);
    await f.run(() => {
      throw new Error('boom');
    });
    await assert.rejects(f.drain(), /boom/);
    await assert.rejects(
      f.run(async () => {}),
      /boom/,
    );
  });
});
