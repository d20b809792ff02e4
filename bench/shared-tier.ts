/**
 * Benchmark `shared` (issue #4): the erasure-coded shared cache tier
 * (src/cache/redis-ec.ts) against five real redis-server processes on
 * loopback TCP.
 *
 * Rows, each on a fresh set of keys:
 *  - EC 4+1 on 5 nodes: the paper's layout (decode from the first 4 answers);
 *  - split 4+0 on 4 nodes: the same four-way split with no parity, so every
 *    read waits for all four;
 *  - single copy (1+0) on 1 node: the whole chunk in one GET;
 *  - EC 4+1 with one node stopped (SIGSTOP): a node that hangs; its GETs time
 *    out in the background while reads decode from the other four.
 *
 * For each: put latency (awaited, one at a time), then warm get latency of a
 * 512 KiB chunk, one get at a time over a few thousand gets cycling through
 * the stored chunks (p50, p99, p99.9, in microseconds), get throughput with
 * 8 in flight, and the bytes stored per chunk (value bytes from STRLEN over
 * all nodes, and Redis's own MEMORY USAGE) against the chunk's 512 KiB.
 *
 * Loopback has no network: these numbers are the tier's own cost (encode,
 * decode, hashing, ioredis, five Redis processes on a 2-core machine), not
 * what an AZ network adds, and a network is where a 4-way split and a spare
 * shard pay off. On the reference VM, fresh buffers of 128 KiB and up are
 * slow (each is an mmap and page faults: a 512 KiB Buffer.concat ~300 µs,
 * ~100 µs with GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4194304, as
 * bench/hash.ts found), and split layouts allocate more of them per get.
 * Benchmarks report; they never assert.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import type { ChunkId } from '../src/chunks/id.js';
import { RedisEcTier } from '../src/cache/redis-ec.js';
import { redisServerProblem, startRedisServers, type RedisTestServers } from '../src/testing/redis-servers.js';
import { run } from '../src/testing/tools.js';
import { log, printTable, round } from './util.js';

const CHUNK = 512 * 1024;
/** Distinct chunks per row (16 MiB; 20 MiB stored under 4+1, well under the nodes' maxmemory). */
const CHUNKS = 32;
const PUTS = 200;
const WARMUP_GETS = 200;
const GETS = 3000;
/** The stopped-node row makes fewer gets: each leaves a GET queued on the stopped node until it times out. */
const STOPPED_GETS = 1000;
const CONCURRENT = 8;
const CONCURRENT_GETS = 2000;

export interface Percentiles {
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
  readonly mean: number;
  readonly count: number;
}

export interface SharedTierRow {
  readonly name: string;
  readonly k: number;
  readonly m: number;
  readonly nodes: number;
  /** Microseconds per awaited put of a 512 KiB chunk. */
  readonly putUs: Percentiles;
  /** Microseconds per warm get, one at a time. */
  readonly getUs: Percentiles;
  /** Gets per second and MB/s (10^6) with CONCURRENT in flight. */
  readonly concurrent: { readonly inFlight: number; readonly getsPerSecond: number; readonly MBps: number; readonly p99Us: number };
  /** Value bytes stored per 512 KiB chunk, over all nodes (headers included). */
  readonly storedBytesPerChunk: number;
  /** Redis MEMORY USAGE per chunk, over all nodes (keys and allocator overhead included). */
  readonly memoryBytesPerChunk: number;
  /** storedBytesPerChunk / chunk size. */
  readonly overhead: number;
  readonly misses: number;
}

export interface SharedTierBench {
  readonly redisVersion: string;
  readonly transport: 'tcp loopback';
  readonly chunkBytes: number;
  readonly rows: readonly SharedTierRow[];
}

function chunk(i: number, seed: string): { id: ChunkId; data: Buffer } {
  const key = createHash('sha256').update(`${seed}/${i}`).digest();
  const c = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const data = Buffer.concat([c.update(Buffer.alloc(CHUNK)), c.final()]);
  return { id: createHash('sha256').update(data).digest('hex') as ChunkId, data };
}

function percentiles(samplesUs: number[]): Percentiles {
  const s = [...samplesUs].sort((a, b) => a - b);
  const at = (q: number): number => round(s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN, 0);
  return { p50: at(0.5), p99: at(0.99), p999: at(0.999), mean: round(s.reduce((a, b) => a + b, 0) / Math.max(1, s.length), 0), count: s.length };
}

async function timeUs<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = process.hrtime.bigint();
  const v = await fn();
  return [Number(process.hrtime.bigint() - t0) / 1000, v];
}

interface RowSpec {
  readonly name: string;
  readonly k: number;
  readonly m: number;
  /** Which servers are the tier's nodes. */
  readonly servers: readonly number[];
  /** A server to SIGSTOP during the gets. */
  readonly stop?: number;
  readonly gets: number;
}

