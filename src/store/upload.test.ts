import assert from 'node:assert/strict';
import { InterruptedError, StoreError } from '../errors.js';
import { knownChunk, type KnownChunk } from '../testing/chunk-data.js';
import { MemoryStore } from '../testing/memory-store.js';
import { countsSince } from './store.js';
import { publish, uploadChunks } from './upload.js';

const chunks = (n: number, seed = 'up'): KnownChunk[] => Array.from({ length: n }, (_, i) => knownChunk(i, seed, 2048));

describe('uploadChunks', function () {
  it('keeps at most `concurrency` puts in flight and pulls no further ahead', async function () {
    const store = new MemoryStore();
    let inFlight = 0;
    let most = 0;
    const put = store.put.bind(store);
    store.put = async (id, data, o) => {
      inFlight++;
      most = Math.max(most, inFlight);
      try {
        return await put(id, data, o);
      } finally {
        inFlight--;
      }
    };
    let pulled = 0;
    let finished = 0;
    let ahead = 0;
    async function* source(): AsyncGenerator<KnownChunk> {
      for (const c of chunks(40)) {
        pulled++;
        ahead = Math.max(ahead, pulled - finished);
        yield c;
      }
    }
    const summary = await uploadChunks(store, source(), { concurrency: 3, onProgress: (p) => (finished = p.uploaded + p.skipped) });
    assert.equal(summary.uploaded, 40);
    assert.ok(most > 0 && most <= 3, `puts in flight: ${most}`);
    assert.ok(ahead <= 3, `chunks pulled ahead of completion: ${ahead}`);
  });

  it('skips ids known present and ids seen earlier in the run, without a request', async function () {
    const store = new MemoryStore();
    const cs = chunks(6);
    const before = store.requestCounts();
    const summary = await uploadChunks(store, [...cs, cs[2]!, cs[3]!], { present: new Set([cs[0]!.id]) });
    assert.deepEqual(summary, { uploaded: 5, skipped: 3, bytes: cs.slice(1).reduce((n, c) => n + c.data.length, 0) });
    // With `present` given, the rest were found missing: no HEAD before each PUT.
    assert.deepEqual(countsSince(before, store.requestCounts()), { get: 0, put: 5, head: 0, list: 0, delete: 0 });
    assert.equal(await store.has(cs[0]!.id), false, 'a chunk claimed present is not written');
  });

  it("counts chunks the store already has as skipped when it looks first", async function () {
    const store = new MemoryStore();
    const cs = chunks(4);
    await store.put(cs[1]!.id, cs[1]!.data);
    const progress: number[] = [];
    const summary = await uploadChunks(store, cs, { onProgress: (p) => progress.push(p.uploaded + p.skipped) });
    assert.deepEqual({ uploaded: summary.uploaded, skipped: summary.skipped }, { uploaded: 3, skipped: 1 });
    assert.deepEqual(progress.sort(), [1, 2, 3, 4]);
  });

  it('stops pulling on the first failure, closes the source and throws that failure', async function () {
    const store = new MemoryStore();
    const put = store.put.bind(store);
    let puts = 0;
    store.put = async (id, data, o) => {
      if (++puts === 5) throw new StoreError('disk on fire');
      return put(id, data, o);
    };
    let pulled = 0;
    let closed = false;
    async function* source(): AsyncGenerator<KnownChunk> {
      try {
        for (const c of chunks(100)) {
          pulled++;
          yield c;
        }
      } finally {
        closed = true;
      }
    }
    await assert.rejects(uploadChunks(store, source(), { concurrency: 2 }), /disk on fire/);
    assert.ok(closed, 'source closed');
    assert.ok(pulled <= 5 + 2, `pulled ${pulled}`);
  });

  it('stops on the signal', async function () {
    const store = new MemoryStore();
    const ctrl = new AbortController();
    let closed = false;
    async function* source(): AsyncGenerator<KnownChunk> {
      try {
        for (const [i, c] of chunks(100).entries()) {
          if (i === 10) ctrl.abort();
          yield c;
        }
      } finally {
        closed = true;
      }
    }
    await assert.rejects(uploadChunks(store, source(), { signal: ctrl.signal }), InterruptedError);
    assert.ok(closed);
  });
});

describe('publish', function () {
  it('makes chunks durable, then writes the manifest, then the tag', async function () {
    const store = new MemoryStore();
    const log: string[] = [];
    const wrap = <K extends 'sync' | 'putManifest' | 'setTag'>(k: K): void => {
      const f = (store[k] as (...a: unknown[]) => Promise<unknown>).bind(store);
      (store as unknown as Record<string, unknown>)[k] = async (...a: unknown[]) => {
        log.push(`${k} start`);
        const r = await f(...a);
        log.push(`${k} end`);
        return r;
      };
    };
    wrap('sync');
    wrap('putManifest');
    wrap('setTag');
    const summary = await uploadChunks(store, chunks(5));
    assert.equal(summary.uploaded, 5);
    const digest = await publish(store, Buffer.from('{"chunks":5}'), 'v1');
    assert.deepEqual(log, ['sync start', 'sync end', 'putManifest start', 'putManifest end', 'setTag start', 'setTag end']);
    assert.equal(await store.getTag('v1'), digest);
    assert.equal(await publish(store, Buffer.from('{"chunks":5}')), digest, 'without a tag');
  });
});
