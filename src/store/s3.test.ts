import assert from 'node:assert/strict';
import type { S3ClientConfig } from '@aws-sdk/client-s3';
import { InterruptedError, NotFoundError, StoreError, UsageError } from '../errors.js';
import { knownChunk } from '../testing/chunk-data.js';
import { type FaultyProxy, type ProxyAction, type ProxyRequest, startFaultyProxy } from '../testing/faulty-proxy.js';
import { requireS3Server, type S3TestServer } from '../testing/s3-server.js';
import { runStoreConformance } from './conformance.js';
import type { ChunkId } from './ids.js';
import { findMissing } from './missing.js';
import { openStore } from './open.js';
import { parseS3Url } from './s3.js';
import { countsSince, type Store } from './store.js';
import { uploadChunks } from './upload.js';

const PASS: ProxyAction = { kind: 'pass' };

describe('S3Store', function () {
  describe('URLs', function () {
    it('parses s3://BUCKET/PREFIX and normalises the prefix', function () {
      assert.deepEqual(parseS3Url('s3://bucket'), { bucket: 'bucket', prefix: '' });
      assert.deepEqual(parseS3Url('s3://bucket/'), { bucket: 'bucket', prefix: '' });
      assert.deepEqual(parseS3Url('s3://my.bucket-1/a/b/'), { bucket: 'my.bucket-1', prefix: 'a/b' });
      assert.deepEqual(parseS3Url('s3://b12//x//y'), { bucket: 'b12', prefix: 'x/y' });
      for (const bad of ['s3://', 's3:///x', 's3://b', 's3://bu cket/x', 's3://bucket/../x', 's3://-bucket']) {
        assert.throws(() => parseS3Url(bad), UsageError, bad);
      }
    });

    it('refuses unknown schemes and bad endpoints, naming what is supported', async function () {
      await assert.rejects(openStore('gs://bucket/x'), /unsupported store "gs:\/\/bucket\/x": use file:\/\/DIR, a directory path, s3:\/\/BUCKET\/PREFIX/);
      await assert.rejects(openStore('s3://bucket/x', { endpoint: 'not a url' }), UsageError);
      await assert.rejects(openStore('s3://bucket/x', { endpoint: 'ftp://host' }), UsageError);
      await assert.rejects(openStore('s3://bucket/x', { listPageSize: 5000 }), UsageError);
    });
  });

  describe('against s3rver', function () {
    let server: S3TestServer;
    let n = 0;
    before(async function () {
      server = await requireS3Server(this);
    });
    after(async function () {
      await server?.stop();
    });

    /** A store in its own prefix of the test bucket. */
    const open = (extra: { endpoint?: string; s3ClientConfig?: S3ClientConfig; listPageSize?: number; prefix?: string } = {}): Promise<Store> =>
      openStore(`s3://${server.bucket}/${extra.prefix ?? `t${++n}`}`, {
        endpoint: extra.endpoint ?? server.endpoint,
        s3ClientConfig: { ...server.clientConfig, ...extra.s3ClientConfig },
        ...(extra.listPageSize !== undefined ? { listPageSize: extra.listPageSize } : {}),
      });

    runStoreConformance('s3 (s3rver)', async () => ({ store: await open({ listPageSize: 7 }), cleanup: async () => {} }));

    it('names the store by bucket and prefix, and prices requests as remote', async function () {
      const store = await open({ prefix: 'a/b/' });
      assert.equal(store.url, `s3://${server.bucket}/a/b`);
      assert.deepEqual(store.costModel, { kind: 'remote', listPageSize: 1000 });
      await store.close();
    });

    it('keeps prefixes apart', async function () {
      const a = await open();
      const b = await open();
      const c = knownChunk(0, 'prefix', 1024);
      await a.put(c.id, c.data);
      assert.equal(await b.has(c.id), false);
      const listed: ChunkId[] = [];
      for await (const id of b.listChunks()) listed.push(id);
      assert.deepEqual(listed, []);
      await Promise.all([a.close(), b.close()]);
    });

    it('opens with no region configured (the SDK chain, else us-east-1)', async function () {
      const { region: _region, ...noRegion } = server.clientConfig;
      const store = await openStore(`s3://${server.bucket}/noregion`, { endpoint: server.endpoint, s3ClientConfig: noRegion });
      const c = knownChunk(0, 'region', 1024);
      assert.equal(await store.put(c.id, c.data), 'uploaded');
      await store.close();
    });

    it('reports a missing bucket as NotFoundError naming it', async function () {
      const store = await openStore('s3://no-such-bucket/x', { endpoint: server.endpoint, s3ClientConfig: server.clientConfig });
      const c = knownChunk(0, 'nobucket', 1024);
      await assert.rejects(store.put(c.id, c.data, { check: 'none' }), (e: Error) => {
        assert.ok(e instanceof NotFoundError, `${e.name}: ${e.message}`);
        assert.match(e.message, /no such bucket no-such-bucket \(HTTP 404\)/);
        return true;
      });
      await store.close();
    });

    it('reports refused credentials as a StoreError that names them but never shows them', async function () {
      const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY';
      const store = await open({ s3ClientConfig: { credentials: { accessKeyId: 'AKIDWRONG', secretAccessKey: secret } } });
      const c = knownChunk(0, 'creds', 1024);
      for (const op of [() => store.put(c.id, c.data, { check: 'none' }), () => store.has(c.id), () => store.get(c.id)]) {
        await assert.rejects(op(), (e: Error) => {
          assert.ok(e instanceof StoreError, `${e.name}: ${e.message}`);
          assert.match(e.message, /HTTP 403.*credentials/);
          assert.ok(e.message.includes(`s3://${server.bucket}/`), e.message);
          assert.ok(!e.message.includes(secret), 'no secret in the message');
          assert.ok(!e.message.includes('\n'), 'one line');
          return true;
        });
      }
      await store.close();
    });

    describe('retries', function () {
      let proxy: FaultyProxy | undefined;
      afterEach(async function () {
        await proxy?.close();
        proxy = undefined;
      });

      /** A store whose requests go through a proxy that fails them as `decide` says. */
      async function faulty(decide: (r: ProxyRequest) => ProxyAction, s3ClientConfig: S3ClientConfig = {}): Promise<Store> {
        proxy = await startFaultyProxy(server.endpoint, decide);
        return open({ endpoint: proxy.endpoint, s3ClientConfig });
      }

      it('retries a PUT through 500, 503 SlowDown and 429, then succeeds', async function () {
        const failures: ProxyAction[] = [
          { kind: 'status', status: 500 },
          { kind: 'status', status: 503, code: 'SlowDown' },
          { kind: 'status', status: 429, code: 'TooManyRequests' },
        ];
        let puts = 0;
        const store = await faulty((r) => (r.method === 'PUT' ? (failures[puts++] ?? PASS) : PASS));
        const c = knownChunk(0, 'retry', 64 * 1024);
        assert.equal(await store.put(c.id, c.data, { check: 'none' }), 'uploaded');
        assert.equal(proxy!.seen.filter((r) => r.method === 'PUT').length, 4);
        assert.equal(store.requestCounts().put, 4, 'every attempt is counted');
        assert.ok((await store.get(c.id))?.equals(c.data));
        await store.close();
      });

      it('gives up on a persistent 503 after maxAttempts with one clear line', async function () {
        const store = await faulty((r) => (r.method === 'PUT' ? { kind: 'status', status: 503, code: 'ServiceUnavailable' } : PASS), { maxAttempts: 3 });
        const c = knownChunk(0, 'persistent', 1024);
        await assert.rejects(store.put(c.id, c.data, { check: 'none' }), (e: Error) => {
          assert.ok(e instanceof StoreError, `${e.name}: ${e.message}`);
          assert.equal(
            e.message.split(': ').slice(0, 3).join(': '),
            `s3://${server.bucket}/t${n}/chunks/${c.id.slice(0, 2)}/${c.id}: PUT failed: ServiceUnavailable (HTTP 503) after 3 attempts`,
          );
          assert.ok(!e.message.includes('\n'));
          return true;
        });
        assert.equal(proxy!.seen.length, 3);
        await store.close();
      });

      it('retries a request that times out', async function () {
        let first = true;
        const store = await faulty(
          () => {
            if (!first) return PASS;
            first = false;
            return { kind: 'hang' };
          },
          { requestHandler: { connectionTimeout: 2000, requestTimeout: 500, throwOnRequestTimeout: true } },
        );
        const c = knownChunk(0, 'timeout', 1024);
        assert.equal(await store.put(c.id, c.data, { check: 'none' }), 'uploaded');
        assert.equal(proxy!.seen.length, 2);
        await store.close();
      });

      it('retries a GET whose body breaks off after the headers', async function () {
        let gets = 0;
        const store = await faulty((r) => (r.method === 'GET' && !r.url.includes('list-type') && gets++ === 0 ? { kind: 'cut' } : PASS));
        const c = knownChunk(0, 'cut', 256 * 1024);
        await store.put(c.id, c.data, { check: 'none' });
        const got = await store.get(c.id);
        assert.ok(got?.equals(c.data), 'whole bytes after the retry');
        assert.equal(proxy!.seen.filter((r) => r.method === 'GET').length, 2);
        await store.close();
      });

      it('stops waiting when the signal fires', async function () {
        const ctrl = new AbortController();
        const store = await faulty(() => {
          setImmediate(() => ctrl.abort());
          return { kind: 'hang' };
        });
        const c = knownChunk(0, 'abort', 1024);
        await assert.rejects(store.has(c.id, { signal: ctrl.signal }), InterruptedError);
        await store.close();
      });
    });

    describe('findMissing', function () {
      /** A store in a fresh prefix holding `count` chunks, listed `pageSize` keys a request. */
      async function filled(count: number, pageSize: number, seed: string): Promise<{ store: Store; stored: ChunkId[] }> {
        const store = await open({ listPageSize: pageSize });
        const cs = Array.from({ length: count }, (_, i) => knownChunk(i, seed, 1024));
        await uploadChunks(store, cs, { concurrency: 16, check: 'none' });
        return { store, stored: cs.map((c) => c.id).sort() };
      }

      it("picks 'head' when the store is big and the image small", async function () {
        const { store, stored } = await filled(400, 20, 'big-store'); // 20 pages
        const fresh = Array.from({ length: 4 }, (_, i) => knownChunk(i, 'small-image', 1024).id);
        const wanted = [...fresh, stored[5]!, stored[200]!, stored[399]!];
        const before = store.requestCounts();
        const r = await findMissing(store, wanted);
        const used = countsSince(before, store.requestCounts());
        assert.equal(r.strategy, 'head');
        assert.deepEqual([...r.missing].sort(), [...fresh].sort());
        // One LIST (20 keys) answers for the ids up to its last key; the rest are HEADed.
        const heads = wanted.filter((id) => id > stored[19]!).length;
        assert.deepEqual(r.requests, { list: 1, head: heads });
        assert.deepEqual(used, { get: 0, put: 0, head: heads, list: 1, delete: 0 });
        await store.close();
      });

      it("picks 'list' when the store is small and the image big", async function () {
        const { store, stored } = await filled(50, 20, 'small-store'); // 3 pages: 20, 20, 10
        const fresh = Array.from({ length: 75 }, (_, i) => knownChunk(i, 'big-image', 1024).id);
        const wanted = [...fresh, ...stored.slice(0, 25)];
        const before = store.requestCounts();
        const r = await findMissing(store, wanted);
        assert.equal(r.strategy, 'list');
        assert.deepEqual([...r.missing].sort(), [...fresh].sort());
        assert.deepEqual(r.requests, { list: 3, head: 0 });
        assert.deepEqual(countsSince(before, store.requestCounts()), { get: 0, put: 0, head: 0, list: 3, delete: 0 });
        // The other way would have cost one HEAD per id.
        const heads = await findMissing(store, wanted, { strategy: 'head' });
        assert.deepEqual(heads.requests, { list: 0, head: 100 });
        assert.deepEqual(heads.missing, r.missing);
        await store.close();
      });
    });
  });
});