async function benchRow(servers: RedisTestServers, spec: RowSpec): Promise<SharedTierRow> {
  log(`shared: ${spec.name}`);
  const tier = await RedisEcTier.open({ nodes: spec.servers.map((i) => servers.url(i)), k: spec.k, m: spec.m, timeoutMs: 1000 });
  try {
    const chunks = Array.from({ length: CHUNKS }, (_, i) => chunk(i, spec.name));
    // Warm-up: connections, JIT, the addon's thread pool; then the same chunks again, timed.
    for (const c of chunks) await tier.put(c.id, c.data);
    const put: number[] = [];
    for (let i = 0; i < PUTS; i++) {
      const c = chunks[i % CHUNKS]!;
      put.push((await timeUs(() => tier.put(c.id, c.data)))[0]);
    }
    const stored = await storedBytes(servers, spec.servers, chunks.map((c) => tier.keyFor(c.id)));
    if (spec.stop !== undefined) servers.pause(spec.stop);
    try {
      for (let i = 0; i < WARMUP_GETS; i++) await tier.get(chunks[i % CHUNKS]!.id);
      const get: number[] = [];
      let misses = 0;
      for (let i = 0; i < spec.gets; i++) {
        const c = chunks[i % CHUNKS]!;
        const [us, got] = await timeUs(() => tier.get(c.id));
        if (got === undefined || !got.equals(c.data)) misses++;
        get.push(us);
      }
      // Throughput: CONCURRENT loops, each one get at a time.
      const each: number[] = [];
      let next = 0;
      const t0 = process.hrtime.bigint();
      await Promise.all(
        Array.from({ length: CONCURRENT }, async () => {
          while (next < CONCURRENT_GETS) {
            const c = chunks[next++ % CHUNKS]!;
            const [us, got] = await timeUs(() => tier.get(c.id));
            if (got === undefined) misses++;
            each.push(us);
          }
        }),
      );
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      return {
        name: spec.name,
        k: spec.k,
        m: spec.m,
        nodes: spec.servers.length,
        putUs: percentiles(put),
        getUs: percentiles(get),
        concurrent: { inFlight: CONCURRENT, getsPerSecond: round(CONCURRENT_GETS / seconds, 0), MBps: round((CONCURRENT_GETS * CHUNK) / seconds / 1e6, 0), p99Us: percentiles(each).p99 },
        storedBytesPerChunk: round(stored.value / CHUNKS, 0),
        memoryBytesPerChunk: round(stored.memory / CHUNKS, 0),
        overhead: round(stored.value / CHUNKS / CHUNK, 3),
        misses,
      };
    } finally {
      if (spec.stop !== undefined) servers.resume(spec.stop);
    }
  } finally {
    await tier.close();
  }
}

async function storedBytes(servers: RedisTestServers, which: readonly number[], keys: readonly string[]): Promise<{ value: number; memory: number }> {
  let value = 0;
  let memory = 0;
  for (const i of which) {
    const r = new Redis({ ...servers.address(i), lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    r.on('error', () => {});
    try {
      await r.connect();
      for (const k of keys) {
        value += await r.strlen(k);
        memory += Number((await r.memory('USAGE', k)) ?? 0);
      }
    } finally {
      r.disconnect();
    }
  }
  return { value, memory };
}

/** Runs the rows; undefined (with a message) when redis-server is not installed. */
export async function benchSharedTier(): Promise<SharedTierBench | undefined> {
  const problem = redisServerProblem();
  if (problem !== undefined) {
    log(`shared: skipped, ${problem}`);
    return undefined;
  }
  const version = (await run('redis-server', ['--version'])).stdout.trim();
  const servers = await startRedisServers({ count: 5, transport: 'tcp', maxmemory: '256mb' });
  try {
    const specs: RowSpec[] = [
      { name: 'EC 4+1', k: 4, m: 1, servers: [0, 1, 2, 3, 4], gets: GETS },
      { name: 'split 4+0', k: 4, m: 0, servers: [0, 1, 2, 3], gets: GETS },
      { name: 'single copy 1+0', k: 1, m: 0, servers: [0], gets: GETS },
      { name: 'EC 4+1, 1 node stopped', k: 4, m: 1, servers: [0, 1, 2, 3, 4], stop: 2, gets: STOPPED_GETS },
    ];
    // Untimed first pass: fresh redis-servers pay for growing their heaps (put p50 was ~4x higher in the first row).
    await benchRow(servers, { ...specs[0]!, name: 'warm-up', gets: WARMUP_GETS });
    const rows: SharedTierRow[] = [];
    for (const spec of specs) rows.push(await benchRow(servers, spec));
    return { redisVersion: version, transport: 'tcp loopback', chunkBytes: CHUNK, rows };
  } finally {
    await servers.stopAll();
  }
}

export function printSharedTable(b: SharedTierBench): void {
  printTable(`Shared cache tier: ${b.chunkBytes / 1024} KiB chunks on redis-server over ${b.transport} (µs; get = warm, one at a time)`, [
    ['layout', 'nodes', 'get p50', 'get p99', 'get p99.9', 'put p50', 'put p99', `gets/s @${CONCURRENT}`, `MB/s @${CONCURRENT}`, 'stored B/chunk', 'overhead', 'redis mem B/chunk', 'misses'],
    ...b.rows.map((r) => [
      r.name,
      r.nodes,
      r.getUs.p50,
      r.getUs.p99,
      r.getUs.p999,
      r.putUs.p50,
      r.putUs.p99,
      r.concurrent.getsPerSecond,
      r.concurrent.MBps,
      r.storedBytesPerChunk,
      r.overhead,
      r.memoryBytesPerChunk,
      r.misses,
    ]),
  ]);
  console.log(`  ${b.redisVersion}; stored = value bytes (32-byte shard headers included) over all nodes; overhead = stored / chunk;`);
  console.log('  redis mem = MEMORY USAGE over all nodes (jemalloc rounds a 128 KiB shard or a 512 KiB copy up to the next size class, +25%)');
}
