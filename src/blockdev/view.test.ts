/**
 * ChunkView over a real file store: a small converted ext4 image (build's
 * bytes are the truth) and a random image sealed chunk by chunk with holes
 * inside it and a short last chunk. Cache tiers are in-memory doubles.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ReadPathMetrics } from '../cache/metrics.js';
import { TieredFetcher } from '../cache/tiered.js';
import type { ChunkRef } from '../chunks/seal.js';
import { IntegrityError, InputError, InterruptedError, NotFoundError } from '../errors.js';
import { generateKeys } from '../keys/keys.js';
import type { Digest } from '../source/digest.js';
import { chunkKey } from '../store/layout.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { MemoryTier, RecordingOrigin, until } from '../testing/cache-doubles.js';
import { publishSmallImage, sealRandomImage, type PublishedImage, type SealedRandomImage } from '../testing/published-image.js';
import { ChunkView, MAX_VIEW_READ, type ChunkViewOptions } from './view.js';
import { seededRandom as rng } from '../cache/trace-gen.js';


const CHUNK = 64 * 1024;
/** Interior holes, a hole at the start, and a last chunk of 3 blocks. */
const RANDOM_HOLES = new Set([0, 4, 5, 9, 13]);
const RANDOM_SIZE = 16 * CHUNK + 3 * 4096;

/** The shape the NBD server's BlockDevice has (src/blockdev/device.ts); checked at compile time. */
type ReadOnlyDevice = {
  readonly size: number;
  readonly readOnly: true;
  read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer>;
  close(): Promise<void>;
};

