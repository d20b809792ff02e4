import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { MemoryStore } from '../testing/memory-store.js';
import { runStoreConformance } from './conformance.js';
import type { ChunkId } from './ids.js';
import { estimateRemainingPages, findMissing, keyFraction } from './missing.js';
import { countsSince } from './store.js';

runStoreConformance('memory (test double)', async () => ({ store: new MemoryStore({ listPageSize: 7 }), cleanup: async () => {} }));

/** Deterministic, uniformly spread ids. */
function ids(prefix: string, n: number): ChunkId[] {
  return Array.from({ length: n }, (_, i) => createHash('sha256').update(`${prefix}/${i}`).digest('hex') as ChunkId);
}

/** An id at fraction `f` of the key space, with `tail` making it unique. */
function idAt(f: number, tail: number): ChunkId {
  const head = Math.floor(f * 2 ** 48)
    .toString(16)
    .padStart(12, '0');
  return (head + tail.toString(16).padStart(52, '0')) as ChunkId;
}

async function measure(store: MemoryStore, wanted: ChunkId[], options: Parameters<typeof findMissing>[2] = {}) {
  const before = store.requestCounts();
  const r = await findMissing(store, wanted, options);
  const used = countsSince(before, store.requestCounts());
  assert.equal(r.requests.head, used.head, 'reported HEADs match the store’s count');
  assert.equal(r.requests.list, used.list, 'reported LISTs match the store’s count');
  return r;
}

describe('findMissing', function () {
  it('places ids in the key space', function () {
    assert.equal(keyFraction(('0'.repeat(13) + '0'.repeat(51)) as ChunkId), 2 ** -52);
    assert.equal(keyFraction(('8' + '0'.repeat(63)) as ChunkId), 0.5 + 2 ** -52);
    assert.equal(keyFraction('f'.repeat(64) as ChunkId), 1);
    // 1000 keys seen up to the middle: about 1000 more, one page of 1000.
    assert.equal(estimateRemainingPages(1000, ('8' + '0'.repeat(63)) as ChunkId, 1000), 1);
    assert.equal(estimateRemainingPages(1000, ('04' + '0'.repeat(62)) as ChunkId, 1000), 63);
    assert.equal(estimateRemainingPages(0, undefined, 1000), Infinity);
  });

  it('costs nothing for no ids and one HEAD for one id', async function () {
    const store = new MemoryStore();
    store.seed(ids('s', 10));
    assert.deepEqual(await measure(store, []), { missing: new Set(), requests: { head: 0, list: 0 }, strategy: 'head' });
    const one = ids('s', 1);
    assert.deepEqual(await measure(store, one), { missing: new Set(), requests: { head: 1, list: 0 }, strategy: 'head' });
  });

  it("picks 'head' for a big store and a small image: 1 LIST, then HEADs above its last key", async function () {
    const stored = ids('stored', 200_000);
    const store = new MemoryStore({ listPageSize: 1000 });
    store.seed(stored);
    const fresh = ids('new', 40);
    const wanted = [...fresh, ...stored.slice(0, 10)];
    const r = await measure(store, wanted);
    assert.equal(r.strategy, 'head');
    assert.deepEqual([...r.missing].sort(), [...fresh].sort());
    const lastOfFirstPage = [...stored].sort()[999]!;
    assert.deepEqual(r.requests, { list: 1, head: wanted.filter((id) => id > lastOfFirstPage).length });
    // HEADing all would cost 50, listing all 200.
    assert.ok(r.requests.head + r.requests.list <= wanted.length + 1);
  });

  it("picks 'list' for a small store and a big image: ⌈S/P⌉ LISTs, no HEAD", async function () {
    const stored = ids('stored', 3_000);
    const store = new MemoryStore({ listPageSize: 1000 });
    store.seed(stored);
    const fresh = ids('new', 4_000);
    const r = await measure(store, [...fresh, ...stored.slice(0, 1_000)]);
    assert.equal(r.strategy, 'list');
    assert.deepEqual(r.requests, { list: 3, head: 0 });
    assert.deepEqual([...r.missing].sort(), [...fresh].sort());
  });

  it('lists when a listing is a little cheaper than HEADs, re-deciding page by page', async function () {
    const stored = ids('stored', 100_000); // 100 pages
    const store = new MemoryStore({ listPageSize: 1000 });
    store.seed(stored);
    const wanted = ids('new', 150);
    const r = await measure(store, wanted);
    assert.equal(r.missing.size, 150);
    assert.ok(r.requests.list + r.requests.head <= 101, JSON.stringify(r.requests));
    const heads = await measure(store, wanted, { strategy: 'head' });
    assert.deepEqual(heads.requests, { head: 150, list: 0 });
    const lists = await measure(store, wanted, { strategy: 'list' });
    assert.deepEqual(lists.requests, { head: 0, list: 100 });
    assert.deepEqual(heads.missing, r.missing);
    assert.deepEqual(lists.missing, r.missing);
  });

  it('never spends much more than HEAD-per-id when names are not spread evenly', async function () {
    // 1000 keys spread over the lower half, then 100k packed just above the middle:
    // the first pages promise a short listing that never comes.
    const spread = Array.from({ length: 1000 }, (_, i) => idAt((i / 1000) * 0.5, i));
    const packed = Array.from({ length: 100_000 }, (_, i) => idAt(0.5 + i * 1e-12, i));
    const store = new MemoryStore({ listPageSize: 1000 });
    store.seed([...spread, ...packed]);
    const wanted = ids('new', 10);
    const r = await measure(store, wanted);
    assert.equal(r.missing.size, 10);
    assert.ok(r.requests.list + r.requests.head <= 2 * wanted.length + 1, JSON.stringify(r.requests));
  });

  it('weighs a LIST as listWeight HEADs', async function () {
    const stored = ids('stored', 2_500);
    const store = new MemoryStore({ listPageSize: 1000 });
    store.seed(stored);
    const wanted = ids('new', 20);
    assert.equal((await measure(store, wanted)).strategy, 'list'); // 3 LISTs < 20 HEADs
    const priced = await measure(store, wanted, { listWeight: 20 }); // one LIST already costs all the HEADs
    assert.deepEqual(priced.requests, { head: 20, list: 0 });
  });

  it('keeps at most `concurrency` HEADs in flight and stops on the signal', async function () {
    const store = new MemoryStore();
    let inFlight = 0;
    let most = 0;
    const has = store.has.bind(store);
    store.has = async (id, o) => {
      inFlight++;
      most = Math.max(most, inFlight);
      try {
        return await has(id, o);
      } finally {
        inFlight--;
      }
    };
    await findMissing(store, ids('x', 50), { strategy: 'head', concurrency: 5 });
    assert.ok(most <= 5 && most > 0, `at most 5 in flight, saw ${most}`);
    await assert.rejects(findMissing(store, ids('x', 50), { signal: AbortSignal.abort() }), { name: 'InterruptedError' });
  });
});
