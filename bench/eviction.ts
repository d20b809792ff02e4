/**
 * Benchmark 5: eviction policies for the local chunk cache (issue #4).
 * Replays synthetic traces (src/cache/trace-gen.ts, seeded, so every run
 * sees the same requests) through LRU, LRU-2 and S3-FIFO at cache sizes of
 * 5%, 10% and 25% of each trace's distinct footprint, and reports hit
 * ratios (requests and bytes) and policy throughput (operations/s of the
 * in-memory bookkeeping; no disk I/O).
 *
 * The footprint counts every distinct chunk, one-off ones included; when
 * one-offs dominate it (the scans, the one-off starts) a share of it can hold
 * all the reused chunks, so the traces table also shows the reused share.
 */
import { createPolicy, POLICY_NAMES, type PolicyName } from '../src/cache/eviction.js';
import { hotAndScans, imageStarts, replay, type Trace } from '../src/cache/trace-gen.js';
import { log, printTable, round, settings, stat, type Stat } from './util.js';

const CACHE_SHARES = [0.01, 0.02, 0.05, 0.1, 0.25] as const;
/** The share at which throughput is timed (`--runs` times). */
const TIMED_SHARE = 0.1;

export interface EvictionCell {
  readonly trace: string;
  readonly cacheShare: number;
  readonly capacityBytes: number;
  readonly policy: PolicyName;
  /** % of requests that hit. */
  readonly hitPct: number;
  /** % of requested bytes that hit. */
  readonly byteHitPct: number;
  readonly evictions: number;
}

export interface EvictionTraceInfo {
  readonly name: string;
  readonly description: string;
  readonly requests: number;
  readonly distinctKeys: number;
  readonly distinctGiB: number;
  /** Distinct chunks requested more than once, and their share of the footprint's bytes. */
  readonly reusedKeys: number;
  readonly reusedPct: number;
}

export interface EvictionBench {
  readonly traces: readonly EvictionTraceInfo[];
  readonly cells: readonly EvictionCell[];
  /** Million requests replayed per CPU second (user + system), by trace and policy, at TIMED_SHARE. */
  readonly throughput: readonly { readonly trace: string; readonly policy: PolicyName; readonly mops: Stat }[];
}

interface NamedTrace {
  readonly name: string;
  readonly description: string;
  readonly make: () => Trace;
}

/**
 * The traces. Hot-set ones: 10,000 hot chunks, Zipf 0.9, 300,000 hot
 * requests; the scans add, in total, 1×, 3× and 6× the hot set in new keys,
 * in 20 short, 10 medium or 4 long scans. The image-start one: 3 base images
 * of 400 chunks, 40 app images each adding 50–400 of their own, 1,500 starts
 * by Zipf(1.0) popularity, 4 at a time interleaved, and after every 20th a
 * one-off start of a new 3,000-chunk (1.5 GiB) image.
 */
const TRACES: readonly NamedTrace[] = [
  { name: 'hot, no scan', description: 'hot set only', make: () => hotAndScans({ seed: 1, hotKeys: 10_000, hotRequests: 300_000, scanEvery: 0, scanLength: 0 }) },
  { name: 'hot + short scans', description: '20 scans of 500 new chunks', make: () => hotAndScans({ seed: 2, hotKeys: 10_000, hotRequests: 300_000, scanEvery: 15_000, scanLength: 500 }) },
  { name: 'hot + medium scans', description: '10 scans of 3,000 new chunks', make: () => hotAndScans({ seed: 3, hotKeys: 10_000, hotRequests: 300_000, scanEvery: 30_000, scanLength: 3_000 }) },
  { name: 'hot + long scans', description: '4 scans of 15,000 new chunks', make: () => hotAndScans({ seed: 4, hotKeys: 10_000, hotRequests: 300_000, scanEvery: 75_000, scanLength: 15_000 }) },
  {
    name: 'image starts',
    description: '1,500 starts of 40 images (3 bases) + a one-off 3,000-chunk start every 20',
    make: () => imageStarts({ seed: 5, bases: 3, baseChunks: 400, images: 40, ownChunks: [50, 400], starts: 1_500, oneOffEvery: 20, oneOffChunks: 3_000 }),
  },
];

/**
 * CPU seconds (user + system) spent in `fn`: on a shared, loaded machine the
 * wall time mostly measures the neighbours; CPU time is what the policy costs.
 */
function cpuSeconds(fn: () => void): number {
  const t0 = process.cpuUsage();
  fn();
  const d = process.cpuUsage(t0);
  return (d.user + d.system) / 1e6;
}

