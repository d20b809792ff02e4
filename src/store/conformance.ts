/**
 * The contract every Store must meet, as a mocha suite (go-containerregistry's
 * `validate`: one suite, every implementation runs it). file.test.ts and
 * s3.test.ts call `runStoreConformance`; a new backend should too.
 * Test-support code: imported only by tests.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { InputError, InterruptedError, NotFoundError, UsageError } from '../errors.js';
import { type Digest, sha256Digest } from '../source/digest.js';
import { knownChunk, nameOf } from '../testing/chunk-data.js';
import type { ChunkId } from './ids.js';
import { findMissing } from './missing.js';
import { type RequestCounts, type Store, countsSince } from './store.js';
import { publish, uploadChunks } from './upload.js';

export interface StoreUnderTest {
  readonly store: Store;
  cleanup(): Promise<void>;
}

function chunk(data: Buffer): { id: ChunkId; data: Buffer } {
  return { id: nameOf(data), data };
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

const NONE = { get: 0, put: 0, head: 0, list: 0, delete: 0 } satisfies RequestCounts;

export function runStoreConformance(name: string, makeStore: () => Promise<StoreUnderTest>): void {
  describe(`Store conformance: ${name}`, function () {
    let sut: StoreUnderTest;
    let store: Store;
    beforeEach(async function () {
      sut = await makeStore();
      store = sut.store;
    });
    afterEach(async function () {
      await sut?.store.close();
      await sut?.cleanup();
    });

    describe('chunks', function () {
      it('round-trips put, has and get, byte for byte', async function () {
        const small = chunk(Buffer.from('hello, chunk'));
        const big = chunk(randomBytes(512 * 1024));
        const empty = chunk(Buffer.alloc(0));
        for (const c of [small, big, empty]) {
          assert.equal(await store.has(c.id), false);
          assert.equal(await store.put(c.id, c.data), 'uploaded');
          assert.equal(await store.has(c.id), true);
          const got = await store.get(c.id);
          assert.ok(got !== undefined, `get ${c.id}`);
          assert.ok(got.equals(c.data), `bytes of ${c.id}`);
        }
      });

      it('answers undefined / false for a missing chunk (an answer, not a failure)', async function () {
        const id = nameOf(Buffer.from('never stored'));
        assert.equal(await store.get(id), undefined);
        assert.equal(await store.has(id), false);
      });

      it("answers 'present' for a chunk it has, and keeps the bytes", async function () {
        const c = chunk(Buffer.from('twice'));
        assert.equal(await store.put(c.id, c.data), 'uploaded');
        assert.equal(await store.put(c.id, c.data), 'present');
        // check: 'none' writes without looking (the same bytes, so nothing changes)
        assert.equal(await store.put(c.id, c.data, { check: 'none' }), 'uploaded');
        assert.ok((await store.get(c.id))?.equals(c.data));
      });

      it('rejects ids that are not 64 lowercase hex digits', async function () {
        const bad = ['', 'abc', 'A'.repeat(64), `${'0'.repeat(63)}g`, `../../${'0'.repeat(58)}`, `${'0'.repeat(64)}/x`, '0'.repeat(65)];
        for (const id of bad) {
          await assert.rejects(store.get(id as ChunkId), InputError, `get ${id}`);
          await assert.rejects(store.has(id as ChunkId), InputError, `has ${id}`);
          await assert.rejects(store.put(id as ChunkId, Buffer.from('x')), InputError, `put ${id}`);
        }
        assert.deepEqual(await collect(store.listChunks()), []);
      });

      it('loses nothing when several writers put the same and different chunks at once', async function () {
        const shared = Array.from({ length: 6 }, (_, i) => knownChunk(i, 'shared', 64 * 1024));
        const own = Array.from({ length: 8 }, (_, w) => Array.from({ length: 4 }, (_, i) => knownChunk(i, `writer${w}`, 64 * 1024)));
        const outcomes = await Promise.all(
          own.map((mine, w) =>
            Promise.all([...shared, ...mine].map((c) => store.put(c.id, c.data, { check: w % 2 === 0 ? 'exists' : 'none' }))),
          ),
        );
        for (const o of outcomes.flat()) assert.ok(o === 'uploaded' || o === 'present');
        // Every writer's own chunks were new, so each was uploaded.
        for (const [w, o] of outcomes.entries()) assert.deepEqual(o.slice(shared.length), Array(4).fill('uploaded'), `writer ${w}`);
        const all = [...shared, ...own.flat()];
        for (const c of all) assert.ok((await store.get(c.id))?.equals(c.data), `bytes of ${c.id}`);
        assert.deepEqual(await collect(store.listChunks()), all.map((c) => c.id).sort());
      });

      it('lists exactly the chunks put, in order, and from a starting point', async function () {
        assert.deepEqual(await collect(store.listChunks()), []);
        const cs = Array.from({ length: 25 }, (_, i) => knownChunk(i, 'list', 4096));
        for (const c of cs) await store.put(c.id, c.data);
        const ids = cs.map((c) => c.id).sort();
        assert.deepEqual(await collect(store.listChunks()), ids);
        const pages = await collect(store.listChunkPages());
        assert.deepEqual(pages.flatMap((p) => p.ids), ids);
        assert.equal(pages.at(-1)?.more, false);
        assert.ok(pages.slice(0, -1).every((p) => p.more));
        assert.deepEqual(await collect(store.listChunks({ startAfter: ids[9]! })), ids.slice(10));
        assert.deepEqual(await collect(store.listChunks({ startAfter: ids.at(-1)! })), []);
      });

      it('stops at once when the signal has fired', async function () {
        const c = chunk(Buffer.from('aborted'));
        const signal = AbortSignal.abort();
        await assert.rejects(store.put(c.id, c.data, { signal }), InterruptedError);
        await assert.rejects(store.get(c.id, { signal }), InterruptedError);
        await assert.rejects(store.has(c.id, { signal }), InterruptedError);
        assert.equal(await store.has(c.id), false);
      });
    });

    describe('manifests and tags', function () {
      it('stores a manifest under the sha256 it computes', async function () {
        const bytes = Buffer.from(JSON.stringify({ manifest: 1, chunks: ['a', 'b'] }));
        const digest = await store.putManifest(bytes);
        assert.equal(digest, sha256Digest(bytes));
        assert.equal(await store.hasManifest(digest), true);
        assert.ok((await store.getManifest(digest))?.equals(bytes));
        assert.equal(await store.putManifest(bytes), digest, 'idempotent');
        const other = sha256Digest('not stored');
        assert.equal(await store.getManifest(other), undefined);
        assert.equal(await store.hasManifest(other), false);
        await assert.rejects(store.getManifest('sha256:nothex' as Digest), InputError);
      });

      it('sets, reads, overwrites and lists tags', async function () {
        const d1 = await store.putManifest(Buffer.from('manifest one'));
        const d2 = await store.putManifest(Buffer.from('manifest two'));
        assert.equal(await store.getTag('latest'), undefined);
        await store.setTag('latest', d1);
        await store.setTag('v1.0_rc-1', d1);
        assert.equal(await store.getTag('latest'), d1);
        await store.setTag('latest', d2);
        assert.equal(await store.getTag('latest'), d2);
        assert.deepEqual(await collect(store.listTags()), [
          { name: 'latest', digest: d2 },
          { name: 'v1.0_rc-1', digest: d1 },
        ]);
      });

      it('refuses a tag for a manifest it does not hold', async function () {
        await assert.rejects(store.setTag('dangling', sha256Digest('nothing')), NotFoundError);
        assert.equal(await store.getTag('dangling'), undefined);
      });

      it('rejects malformed tag names and digests', async function () {
        const d = await store.putManifest(Buffer.from('m'));
        for (const bad of ['', '.hidden', '-dash', 'a/b', 'a b', 'x'.repeat(129), '..', 'tag\n']) {
          await assert.rejects(store.setTag(bad, d), UsageError, `setTag ${JSON.stringify(bad)}`);
          await assert.rejects(store.getTag(bad), UsageError, `getTag ${JSON.stringify(bad)}`);
        }
        await assert.rejects(store.setTag('ok', 'sha256:short' as Digest), InputError);
        await store.setTag('x'.repeat(128), d);
        assert.equal(await store.getTag('x'.repeat(128)), d);
      });

      it('keeps one whole value when writers race on a tag', async function () {
        const digests = await Promise.all(Array.from({ length: 6 }, (_, i) => store.putManifest(Buffer.from(`racing ${i}`))));
        await Promise.all(digests.map((d) => store.setTag('race', d)));
        const got = await store.getTag('race');
        assert.ok(got !== undefined && digests.includes(got), `tag is one of the values written: ${got}`);
      });
    });

    describe('upload and publish', function () {
      it('uploads what is missing, skips the rest, then publishes manifest and tag', async function () {
        const cs = Array.from({ length: 10 }, (_, i) => knownChunk(i, 'upload', 32 * 1024));
        await store.put(cs[0]!.id, cs[0]!.data);
        await store.put(cs[1]!.id, cs[1]!.data);
        const { missing, requests } = await findMissing(store, cs.map((c) => c.id));
        assert.deepEqual([...missing].sort(), cs.slice(2).map((c) => c.id).sort());
        assert.ok(requests.head + requests.list > 0);
        const present = new Set(cs.map((c) => c.id).filter((id) => !missing.has(id)));
        const summary = await uploadChunks(store, [...cs, cs[5]!, cs[0]!], { present, concurrency: 3 });
        assert.deepEqual(summary, { uploaded: 8, skipped: 4, bytes: cs.slice(2).reduce((n, c) => n + c.data.length, 0) });
        for (const c of cs) assert.ok((await store.get(c.id))?.equals(c.data));

        const manifest = Buffer.from(JSON.stringify({ chunks: cs.map((c) => c.id) }));
        const digest = await publish(store, manifest, 'app');
        assert.equal(await store.getTag('app'), digest);
        assert.ok((await store.getManifest(digest))?.equals(manifest));
      });

      it('writes nothing when the tag is malformed', async function () {
        const manifest = Buffer.from('never published');
        await assert.rejects(publish(store, manifest, 'bad tag'), UsageError);
        assert.equal(await store.hasManifest(sha256Digest(manifest)), false);
      });
    });

    describe('request counting', function () {
      it('counts each request by kind', async function () {
        const c = chunk(Buffer.from('counted'));
        const step = async (fn: () => Promise<unknown>): Promise<RequestCounts> => {
          const before = store.requestCounts();
          await fn();
          return countsSince(before, store.requestCounts());
        };
        assert.deepEqual(await step(() => store.has(c.id)), { ...NONE, head: 1 });
        assert.deepEqual(await step(() => store.put(c.id, c.data)), { ...NONE, head: 1, put: 1 });
        assert.deepEqual(await step(() => store.put(c.id, c.data)), { ...NONE, head: 1 });
        assert.deepEqual(await step(() => store.put(c.id, c.data, { check: 'none' })), { ...NONE, put: 1 });
        assert.deepEqual(await step(() => store.get(c.id)), { ...NONE, get: 1 });
        assert.deepEqual(await step(() => store.get(nameOf(Buffer.from('absent')))), { ...NONE, get: 1 });
        const listing = await step(() => collect(store.listChunks()));
        assert.ok(listing.list >= 1 && listing.get + listing.put + listing.head + listing.delete === 0, JSON.stringify(listing));
      });

      it('reports the requests findMissing made, matching the store’s counters', async function () {
        const cs = Array.from({ length: 6 }, (_, i) => knownChunk(i, 'fm', 2048));
        for (const c of cs.slice(0, 3)) await store.put(c.id, c.data);
        for (const strategy of ['auto', 'head', 'list'] as const) {
          const before = store.requestCounts();
          const r = await findMissing(store, cs.map((c) => c.id), { strategy });
          const used = countsSince(before, store.requestCounts());
          assert.deepEqual([...r.missing].sort(), cs.slice(3).map((c) => c.id).sort(), strategy);
          assert.equal(r.requests.head, used.head, `${strategy}: HEADs`);
          if (store.costModel.kind === 'remote') assert.equal(r.requests.list, used.list, `${strategy}: LISTs`);
          assert.equal(used.get + used.put + used.delete, 0);
        }
      });
    });
  });
}
