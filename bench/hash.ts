/**
 * `node dist/bench/hash.js [--runs N] [--json]`: throughput of the hashes and
 * ciphers a chunk goes through, on 512 KiB buffers — the numbers behind the
 * choice of BLAKE3 + AES-256-CTR (src/chunks/seal.ts).
 *
 * Each row is timed `--runs` times (default 5), rows interleaved run by run so
 * a noisy neighbour hurts all rows alike; the median and the best run are
 * reported, in MB/s (10^6 bytes). Benchmarks report; they never assert.
 *
 * Single-threaded rows use one buffer over and over (it stays in cache, as a
 * chunk does between its hash and its encryption). The cipher rows include
 * allocating the output buffer, as sealChunk must; the `pool` row is the whole
 * seal on worker threads, input buffers transferred.
 *
 * On a Firecracker VM (the reference machine) the pool rows are dominated by
 * freeing and faulting in chunk-sized buffers across threads, not by the
 * crypto: `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=1073741824`
 * raised a 2-thread pool from ~0.15 to ~0.7 GB/s there. Reusing buffers
 * (PooledSealedChunk.plain → ChunkingSink.release) avoids part of it.
 */
import { createCipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import os from 'node:os';
import { loadBlake3Backend, type Blake3 } from '../src/chunks/blake3.js';
import { createSealer, defaultThreads } from '../src/chunks/pool.js';
import { sealChunk } from '../src/chunks/seal.js';
import type { Salt } from '../src/chunks/salt.js';

const SIZE = 512 * 1024;
/** Bytes processed per timed sample (per row, per run). */
const BYTES_PER_SAMPLE = 256 * 1024 * 1024;

interface Sample {
  readonly bytes: number;
  readonly seconds: number;
}

interface Row {
  readonly name: string;
  /** One timed sample: bytes processed and the seconds it took. */
  readonly run: () => Promise<Sample> | Sample;
}

export interface HashBenchResult {
  readonly name: string;
  readonly medianMBps: number;
  readonly bestMBps: number;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function loop(fn: () => void): () => Sample {
  const n = BYTES_PER_SAMPLE / SIZE;
  return () => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    return { bytes: n * SIZE, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
  };
}

export async function benchHash(runs = 5): Promise<HashBenchResult[]> {
  const buf = randomBytes(SIZE);
  const key = randomBytes(32);
  const iv = Buffer.alloc(16);
  const nonce = Buffer.alloc(12);
  const salt: Salt = { epoch: 0, secret: randomBytes(32) };
  const rows: Row[] = [];

  const backends: [string, Blake3 | null][] = [];
  for (const b of ['native', 'wasm'] as const) backends.push([b, await loadBlake3Backend(b).catch(() => null)]);
  for (const [name, b] of backends) {
    if (!b) {
      process.stderr.write(`[bench] blake3 ${name}: not available (the addon did not build at npm install)\n`);
      continue;
    }
    rows.push({ name: `blake3 ${name} keyed`, run: loop(() => b.keyedHash(key, buf)) });
    rows.push({ name: `blake3 ${name} hash`, run: loop(() => b.hash(buf)) });
  }
  rows.push({ name: 'sha256 (node crypto)', run: loop(() => createHash('sha256').update(buf).digest()) });
  rows.push({ name: 'hmac-sha256 (node crypto)', run: loop(() => createHmac('sha256', key).update(buf).digest()) });
  rows.push({
    name: 'aes-256-ctr (node crypto)',
    run: loop(() => {
      const c = createCipheriv('aes-256-ctr', key, iv);
      c.update(buf);
      c.final();
    }),
  });
  rows.push({
    name: 'aes-256-gcm (node crypto)',
    run: loop(() => {
      const c = createCipheriv('aes-256-gcm', key, nonce);
      c.update(buf);
      c.final();
      c.getAuthTag();
    }),
  });
  rows.push({ name: 'sealChunk (1 thread)', run: loop(() => sealChunk(buf, salt)) });
  // Fresh, cache-cold inputs like the pool row's, for a fair comparison with it.
  rows.push({
    name: 'sealChunk (1 thread, fresh inputs)',
    run: () => {
      const inputs = Array.from({ length: BYTES_PER_SAMPLE / SIZE / 2 }, () => Buffer.from(buf));
      const t0 = process.hrtime.bigint();
      for (const p of inputs) sealChunk(p, salt);
      return { bytes: inputs.length * SIZE, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
    },
  });

  const threads = defaultThreads();
  const sealer = createSealer(salt, { threads });
  rows.push({
    name: `sealChunk pool (${threads} threads)`,
    run: async () => {
      const n = BYTES_PER_SAMPLE / SIZE / 2;
      // Fresh inputs (they are transferred away), made before the clock starts below.
      const inputs = Array.from({ length: n }, () => Buffer.from(buf));
      const t0 = process.hrtime.bigint();
      await Promise.all(inputs.map((p, i) => sealer.seal(i, p)));
      return { bytes: n * SIZE, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
    },
  });

  const samples = new Map<string, number[]>(rows.map((r) => [r.name, []]));
  try {
    for (const r of rows) await r.run(); // warm-up: JIT, wasm, worker start
    for (let i = 0; i < runs; i++) {
      for (const r of rows) {
        const { bytes, seconds } = await r.run();
        samples.get(r.name)!.push(bytes / seconds / 1e6);
      }
      process.stderr.write(`[bench] hash run ${i + 1}/${runs}\n`);
    }
  } finally {
    await sealer.close();
  }
  return rows.map((r) => {
    const s = samples.get(r.name)!;
    return { name: r.name, medianMBps: Math.round(median(s)), bestMBps: Math.round(Math.max(...s)) };
  });
}

export function printHashTable(results: readonly HashBenchResult[]): void {
  const w = Math.max(...results.map((r) => r.name.length));
  process.stdout.write(`${'512 KiB buffers'.padEnd(w)}  median MB/s  best MB/s\n`);
  for (const r of results) process.stdout.write(`${r.name.padEnd(w)}  ${String(r.medianMBps).padStart(11)}  ${String(r.bestMBps).padStart(9)}\n`);
  const cpu = os.cpus()[0]?.model ?? 'unknown cpu';
  process.stdout.write(`(node ${process.version}, openssl ${process.versions.openssl}, ${cpu}, ${os.availableParallelism()} cpus)\n`);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let runs = 5;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--runs') {
      runs = Number(argv[++i]);
      if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs wants a positive integer, got ${argv[i]}`);
    } else if (a === '--json') {
      json = true;
    } else {
      throw new Error(`unknown argument ${JSON.stringify(a)}: want --runs N, --json`);
    }
  }
  const results = await benchHash(runs);
  if (json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  else printHashTable(results);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  });
}