/** Distinct keys requested more than once, and their bytes. */
function reuse(trace: Trace): { keys: number; bytes: number } {
  const seen = new Map<string, number>();
  for (const r of trace.requests) seen.set(r.key, (seen.get(r.key) ?? 0) + 1);
  let keys = 0;
  let bytes = 0;
  for (const r of trace.requests) {
    if (seen.get(r.key)! > 1) {
      keys++;
      bytes += r.size;
      seen.set(r.key, 0); // count each key once
    }
  }
  return { keys, bytes };
}

export async function benchEviction(): Promise<EvictionBench> {
  const traces: EvictionTraceInfo[] = [];
  const cells: EvictionCell[] = [];
  const throughput: { trace: string; policy: PolicyName; mops: Stat }[] = [];
  for (const t of TRACES) {
    log(`eviction: ${t.name}`);
    const trace = t.make();
    const reused = reuse(trace);
    traces.push({
      name: t.name,
      description: t.description,
      requests: trace.requests.length,
      distinctKeys: trace.distinctKeys,
      distinctGiB: round(trace.distinctBytes / 2 ** 30, 2),
      reusedKeys: reused.keys,
      reusedPct: round((100 * reused.bytes) / trace.distinctBytes, 1),
    });
    for (const share of CACHE_SHARES) {
      const capacityBytes = Math.floor(trace.distinctBytes * share);
      for (const policy of POLICY_NAMES) {
        const r = replay(createPolicy(policy, capacityBytes), trace.requests);
        cells.push({
          trace: t.name,
          cacheShare: share,
          capacityBytes,
          policy,
          hitPct: round((100 * r.hits) / r.requests, 2),
          byteHitPct: round((100 * r.hitBytes) / r.bytes, 2),
          evictions: r.evictions,
        });
      }
    }
    // Throughput, interleaved run by run so machine noise hits every policy alike.
    const capacityBytes = Math.floor(trace.distinctBytes * TIMED_SHARE);
    const samples = new Map<PolicyName, number[]>(POLICY_NAMES.map((p) => [p, []]));
    for (let run = 0; run < settings.runs; run++) {
      for (const policy of POLICY_NAMES) {
        const p = createPolicy(policy, capacityBytes);
        samples.get(policy)!.push(trace.requests.length / 1e6 / cpuSeconds(() => replay(p, trace.requests)));
      }
    }
    for (const policy of POLICY_NAMES) throughput.push({ trace: t.name, policy, mops: stat(samples.get(policy)!) });
    // Let this trace's requests go before the next is made.
    await new Promise((resolve) => setImmediate(resolve));
  }
  return { traces, cells, throughput };
}

export function printEvictionTables(b: EvictionBench): void {
  printTable(
    'Eviction traces (synthetic, seeded; 512 KiB chunks, 1 in 8 shorter)',
    [
      ['trace', 'what', 'requests', 'distinct chunks', 'footprint GiB', 'reused chunks', 'reused % of footprint'],
      ...b.traces.map((t) => [t.name, t.description, t.requests, t.distinctKeys, t.distinctGiB, t.reusedKeys, t.reusedPct]),
    ],
  );
  const header = ['trace', 'cache', ...POLICY_NAMES.map((p) => `${p} hit %`), ...POLICY_NAMES.map((p) => `${p} byte hit %`)];
  const rows: (string | number)[][] = [header];
  for (const t of b.traces) {
    for (const share of CACHE_SHARES) {
      const at = b.cells.filter((c) => c.trace === t.name && c.cacheShare === share);
      const by = (p: PolicyName): EvictionCell | undefined => at.find((c) => c.policy === p);
      if (at.length === 0) continue;
      rows.push([t.name, `${share * 100}%`, ...POLICY_NAMES.map((p) => by(p)?.hitPct ?? NaN), ...POLICY_NAMES.map((p) => by(p)?.byteHitPct ?? NaN)]);
    }
  }
  printTable('Hit ratio by policy (cache size as a share of the trace footprint)', rows);
  printTable(
    `Policy throughput at ${TIMED_SHARE * 100}% (million requests replayed per CPU second, median of ${settings.runs}; in-memory bookkeeping only)`,
    [
      ['trace', ...POLICY_NAMES],
      ...b.traces.map((t) => [t.name, ...POLICY_NAMES.map((p) => b.throughput.find((x) => x.trace === t.name && x.policy === p)?.mops.median ?? NaN)]),
    ],
  );
}