describe('blockdev/view: ChunkView', function () {
  let img: PublishedImage;
  let rnd: SealedRandomImage;
  let rndStoreDir: string;
  let store: Store;
  let rndStore: Store;

  before(async function () {
    img = await publishSmallImage('view');
    rndStoreDir = path.join(img.dir.path, 'random-store');
    const s = await openStore(rndStoreDir);
    try {
      rnd = await sealRandomImage(s, generateKeys(), { size: RANDOM_SIZE, chunkSize: CHUNK, holes: RANDOM_HOLES, seed: 'view' });
    } finally {
      await s.close();
    }
  });
  after(async () => img?.cleanup());

  beforeEach(async () => {
    store = await img.openStore();
    rndStore = await openStore(rndStoreDir);
  });
  afterEach(async () => {
    await store?.close();
    await rndStore?.close();
  });

  function viewOf(
    which: 'image' | 'random',
    opts: { tiers?: MemoryTier[]; origin?: RecordingOrigin; originConcurrency?: number } & Partial<Omit<ChunkViewOptions, 'fetcher'>> = {},
  ): ChunkView {
    const { tiers, origin, originConcurrency, ...rest } = opts;
    const src = which === 'image' ? { header: img.opened.header, chunks: img.opened.chunks, salt: img.salt, manifestDigest: img.digest } : { ...rnd.opened, salt: rnd.salt, manifestDigest: rnd.digest };
    const fetcher = new TieredFetcher({
      tiers: tiers ?? [],
      origin: origin ?? (which === 'image' ? store : rndStore),
      ...(originConcurrency !== undefined ? { originConcurrency } : {}),
    });
    return new ChunkView({ ...src, fetcher, ...rest });
  }

  const plainOf = (which: 'image' | 'random'): Buffer => (which === 'image' ? img.plain : rnd.plain);

  it('is a read-only block device and a ByteSource of the image size', async () => {
    const view = viewOf('image');
    const dev: ReadOnlyDevice = view;
    assert.equal(dev.size, img.plain.length);
    assert.equal(dev.readOnly, true);
    assert.equal(view.totalChunks, img.opened.chunks.length);
    await view.close();
  });

  for (const which of ['image', 'random'] as const) {
    it(`${which}: random ranges, chunk boundaries, holes and the whole image read back exactly`, async () => {
      const plain = plainOf(which);
      const disk = new MemoryTier('disk');
      const view = viewOf(which, { tiers: [disk], memoryChunks: 3 });
      const r = rng(which === 'image' ? 11 : 12);
      const check = async (offset: number, length: number): Promise<void> => {
        const got = await view.read(offset, length);
        assert.equal(got.length, length);
        assert.ok(got.equals(plain.subarray(offset, offset + length)), `${which}: read(${offset}, ${length})`);
      };
      for (let i = 0; i < 150; i++) {
        const length = Math.floor(r() * r() * 3 * CHUNK) + 1;
        const offset = Math.floor(r() * (plain.length - length + 1));
        await check(offset, length);
      }
      // Concurrent reads, as a block device client sends them.
      await Promise.all(
        Array.from({ length: 40 }, () => {
          const length = Math.floor(r() * 2 * CHUNK) + 1;
          return check(Math.floor(r() * (plain.length - length + 1)), length);
        }),
      );
      const chunks = Math.ceil(plain.length / CHUNK);
      for (let k = 1; k < chunks; k++) await check(k * CHUNK - 100, 200);
      await check(0, plain.length);
      await check(plain.length - 1, 1);
      assert.equal((await view.read(17, 0)).length, 0);
      await view.close();
    });
  }

  it('reads holes as zeros without a fetch', async () => {
    const view = viewOf('random');
    const before = rndStore.requestCounts().get;
    const got = await view.read(4 * CHUNK + 10, 2 * CHUNK - 20); // chunks 4 and 5: both holes
    assert.ok(got.equals(Buffer.alloc(2 * CHUNK - 20)));
    assert.equal(rndStore.requestCounts().get, before);
    assert.equal(view.fetchedChunks, 0);
    // A range from data into a hole fetches only the data chunk.
    const mixed = await view.read(3 * CHUNK + 5, CHUNK);
    assert.ok(mixed.equals(rnd.plain.subarray(3 * CHUNK + 5, 4 * CHUNK + 5)));
    assert.equal(rndStore.requestCounts().get, before + 1);
    await view.close();
  });

  it('maps holes and data from the chunk table without a fetch (extents)', async () => {
    const view = viewOf('random');
    const before = rndStore.requestCounts().get;
    assert.deepEqual(await view.extents(0, RANDOM_SIZE), [
      { length: CHUNK, zero: true },
      { length: 3 * CHUNK, zero: false },
      { length: 2 * CHUNK, zero: true },
      { length: 3 * CHUNK, zero: false },
      { length: CHUNK, zero: true },
      { length: 3 * CHUNK, zero: false },
      { length: CHUNK, zero: true },
      { length: 2 * CHUNK + 3 * 4096, zero: false },
    ]);
    assert.deepEqual(await view.extents(4 * CHUNK + 10, 20), [{ length: 20, zero: true }]);
    assert.deepEqual(await view.extents(3 * CHUNK + 5, CHUNK), [
      { length: CHUNK - 5, zero: false },
      { length: 5, zero: true },
    ]);
    assert.deepEqual(await view.extents(7, 0), []);
    await assert.rejects(view.extents(RANDOM_SIZE - 1, 2), RangeError);
    assert.equal(rndStore.requestCounts().get, before);
    assert.equal(view.fetchedChunks, 0);
    await view.close();
  });

  it('refuses ranges outside the image and reads over 32 MiB (RangeError)', async () => {
    const view = viewOf('image');
    await assert.rejects(view.read(img.plain.length - 10, 11), RangeError);
    await assert.rejects(view.read(-1, 1), RangeError);
    const big = new ChunkView({
      header: { ...img.opened.header, filesystem: { ...img.opened.header.filesystem, size: 40 * 1024 * 1024 } },
      chunks: Array.from({ length: (40 * 1024 * 1024) / img.chunkSize }, () => null),
      salt: img.salt,
      fetcher: new TieredFetcher({ tiers: [], origin: store }),
    });
    assert.equal((await big.read(0, MAX_VIEW_READ)).length, MAX_VIEW_READ);
    await assert.rejects(big.read(0, MAX_VIEW_READ + 1), RangeError);
    await big.close();
    await view.close();
  });

  it('decrypts once and fetches once for 100 concurrent reads of one chunk', async () => {
    const metrics = new ReadPathMetrics();
    const view = new ChunkView({ header: img.opened.header, chunks: img.opened.chunks, salt: img.salt, fetcher: new TieredFetcher({ tiers: [], origin: store, metrics }) });
    const k = 2;
    const base = k * img.chunkSize;
    const reads = Array.from({ length: 100 }, (_, i) => view.read(base + i * 100, 1000));
    const got = await Promise.all(reads);
    got.forEach((b, i) => assert.ok(b.equals(img.plain.subarray(base + i * 100, base + i * 100 + 1000))));
    assert.equal(store.requestCounts().get, 1, 'one GET');
    assert.equal(metrics.chunks.decrypted, 1, 'one decryption');
    assert.equal(view.fetchedChunks, 1);
    await view.close();
  });

  it('keeps decrypted chunks in a memory LRU: hits fetch nothing, the least recently used goes first', async () => {
    const view = viewOf('image', { memoryChunks: 2 });
    const at = (k: number): number => k * img.chunkSize + 7;
    await view.read(at(0), 10);
    await view.read(at(1), 10);
    await view.read(at(0), 10); // hit; 1 is now least recent
    assert.equal(view.fetchedChunks, 2);
    await view.read(at(2), 10); // evicts 1
    assert.equal(view.memoryChunks, 2);
    await view.read(at(0), 10); // hit
    assert.equal(view.fetchedChunks, 3);
    await view.read(at(1), 10); // fetched again
    assert.equal(view.fetchedChunks, 4);
    const mem = viewMetrics(view).tiers['memory']!;
    assert.deepEqual([mem.requests, mem.hits, mem.misses], [6, 2, 4]);
    await view.close();
  });

  it('surfaces wrong key material as IntegrityError naming the chunk (wrong salt; keys swapped between chunks)', async () => {
    const wrongSalt = viewOf('image', { salt: generateKeys().salt });
    await assert.rejects(wrongSalt.read(img.chunkSize + 1, 10), (e: unknown) => {
      assert.ok(e instanceof IntegrityError);
      assert.match(e.message, new RegExp(`^${img.digest}: chunk 1 at offset ${img.chunkSize}: chunk [0-9a-f]{64}: plaintext does not match its key$`));
      return true;
    });
    await wrongSalt.close();
    const refs = [...img.opened.chunks] as (ChunkRef | null)[];
    const a = refs[0]!;
    const b = refs[1]!;
    refs[0] = { id: a.id, key: b.key };
    refs[1] = { id: b.id, key: a.key };
    const swapped = viewOf('image', { chunks: refs });
    await assert.rejects(swapped.read(0, 10), (e: unknown) => e instanceof IntegrityError && /chunk 0 at offset 0: .*plaintext does not match its key/.test(e.message));
    // The other chunks are fine.
    assert.ok((await swapped.read(2 * img.chunkSize, 10)).equals(img.plain.subarray(2 * img.chunkSize, 2 * img.chunkSize + 10)));
    await swapped.close();
  });

  it('names the chunk, its index and the store when the origin lacks it', async () => {
    const ref = rnd.opened.chunks[7]!;
    const { cp } = await import('node:fs/promises');
    const copy = path.join(img.dir.path, `random-missing-${Date.now()}`);
    await cp(rndStoreDir, copy, { recursive: true });
    const { rm } = await import('node:fs/promises');
    await rm(path.join(copy, chunkKey(ref.id)));
    const s = await openStore(copy);
    try {
      const view = new ChunkView({ ...rnd.opened, salt: rnd.salt, manifestDigest: rnd.digest, fetcher: new TieredFetcher({ tiers: [], origin: s }) });
      await assert.rejects(view.read(7 * CHUNK + 100, 5 * CHUNK), (e: unknown) => {
        assert.ok(e instanceof IntegrityError);
        assert.equal(e.message, `${rnd.digest}: chunk 7 at offset ${7 * CHUNK}: chunk ${ref.id} is missing from ${s.url}`);
        return true;
      });
      // Other chunks still read.
      assert.ok((await view.read(6 * CHUNK, 10)).equals(rnd.plain.subarray(6 * CHUNK, 6 * CHUNK + 10)));
      assert.equal(viewMetrics(view).reads.errors, 1);
      await view.close();
    } finally {
      await s.close();
    }
  });

  it('lets one reader abort while another read of the same chunk completes', async () => {
    const origin = new RecordingOrigin(store);
    const view = viewOf('image', { origin });
    origin.pause();
    const a = new AbortController();
    const r1 = view.read(3 * img.chunkSize, 100, a.signal);
    const r2 = view.read(3 * img.chunkSize + 50, 100);
    await until(() => origin.arrived.length === 1, 'the get at the origin');
    a.abort();
    await assert.rejects(r1, InterruptedError);
    origin.resume();
    assert.ok((await r2).equals(img.plain.subarray(3 * img.chunkSize + 50, 3 * img.chunkSize + 150)));
    assert.equal(origin.order.length, 1);
    await assert.rejects(view.read(0, 1, AbortSignal.abort()), InterruptedError);
    await view.close();
  });

  it('serves demand reads issued during a prefetch before the rest of the prefetch (origin concurrency 1)', async () => {
    const origin = new RecordingOrigin(store);
    const view = viewOf('image', { origin, originConcurrency: 1 });
    const stored = img.opened.chunks.flatMap((c, i) => (c ? [i] : []));
    const [x, y] = [stored[stored.length - 3]!, stored[stored.length - 1]!];
    view.recordTrace();
    origin.pause();
    const pf = view.prefetch(stored, { concurrency: 3 });
    await until(() => origin.arrived.length === 1, 'the first prefetch at the origin');
    const rx = view.read(x * img.chunkSize, 10);
    const ry = view.read(y * img.chunkSize + 5, 10);
    origin.resume();
    assert.ok((await rx).equals(img.plain.subarray(x * img.chunkSize, x * img.chunkSize + 10)));
    assert.ok((await ry).equals(img.plain.subarray(y * img.chunkSize + 5, y * img.chunkSize + 15)));
    const result = await pf.done;
    const idOf = (i: number): string => img.opened.chunks[i]!.id;
    assert.deepEqual(origin.order, [idOf(stored[0]!), idOf(x), idOf(y), ...stored.slice(1).filter((i) => i !== x && i !== y).map(idOf)]);
    assert.equal(result.stopped, false);
    assert.equal(result.total, stored.length);
    assert.equal(result.warmed + result.skipped, stored.length);
    assert.equal(result.skipped, 2, 'x and y were read by demand');
    assert.deepEqual(view.trace(), [x, y], 'the trace holds demand reads only');
    // Everything is in memory now: reading the whole image fetches nothing.
    const before = origin.order.length;
    assert.ok((await view.read(0, img.plain.length)).equals(img.plain));
    assert.equal(origin.order.length, before);
    await view.close();
  });

  it('prefetches into memory only where there is room, never evicting what readers use; always into the tiers', async () => {
    const disk = new MemoryTier('disk');
    const view = viewOf('image', { tiers: [disk], memoryChunks: 2 });
    const at = (k: number): number => k * img.chunkSize;
    await view.read(at(0), 10);
    await view.read(at(1), 10);
    const gets = store.requestCounts().get;
    const result = await view.prefetch([2, 3, 4]).done;
    assert.deepEqual([result.warmed, result.skipped, result.failed, result.stopped], [3, 0, 0, false]);
    assert.equal(store.requestCounts().get, gets + 3);
    await view.read(at(0), 10);
    await view.read(at(1), 10);
    assert.equal(store.requestCounts().get, gets + 3, 'chunks 0 and 1 stayed in memory');
    // Warmed into the disk tier: reading chunk 3 asks the disk, not the store.
    await until(() => disk.entries.size === 5, 'disk filled');
    assert.ok((await view.read(at(3), 100)).equals(img.plain.subarray(at(3), at(3) + 100)));
    assert.equal(store.requestCounts().get, gets + 3);

    // With room, prefetched chunks land in memory.
    const roomy = viewOf('image', { memoryChunks: 8 });
    const r2 = await roomy.prefetch([5, 6]).done;
    assert.equal(r2.warmed, 2);
    assert.equal(roomy.memoryChunks, 2);
    const fetched = roomy.fetchedChunks;
    await roomy.read(at(5), 10);
    await roomy.read(at(6), 10);
    assert.equal(roomy.fetchedChunks, fetched, 'memory hits');
    assert.deepEqual(roomy.trace(), []);
    await roomy.close();
    await view.close();
  });

  it('stops a prefetch on stop(), on its signal, and on close()', async () => {
    const origin = new RecordingOrigin(store);
    const view = viewOf('image', { origin, originConcurrency: 1 });
    const stored = img.opened.chunks.flatMap((c, i) => (c ? [i] : []));
    origin.pause();
    const pf = view.prefetch(stored, { concurrency: 2 });
    await until(() => origin.arrived.length === 1, 'a prefetch at the origin');
    pf.stop();
    const r = await pf.done;
    assert.equal(r.stopped, true);
    assert.ok(r.done < r.total);
    const ac = new AbortController();
    const pf2 = view.prefetch(stored, { signal: ac.signal });
    ac.abort();
    assert.equal((await pf2.done).stopped, true);
    const pf3 = view.prefetch(stored);
    await view.close();
    assert.equal((await pf3.done).stopped, true);
    origin.resume();
    await assert.rejects(view.read(0, 1), /closed/);
  });

  it('records the order of first demand reads; writes and reads it back; refuses a trace of another manifest', async () => {
    const seen: number[] = [];
    const view = viewOf('random', { onFirstRead: (i) => seen.push(i) });
    view.recordTrace();
    await view.read(8 * CHUNK + 3, 10); // 8
    await view.read(2 * CHUNK, 10); // 2
    await view.read(8 * CHUNK, CHUNK); // 8 again
    await view.read(3 * CHUNK - 1, 3 * CHUNK); // 2, 3, (4 and 5 are holes)
    await view.read(0, 10); // 0: a hole
    await view.read(6 * CHUNK + 1, 2 * CHUNK); // 6, 7, 8
    assert.deepEqual(view.trace(), [8, 2, 3, 6, 7]);
    assert.deepEqual(seen, [8, 2, 3, 6, 7]);
    const file = path.join(img.dir.path, 'random.trace');
    await view.writeTrace(file);
    assert.deepEqual(await view.readTrace(file), [8, 2, 3, 6, 7]);
    // Another view of the same manifest uses it, and can prefetch from it.
    const again = viewOf('random');
    const indexes = await again.readTrace(file);
    assert.deepEqual(indexes, [8, 2, 3, 6, 7]);
    assert.equal((await again.prefetch(indexes).done).warmed, 5);
    await again.close();
    // recordTrace() restarts from empty.
    view.recordTrace();
    await view.read(2 * CHUNK, 10);
    await view.read(1 * CHUNK, 10);
    assert.deepEqual(view.trace(), [2, 1]);
    assert.deepEqual(seen, [8, 2, 3, 6, 7, 1], 'onFirstRead fires once per chunk ever');
    await view.close();

    // Another image: refused, naming both manifests.
    const other = viewOf('image');
    await assert.rejects(other.readTrace(file), (e: unknown) => {
      assert.ok(e instanceof InputError);
      assert.equal(e.message, `${file}: trace was recorded for manifest ${rnd.digest}, not ${img.digest}`);
      return true;
    });
    // The same chunks under another manifest digest: refused too.
    const relabelled = viewOf('random', { manifestDigest: `sha256:${'0'.repeat(64)}` as Digest });
    await assert.rejects(relabelled.readTrace(file), InputError);
    // A view that does not know its digest checks the chunk table.
    const anonymous = new ChunkView({ ...img.opened, salt: img.salt, fetcher: new TieredFetcher({ tiers: [], origin: store }) });
    await assert.rejects(anonymous.readTrace(file), (e: unknown) => e instanceof InputError && /another image/.test(e.message));
    const garbage = path.join(img.dir.path, 'garbage.trace');
    await writeFile(garbage, '{"format":"chunkyard-trace","version":1');
    await assert.rejects(again.readTrace(garbage), InputError);
    await assert.rejects(again.readTrace(path.join(img.dir.path, 'absent.trace')), NotFoundError);
    for (const v of [other, relabelled, anonymous]) await v.close();
  });

  it('counts reads, bytes and chunks; memory hits + misses = requests', async () => {
    const view = viewOf('random', { memoryChunks: 4 });
    const r = rng(5);
    let bytes = 0;
    for (let i = 0; i < 60; i++) {
      const length = Math.floor(r() * 2 * CHUNK) + 1;
      await view.read(Math.floor(r() * (RANDOM_SIZE - length + 1)), length);
      bytes += length;
    }
    const s = viewMetrics(view);
    assert.equal(s.reads.count, 60);
    assert.equal(s.reads.bytes, bytes);
    assert.equal(s.reads.latencyUs.count, 60);
    const mem = s.tiers['memory']!;
    assert.equal(mem.hits + mem.misses, mem.requests);
    assert.equal(mem.misses, s.chunks.fetched, 'every memory miss is one fetch (no concurrency here)');
    assert.equal(s.tiers.origin.hits, s.chunks.fetched);
    assert.equal(s.tiers.origin.hits, rndStore.requestCounts().get);
    assert.equal(s.chunks.decrypted, s.chunks.fetched);
    assert.equal(s.chunks.total, 17);
    assert.equal(s.chunks.holes, RANDOM_HOLES.size);
    assert.ok(s.chunks.touched <= 17 - RANDOM_HOLES.size);
    await view.close();
  });
});

/** The snapshot of the metrics a view counts into (its fetcher's). */
function viewMetrics(view: ChunkView): ReturnType<ReadPathMetrics['snapshot']> {
  return view.metrics.snapshot();
}
