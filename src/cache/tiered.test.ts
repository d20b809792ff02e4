/**
 * The tiered fetcher over a real file store holding the chunks of a real
 * (small) converted ext4 image, with in-memory cache tiers that can fail,
 * hold their puts or hold corrupt entries.
 */
import assert from 'node:assert/strict';
import { cp, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ChunkId } from '../chunks/id.js';
import { IntegrityError, InterruptedError } from '../errors.js';
import { chunkKey } from '../store/layout.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { MemoryTier, RecordingOrigin, until } from '../testing/cache-doubles.js';
import { publishSmallImage, type PublishedImage } from '../testing/published-image.js';
import { ReadPathMetrics } from './metrics.js';
import { TieredFetcher } from './tiered.js';

describe('cache/tiered: TieredFetcher', function () {
  let img: PublishedImage;
  let ids: ChunkId[];
  /** Ciphertext by id, read straight from the store. */
  const truth = new Map<ChunkId, Buffer>();
  let store: Store;

  before(async function () {
    img = await publishSmallImage('tiered');
    ids = img.opened.chunks.flatMap((c) => (c ? [c.id] : []));
    assert.ok(ids.length >= 12, `the fixture has ${ids.length} stored chunks`);
    const s = await img.openStore();
    try {
      for (const id of ids) truth.set(id, (await s.get(id))!);
    } finally {
      await s.close();
    }
  });
  after(async () => img?.cleanup());

  beforeEach(async () => {
    store = await img.openStore();
  });
  afterEach(async () => store?.close());

  const gets = (): number => store.requestCounts().get;

  it('returns the ciphertext, checked, and shares one fetch among 100 concurrent gets of a chunk', async () => {
    const f = new TieredFetcher({ tiers: [], origin: store });
    const id = ids[3]!;
    const all = await Promise.all(Array.from({ length: 100 }, () => f.get(id)));
    for (const b of all) assert.ok(b.equals(truth.get(id)!));
    assert.equal(gets(), 1, 'one origin GET for 100 readers');
    assert.equal(f.inFlight, 0);
    await f.get(id);
    assert.equal(gets(), 2, 'with no tiers, a later get fetches again');
  });

  it('asks tiers in order and fills the ones above a hit in the background; the origin is not asked again', async () => {
    const disk = new MemoryTier('disk');
    const shared = new MemoryTier('shared');
    const f = new TieredFetcher({ tiers: [disk, shared], origin: store });
    const id = ids[0]!;
    assert.ok((await f.get(id)).equals(truth.get(id)!));
    assert.deepEqual([disk.gets, shared.gets], [[id], [id]]);
    assert.equal(gets(), 1);
    await f.settled();
    assert.ok(disk.entries.get(id)?.equals(truth.get(id)!), 'disk filled');
    assert.ok(shared.entries.get(id)?.equals(truth.get(id)!), 'shared filled');

    assert.ok((await f.get(id)).equals(truth.get(id)!));
    assert.equal(disk.gets.length, 2, 'second read asks disk');
    assert.equal(shared.gets.length, 1, 'and stops there');
    assert.equal(gets(), 1, 'origin not asked');

    // A hit in the second tier fills only the first.
    const id2 = ids[1]!;
    shared.entries.set(id2, Buffer.from(truth.get(id2)!));
    assert.ok((await f.get(id2)).equals(truth.get(id2)!));
    await f.settled();
    assert.ok(disk.entries.get(id2)?.equals(truth.get(id2)!));
    assert.equal(gets(), 1, 'origin still not asked');
    const s = f.metrics.snapshot();
    assert.deepEqual([s.tiers['disk']!.hits, s.tiers['disk']!.misses], [1, 2]);
    assert.deepEqual([s.tiers['shared']!.hits, s.tiers['shared']!.misses], [1, 1]);
    assert.deepEqual([s.tiers.origin.hits, s.tiers.origin.misses], [1, 0]);
    assert.equal(s.tiers['disk']!.fills.done, 2);
    assert.equal(s.tiers['shared']!.fills.done, 1);
  });

  it('drops a corrupt tier entry, reads from below, returns the right bytes and refills the tier', async () => {
    const disk = new MemoryTier('disk');
    const f = new TieredFetcher({ tiers: [disk], origin: store });
    const id = ids[2]!;
    disk.entries.set(id, Buffer.from(truth.get(id)!));
    disk.corrupt(id);
    assert.ok((await f.get(id)).equals(truth.get(id)!));
    assert.equal(gets(), 1, 'fetched from the origin');
    await f.settled();
    assert.deepEqual(disk.drops, [id]);
    assert.ok(disk.entries.get(id)?.equals(truth.get(id)!), 'refilled with the right bytes');
    const d = f.metrics.snapshot().tiers['disk']!;
    assert.deepEqual([d.requests, d.hits, d.misses, d.corrupt], [1, 0, 1, 1]);
    // Now a hit.
    assert.ok((await f.get(id)).equals(truth.get(id)!));
    assert.equal(gets(), 1);
  });

  it('treats a failing tier as a miss: no error for the reader, counted; failed fills counted', async () => {
    const disk = new MemoryTier('disk');
    disk.failGets = true;
    disk.failPuts = true;
    const f = new TieredFetcher({ tiers: [disk], origin: store });
    const id = ids[4]!;
    assert.ok((await f.get(id)).equals(truth.get(id)!));
    await f.settled();
    const d = f.metrics.snapshot().tiers['disk']!;
    assert.deepEqual([d.requests, d.misses, d.errors], [1, 1, 1]);
    assert.deepEqual(d.fills, { done: 0, failed: 1, dropped: 0 });
  });

  it('never waits for a fill, and drops fills beyond the bound', async () => {
    const disk = new MemoryTier('disk');
    const release = disk.holdPuts();
    const f = new TieredFetcher({ tiers: [disk], origin: store, maxPendingFills: 2 });
    const five = ids.slice(0, 5);
    // Every get resolves while the tier's puts are held.
    const got = await Promise.all(five.map((id) => f.get(id)));
    got.forEach((b, i) => assert.ok(b.equals(truth.get(five[i]!)!)));
    assert.equal(f.pendingFills, 2);
    await until(() => disk.pendingPuts === 2, 'two held puts');
    assert.equal(f.metrics.snapshot().tiers['disk']!.fills.dropped, 3);
    release();
    await f.settled();
    assert.equal(disk.puts.length, 2);
    assert.equal(f.metrics.snapshot().tiers['disk']!.fills.done, 2);
  });

  it('names the chunk and the store when the origin lacks a chunk or holds other bytes', async function () {
    const copy = path.join(img.dir.path, `store-corrupt-${Date.now()}`);
    await cp(img.storeDir, copy, { recursive: true });
    const bad = await openStore(copy);
    try {
      const f = new TieredFetcher({ tiers: [new MemoryTier('disk')], origin: bad });
      const absent = 'ab'.repeat(32) as ChunkId;
      await assert.rejects(
        f.get(absent),
        (e: unknown) => e instanceof IntegrityError && e.message === `chunk ${absent} is missing from ${bad.url}`,
      );
      const id = ids[5]!;
      const flipped = Buffer.from(truth.get(id)!);
      flipped[0] = flipped[0]! ^ 1;
      await writeFile(path.join(copy, chunkKey(id)), flipped);
      await assert.rejects(
        f.get(id),
        (e: unknown) => e instanceof IntegrityError && e.message === `chunk ${id} in ${bad.url}: content does not match its name`,
      );
      const o = f.metrics.snapshot().tiers.origin;
      assert.deepEqual([o.requests, o.hits, o.misses, o.corrupt], [2, 0, 2, 1]);
      await f.settled();
      assert.equal(f.metrics.snapshot().tiers['disk']!.fills.done, 0, 'nothing bad is cached');
    } finally {
      await bad.close();
    }
  });

  it('lets one waiter abort without breaking another; aborts the fetch only when all have left', async () => {
    const origin = new RecordingOrigin(store);
    const f = new TieredFetcher({ tiers: [], origin });
    const id = ids[6]!;
    origin.pause();
    const a1 = new AbortController();
    const a2 = new AbortController();
    const g1 = f.get(id, { signal: a1.signal });
    const g2 = f.get(id, { signal: a2.signal });
    await until(() => origin.arrived.length === 1, 'the shared get at the origin');
    a1.abort();
    await assert.rejects(g1, InterruptedError);
    origin.resume();
    assert.ok((await g2).equals(truth.get(id)!));
    assert.deepEqual(origin.order, [id]);
    assert.equal(origin.aborted, 0);

    // Both leave: the origin get is aborted, and the next get starts afresh.
    const id2 = ids[7]!;
    origin.pause();
    const b1 = new AbortController();
    const b2 = new AbortController();
    const h1 = f.get(id2, { signal: b1.signal });
    const h2 = f.get(id2, { signal: b2.signal });
    await until(() => origin.arrived.length === 2, 'the shared get at the origin');
    b1.abort();
    await assert.rejects(h1, InterruptedError);
    assert.equal(origin.aborted, 0, 'still one waiter');
    b2.abort();
    await assert.rejects(h2, InterruptedError);
    await until(() => origin.aborted === 1, 'the abandoned get aborted');
    origin.resume();
    assert.ok((await f.get(id2)).equals(truth.get(id2)!));
    assert.deepEqual(origin.arrived, [id, id2, id2]);
    const o = f.metrics.snapshot().tiers.origin;
    assert.deepEqual([o.requests, o.hits, o.aborted], [3, 2, 1], 'the abandoned origin request is counted as aborted');
    // An already-aborted signal fails at once and starts nothing.
    await assert.rejects(f.get(ids[8]!, { signal: AbortSignal.abort() }), InterruptedError);
    assert.equal(origin.arrived.length, 3);
  });

  it('serves demand gets before queued prefetches (origin concurrency 1)', async () => {
    const origin = new RecordingOrigin(store);
    const f = new TieredFetcher({ tiers: [], origin, originConcurrency: 1 });
    const pre = ids.slice(0, 6);
    const demand = ids.slice(8, 10);
    origin.pause();
    const p = pre.map((id) => f.get(id, { priority: 'prefetch' }));
    await until(() => origin.arrived.length === 1, 'the first prefetch at the origin');
    const d = demand.map((id) => f.get(id));
    origin.resume();
    await Promise.all([...p, ...d]);
    assert.deepEqual(origin.order, [pre[0], ...demand, ...pre.slice(1)]);
  });

  it('promotes a queued prefetch when a demand get of the same chunk arrives (one origin get)', async () => {
    const origin = new RecordingOrigin(store);
    const f = new TieredFetcher({ tiers: [], origin, originConcurrency: 1 });
    const pre = ids.slice(0, 6);
    origin.pause();
    const p = pre.map((id) => f.get(id, { priority: 'prefetch' }));
    await until(() => origin.arrived.length === 1, 'the first prefetch at the origin');
    const d = f.get(pre[4]!);
    origin.resume();
    assert.ok((await d).equals(truth.get(pre[4]!)!));
    await Promise.all(p);
    assert.deepEqual(origin.order, [pre[0], pre[4], pre[1], pre[2], pre[3], pre[5]]);
  });

  it('keeps a quarter of the origin slots for demand gets', async () => {
    const origin = new RecordingOrigin(store);
    const f = new TieredFetcher({ tiers: [], origin, originConcurrency: 4 });
    origin.pause();
    const p = ids.slice(0, 8).map((id) => f.get(id, { priority: 'prefetch' }));
    await until(() => origin.arrived.length === 3, 'three prefetches at the origin');
    for (let i = 0; i < 20; i++) await new Promise<void>((r) => setImmediate(r));
    assert.equal(origin.arrived.length, 3, 'prefetches hold at most 3 of 4 slots');
    const d = f.get(ids[10]!);
    await until(() => origin.arrived.length === 4, 'the demand get goes straight to the origin');
    assert.equal(origin.arrived[3], ids[10]);
    origin.resume();
    await Promise.all([...p, d]);
  });

  it('counts add up per tier: hits + misses = requests, bytes = bytes served, origin hits = store GETs', async () => {
    const metrics = new ReadPathMetrics();
    const disk = new MemoryTier('disk');
    const shared = new MemoryTier('shared');
    const f = new TieredFetcher({ tiers: [disk, shared], origin: store, metrics });
    // A mix: cold reads, warm reads, a corrupt entry, a tier outage.
    let served = 0;
    const expectBytes = { disk: 0, shared: 0, origin: 0 };
    for (const id of ids.slice(0, 6)) served += (await f.get(id)).length;
    await f.settled();
    for (const id of ids.slice(0, 6)) served += (await f.get(id)).length;
    shared.corrupt(ids[0]!);
    disk.entries.delete(ids[0]!);
    served += (await f.get(ids[0]!)).length;
    await f.settled();
    disk.failGets = true;
    for (const id of ids.slice(1, 3)) served += (await f.get(id)).length;
    await f.settled();
    const s = metrics.snapshot();
    for (const [name, t] of Object.entries(s.tiers)) {
      assert.equal(t!.hits + t!.misses, t!.requests, `${name}: hits + misses = requests`);
      assert.ok(t!.errors + t!.corrupt + t!.aborted <= t!.misses, `${name}: kinds of miss`);
    }
    for (const id of ids.slice(0, 6)) expectBytes.origin += truth.get(id)!.length;
    expectBytes.origin += truth.get(ids[0]!)!.length;
    for (const id of ids.slice(0, 6)) expectBytes.disk += truth.get(id)!.length;
    for (const id of ids.slice(1, 3)) expectBytes.shared += truth.get(id)!.length;
    assert.equal(s.tiers.origin.hits, gets());
    assert.equal(s.tiers.origin.bytes, expectBytes.origin);
    assert.equal(s.tiers['disk']!.bytes, expectBytes.disk);
    assert.equal(s.tiers['shared']!.bytes, expectBytes.shared);
    assert.equal(s.tiers.origin.bytes + s.tiers['disk']!.bytes + s.tiers['shared']!.bytes, served, 'every byte served came from one tier');
    assert.deepEqual([s.tiers['disk']!.requests, s.tiers['disk']!.errors], [15, 2]);
    assert.deepEqual([s.tiers['shared']!.requests, s.tiers['shared']!.corrupt], [9, 1]);
    assert.equal(s.tiers.origin.latencyUs.count, s.tiers.origin.hits);
  });

  it('refuses two tiers with one name', () => {
    assert.throws(() => new TieredFetcher({ tiers: [new MemoryTier('disk'), new MemoryTier('disk')], origin: store }), RangeError);
  });
});
