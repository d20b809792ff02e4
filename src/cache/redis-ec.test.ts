import assert from 'node:assert/strict';
import { createCipheriv, createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import type { ChunkId } from '../chunks/id.js';
import { InterruptedError, UsageError } from '../errors.js';
import { nameOf } from '../testing/chunk-data.js';
import { requireRedisServers, startRedisServers, type RedisTestServers } from '../testing/redis-servers.js';
import { shardSize } from './erasure.js';
import { RedisEcTier, type RedisEcOptions } from './redis-ec.js';

const KiB = 1024;

interface Chunk {
  readonly id: ChunkId;
  readonly data: Buffer;
}

/** `length` bytes that differ everywhere, named by their sha256 (the tier never computes names). */
function chunk(length: number, seed: string): Chunk {
  const key = createHash('sha256').update(seed).digest();
  const c = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const data = Buffer.concat([c.update(Buffer.alloc(length)), c.final()]);
  return { id: nameOf(data), data };
}

async function until(what: string, test: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await test())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('RedisEcTier: erasure-coded shards on real redis-server nodes', function () {
  let servers: RedisTestServers;
  const tiers: RedisEcTier[] = [];
  const noise: string[] = [];
  const onRejection = (reason: unknown): void => {
    noise.push(`unhandledRejection: ${reason instanceof Error ? reason.stack : String(reason)}`);
  };
  const savedConsole = { error: console.error, warn: console.warn, log: console.log };

  before(async function () {
    servers = await requireRedisServers(this, { count: 6 });
    // ioredis reports unhandled client errors with console.error ("[ioredis] Unhandled error event"); any of that is a failure here.
    process.on('unhandledRejection', onRejection);
    for (const level of ['error', 'warn', 'log'] as const) {
      console[level] = (...args: unknown[]) => {
        noise.push(`console.${level}: ${args.map(String).join(' ')}`);
        savedConsole[level].apply(console, args);
      };
    }
  });

  after(async () => {
    process.off('unhandledRejection', onRejection);
    Object.assign(console, savedConsole);
    await servers?.stopAll();
  });

  beforeEach(async () => {
    await servers.reviveAll();
    for (let i = 0; i < servers.count; i++) await raw(i, (r) => r.flushall());
  });

  afterEach(async () => {
    for (const t of tiers.splice(0)) await t.close();
  });

  async function open(options: Partial<RedisEcOptions> & { nodes: readonly string[] }): Promise<RedisEcTier> {
    // Generous timeouts (other tests load this machine too): a timed-out shard counts as missing, which would skew the counts.
    const t = await RedisEcTier.open({ maxReconnectDelayMs: 200, timeoutMs: 30_000, ...options });
    tiers.push(t);
    return t;
  }

  /** A throwaway client on server i (or any address), for looking behind the tier's back. */
  async function raw<T>(i: number | { path: string } | { host: string; port: number }, fn: (r: Redis) => Promise<T>): Promise<T> {
    const address = typeof i === 'number' ? servers.address(i) : i;
    const r = new Redis({ ...address, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    r.on('error', () => {});
    try {
      await r.connect();
      return await fn(r);
    } finally {
      r.disconnect();
    }
  }

  const five = (): string[] => servers.urls.slice(0, 5);

  it('round-trips chunks of many sizes under 4+1, one shard with a distinct index on each node', async () => {
    const tier = await open({ nodes: five() });
    const sizes = [0, 1, 7, 8, 1000, 64 * KiB + 5, 512 * KiB - 3, 512 * KiB];
    const chunks = sizes.map((n) => chunk(n, `size ${n}`));
    for (const c of chunks) await tier.put(c.id, c.data);
    for (const c of chunks) {
      const got = await tier.get(c.id);
      assert.ok(got !== undefined && got.equals(c.data), `chunk of ${c.data.length} bytes`);
      const indices = new Set<number>();
      for (let i = 0; i < 5; i++) {
        const v = await raw(i, (r) => r.getBuffer(tier.keyFor(c.id)));
        assert.ok(v !== null, `node ${i} holds a shard of the ${c.data.length}-byte chunk`);
        assert.equal(v.length, 32 + shardSize(c.data.length, 4, 1));
        indices.add(v[23]!);
      }
      assert.deepEqual([...indices].sort(), [0, 1, 2, 3, 4]);
    }
    assert.equal(await tier.get(chunk(100, 'never stored').id), undefined);
    await tier.settled();
    const s = tier.stats();
    assert.equal(s.hits, sizes.length);
    assert.equal(s.misses, 1);
    assert.equal(s.shardsCorrupt, 0);
    assert.equal(s.putErrors, 0);
    assert.equal(s.repairs, 0);
    assert.deepEqual(Object.values(s.nodeErrors), [0, 0, 0, 0, 0]);
  });

  it('takes redis://127.0.0.1:PORT (TCP), unix:// and redis+unix:// node addresses', async () => {
    const tcp = await startRedisServers({ count: 1, transport: 'tcp' });
    try {
      assert.match(tcp.url(0), /^redis:\/\/127\.0\.0\.1:\d+$/);
      const nodes = [tcp.url(0), servers.url(0), servers.url(1).replace(/^unix:/, 'redis+unix:'), servers.url(2), servers.url(3)];
      const tier = await open({ nodes });
      const chunks = [chunk(300 * KiB, 'tcp a'), chunk(5000, 'tcp b')];
      for (const c of chunks) await tier.put(c.id, c.data);
      for (const c of chunks) {
        assert.ok((await tier.get(c.id))?.equals(c.data));
        assert.equal(await raw(tcp.address(0), (r) => r.exists(tier.keyFor(c.id))), 1, 'the TCP node holds a shard');
      }
      assert.equal(tier.stats().hits, 2);
    } finally {
      await tcp.stopAll();
    }
  });

  it('a node SIGKILLed while 200 reads are in flight: every read returns the right bytes', async () => {
    // 1000 shard GETs at once on a loaded 2-core machine can take over a second to drain (hence open's generous timeout).
    const tier = await open({ nodes: five() });
    const chunks = Array.from({ length: 20 }, (_, i) => chunk(64 * KiB + i * 9 * KiB + i, `inflight ${i}`));
    await Promise.all(chunks.map((c) => tier.put(c.id, c.data)));
    const reads = chunks.flatMap((c) => Array.from({ length: 10 }, () => tier.get(c.id).then((got) => ({ c, got }))));
    const killed = servers.kill(2);
    for (const { c, got } of await Promise.all(reads)) assert.ok(got?.equals(c.data), `chunk ${c.id} read while node 2 died: ${JSON.stringify(tier.stats())}`);
    await killed;
    // And with the node gone for good.
    for (const c of chunks) assert.ok((await tier.get(c.id))?.equals(c.data));
    await tier.settled();
    const s = tier.stats();
    assert.equal(s.misses, 0);
    assert.equal(s.hits, 220);
    assert.ok(s.nodeErrors[servers.url(2)]! >= 20, `node 2 failed ${s.nodeErrors[servers.url(2)]} reads`);
    assert.equal(s.nodeErrors[servers.url(0)], 0);
  });

  it('a corrupt, cut-short, foreign or deleted shard is read around, counted and repaired', async () => {
    const tier = await open({ nodes: five() });
    const chunks = [0, 1, 2, 3].map((i) => chunk(200 * KiB + i, `corrupt ${i}`));
    for (const c of chunks) await tier.put(c.id, c.data);
    const other = chunk(200 * KiB + 3, 'another chunk'); // as long as chunk 3, so only the check can tell
    await tier.put(other.id, other.data);

    /** The server holding shard `index` of `c`, and the stored value. */
    const holder = async (c: Chunk, index: number): Promise<{ node: number; value: Buffer }> => {
      for (let i = 0; i < 5; i++) {
        const v = await raw(i, (r) => r.getBuffer(tier.keyFor(c.id)));
        if (v?.[23] === index) return { node: i, value: v };
      }
      throw new Error(`no node holds shard ${index} of ${c.id}`);
    };
    const damage: ((c: Chunk, v: Buffer) => Buffer | null)[] = [
      (_, v) => {
        const bad = Buffer.from(v);
        bad[32 + 1000]! ^= 0x01; // one bit of payload
        return bad;
      },
      (_, v) => v.subarray(0, v.length - 8), // cut short
      () => null, // deleted (evicted)
      () => Buffer.alloc(0), // placeholder, replaced below by the other chunk's shard
    ];
    for (const [i, c] of chunks.entries()) {
      // Damage a data shard (0, 1) or parity (4) so decoding really has to rebuild.
      const index = [0, 4, 1, 2][i]!;
      const { node, value } = await holder(c, index);
      let bad = damage[i]!(c, value);
      if (i === 3) bad = (await holder(other, index)).value; // a valid shard, but of another chunk
      await raw(node, async (r) => {
        if (bad === null) await r.del(tier.keyFor(c.id));
        else await r.set(tier.keyFor(c.id), bad);
      });

      const got = await tier.get(c.id);
      assert.ok(got?.equals(c.data), `chunk ${i} read around its damaged shard ${index}`);
      await tier.settled();
      const repaired = await raw(node, (r) => r.getBuffer(tier.keyFor(c.id)));
      assert.ok(repaired?.equals(value), `shard ${index} of chunk ${i} rewritten as it was`);
    }
    const s = tier.stats();
    assert.equal(s.shardsCorrupt, 3);
    assert.equal(s.shardsMissing, 1);
    assert.equal(s.repairs, 4);
    assert.equal(s.misses, 0);
    // Once repaired, reads find every shard whole.
    for (const c of chunks) assert.ok((await tier.get(c.id))?.equals(c.data));
    await tier.settled();
    assert.equal(tier.stats().shardsCorrupt, 3);
    assert.equal(tier.stats().repairs, 4);
  });

  it('a stale duplicate of another shard is read around and replaced by the missing index', async () => {
    const tier = await open({ nodes: five() });
    const c = chunk(90 * KiB, 'duplicate');
    await tier.put(c.id, c.data);
    const values = await Promise.all([0, 1, 2, 3, 4].map((i) => raw(i, (r) => r.getBuffer(tier.keyFor(c.id)))));
    // Node 1 ends up holding node 0's shard (as a partial put across a membership change could leave it).
    await raw(1, (r) => r.set(tier.keyFor(c.id), values[0]!));
    assert.ok((await tier.get(c.id))?.equals(c.data));
    await tier.settled();
    assert.ok((await raw(1, (r) => r.getBuffer(tier.keyFor(c.id))))?.equals(values[1]!), 'node 1 holds its own index again');
    const s = tier.stats();
    assert.equal(s.shardsCorrupt, 0);
    assert.equal(s.repairs, 1);
  });

  it('membership change: a node leaving costs one shard per chunk it held, and read repair refills the new holder', async () => {
    const six = servers.urls.slice(0, 6);
    const before = await open({ nodes: six });
    const chunks = Array.from({ length: 24 }, (_, i) => chunk(40 * KiB + i, `membership ${i}`));
    for (const c of chunks) await before.put(c.id, c.data);
    // Each chunk skips one of the six nodes; the node skipped most often holds a shard of some chunks but not all
    // (node addresses are random temp paths, so a fixed choice would hold all 24 about 1% of the time).
    const skipped = (u: string): number => chunks.filter((c) => !before.placement(c.id).includes(u)).length;
    const gone = [...six].sort((a, b) => skipped(b) - skipped(a))[0]!;
    const held = chunks.filter((c) => before.placement(c.id).includes(gone)).length;
    assert.ok(held > 0 && held < chunks.length, `${held} of ${chunks.length} chunks had a shard on the leaving node`);

    // The same cluster without that node (its data still there, but nobody asks it).
    const after = await open({ nodes: six.filter((u) => u !== gone) });
    for (const c of chunks) assert.ok((await after.get(c.id))?.equals(c.data), 'still a hit after the node left');
    await after.settled();
    let s = after.stats();
    assert.equal(s.misses, 0);
    assert.equal(s.shardsMissing, held, 'exactly one shard missing per chunk the node held');
    assert.equal(s.repairs, held);
    // Repaired: every chunk now reads five valid shards.
    for (const c of chunks) assert.ok((await after.get(c.id))?.equals(c.data));
    await after.settled();
    s = after.stats();
    assert.equal(s.shardsMissing, held);
    assert.equal(s.shardsRead, chunks.length * 5 * 2 - held);

    // And when it comes back, the chunks still read (it answers with the shard it kept).
    const back = await open({ nodes: six });
    for (const c of chunks) assert.ok((await back.get(c.id))?.equals(c.data));
    assert.equal(back.stats().misses, 0);
  });

  it('does not wait for a node that hangs (SIGSTOP), and counts it missing once it times out', async () => {
    const patient = await open({ nodes: five(), timeoutMs: 60_000 });
    const hasty = await open({ nodes: five(), timeoutMs: 300 });
    const c = chunk(128 * KiB, 'hang');
    await patient.put(c.id, c.data);
    servers.pause(1);
    try {
      assert.ok((await patient.get(c.id))?.equals(c.data));
      // The answer came from the other four while node 1's GET was still out (it cannot answer while stopped).
      let s = patient.stats();
      assert.equal(s.shardsRead, 4);
      assert.equal(s.shardsMissing, 0);
      assert.equal(s.nodeErrors[servers.url(1)], 0);

      assert.ok((await hasty.get(c.id))?.equals(c.data));
      await hasty.settled();
      s = hasty.stats();
      assert.equal(s.shardsMissing, 1);
      assert.equal(s.nodeErrors[servers.url(1)], 1, 'the hung GET timed out');
      assert.equal(s.hits, 1);
    } finally {
      servers.resume(1);
    }
    await patient.settled();
    assert.equal(patient.stats().shardsRead, 5, 'the straggler answered after SIGCONT');
    assert.equal(patient.stats().repairs, 0);
  });

  it('4+2: two nodes down still hits; 4+1 with two down misses without throwing', async () => {
    const wide = await open({ nodes: servers.urls, k: 4, m: 2 });
    const narrow = await open({ nodes: five(), k: 4, m: 1 });
    const chunks = Array.from({ length: 8 }, (_, i) => chunk(100 * KiB + i, `two down ${i}`));
    for (const c of chunks) {
      await wide.put(c.id, c.data);
      await narrow.put(c.id, c.data);
    }
    await servers.kill(0);
    await servers.kill(3);
    for (const c of chunks) {
      assert.ok((await wide.get(c.id))?.equals(c.data), '4+2 survives two nodes');
      assert.equal(await narrow.get(c.id), undefined, '4+1 cannot');
    }
    assert.equal(wide.stats().hits, chunks.length);
    assert.equal(wide.stats().misses, 0);
    assert.equal(narrow.stats().misses, chunks.length);
  });

  it('all nodes down: get is a miss, put resolves, and open still works', async () => {
    const tier = await open({ nodes: five() });
    const c = chunk(50 * KiB, 'all down');
    await tier.put(c.id, c.data);
    for (let i = 0; i < 5; i++) await servers.kill(i);
    assert.equal(await tier.get(c.id), undefined);
    await tier.put(chunk(10, 'later').id, chunk(10, 'later').data);
    await tier.drop(c.id);
    const s = tier.stats();
    assert.equal(s.misses, 1);
    assert.equal(s.putErrors, 5);
    for (const url of five()) assert.ok(s.nodeErrors[url]! >= 3, `${url}: ${s.nodeErrors[url]} errors`);

    const late = await open({ nodes: five(), connectTimeoutMs: 500 });
    assert.equal(await late.get(c.id), undefined);
    await late.put(c.id, c.data);
    assert.equal(late.stats().putErrors, 5);
  });

  it('a killed node that is restarted is used again after reconnecting (and refilled by read repair)', async () => {
    const tier = await open({ nodes: five() });
    const a = chunk(256 * KiB, 'restart a');
    await tier.put(a.id, a.data);
    await servers.kill(1);
    assert.ok((await tier.get(a.id))?.equals(a.data));
    await servers.restart(1); // empty: no persistence
    await until('node 1 reconnected', () => tier.nodeStatus()[servers.url(1)] === 'ready');
    const errorsBefore = tier.stats().nodeErrors[servers.url(1)];
    assert.ok((await tier.get(a.id))?.equals(a.data));
    await tier.settled();
    assert.equal(await raw(1, (r) => r.exists(tier.keyFor(a.id))), 1, 'read repair gave node 1 its shard back');
    const b = chunk(100 * KiB, 'restart b');
    await tier.put(b.id, b.data);
    assert.equal(await raw(1, (r) => r.exists(tier.keyFor(b.id))), 1, 'new puts reach node 1');
    const s = tier.stats();
    assert.equal(s.nodeErrors[servers.url(1)], errorsBefore);
    assert.equal(s.repairs, 1);
    assert.equal(s.putErrors, 0);
  });

  it('drop deletes every shard', async () => {
    const tier = await open({ nodes: five() });
    const c = chunk(20 * KiB, 'drop');
    await tier.put(c.id, c.data);
    await tier.drop(c.id);
    for (let i = 0; i < 5; i++) assert.equal(await raw(i, (r) => r.exists(tier.keyFor(c.id))), 0);
    assert.equal(await tier.get(c.id), undefined);
  });

  it('get rejects with InterruptedError when its signal is aborted', async () => {
    const tier = await open({ nodes: five() });
    const c = chunk(1000, 'abort');
    await tier.put(c.id, c.data);
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(tier.get(c.id, { signal: ac.signal }), InterruptedError);
    const late = new AbortController();
    const p = tier.get(c.id, { signal: late.signal });
    late.abort();
    await assert.rejects(p, InterruptedError);
  });

  it('open refuses too few nodes, bad addresses and a node listed twice', async () => {
    await assert.rejects(RedisEcTier.open({ nodes: servers.urls.slice(0, 4) }), (e: unknown) => {
      assert.ok(e instanceof UsageError);
      assert.match(e.message, /needs at least 5 nodes for 4\+1 shards, got 4/);
      return true;
    });
    await assert.rejects(RedisEcTier.open({ nodes: servers.urls, k: 4, m: 3 }), /at least 7 nodes for 4\+3 shards, got 6/);
    await assert.rejects(RedisEcTier.open({ nodes: ['http://example.com', ...five()] }), /unknown scheme http/);
    await assert.rejects(RedisEcTier.open({ nodes: ['redis://:hunter2@h:1', 'redis://h:1', ...servers.urls.slice(0, 3)] }), (e: unknown) => {
      assert.ok(e instanceof UsageError);
      assert.match(e.message, /listed twice/);
      assert.doesNotMatch(e.message, /hunter2/);
      return true;
    });
    const sock = servers.url(0);
    await assert.rejects(RedisEcTier.open({ nodes: [sock, sock.replace(/^unix:/, 'redis+unix:'), ...servers.urls.slice(1, 4)] }), /listed twice/);
    await assert.rejects(RedisEcTier.open({ nodes: five(), k: 0 }), UsageError);
    await assert.rejects(RedisEcTier.open({ nodes: five(), timeoutMs: 0 }), UsageError);
  });

  it('made no unhandled rejections and no console output', () => {
    assert.deepEqual(noise, []);
  });
});
