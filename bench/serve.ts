/**
 * Benchmark `serve` (issue #4, performance): `chunkyard serve` of the corpus
 * `py` image (converted into a fresh file store), measured from outside with
 * real clients, as a user would run it.
 *
 *  1. latency of 4 KiB random reads through NBD, one request in flight,
 *     timed at the client (RawNbdClient), per tier the chunks come from:
 *     memory (every chunk decrypted in memory), disk (warm local cache,
 *     --memory-chunks 0), shared (5 redis-server on unix sockets, EC 4+1,
 *     warm, no disk cache, --memory-chunks 0) and origin (the file store,
 *     --no-cache --memory-chunks 0). With no memory tier each 4 KiB read
 *     fetches, checks, decrypts and authenticates a whole 512 KiB chunk, so
 *     the server's own per-tier hit latency (stats JSON `tiers.X.latencyUs`:
 *     the fetch alone) is reported beside it, and the cost of opening one
 *     chunk is timed in process;
 *  2. warm sequential `nbdcopy URI null:` throughput against `nbdkit file`
 *     serving the `extract` of the same image;
 *  3. cold start of `python3 -c 'import json'` in the image: the files it
 *     opens (strace on a loop mount of the extracted image: the floor), then
 *     for real through nbdfuse + a loop mount on a fresh cache: chunks and
 *     bytes fetched from the origin, and wall time without and with
 *     --prefetch of the trace recorded by a previous start.
 *
 * Servers run as child processes (src/testing/serve-process.ts); the FUSE
 * mount is only ever read by other children (mount, chroot). The machine
 * has 2 cores shared with others: timings are medians over `settings.runs`
 * runs, interleaved. Benchmarks report; they never assert.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, lstat, mkdir, open, readFile, readlink, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { checkChunkName, openChunk, sealChunk } from '../src/chunks/seal.js';
import { DEFAULT_CHUNK_SIZE } from '../src/index.js';
import { Cmd } from '../src/serve/nbd/protocol.js';
import { RawNbdClient } from '../src/testing/nbd-client.js';
import { redisServerProblem, startRedisServers, type RedisTestServers } from '../src/testing/redis-servers.js';
import { startServe, type ServeProcess } from '../src/testing/serve-process.js';
import { isRoot, repoRoot, run, tmpDir, whichSync, withLoopMount, type TmpDir } from '../src/testing/tools.js';
import { corpus } from './corpus.js';
import { MiB, log, printTable, round, settings, stat as statOf, timed, type Stat } from './util.js';

const TAG = 'py';
const CHUNK = DEFAULT_CHUNK_SIZE;
const READ_BYTES = 4096;
/** Timed random reads per tier and run, after WARMUP_READS untimed ones (JIT, connections). */
const READS = 3000;
const WARMUP_READS = 100;
/** nbdcopy runs per source: each takes a second or two, so more than `settings.runs`. */
const MIN_COPY_RUNS = 5;
/** Cold starts with and without prefetch (a few seconds each). */
const MIN_COLD_RUNS = 5;
const PYTHON = ['/usr/bin/python3', '-c', 'import json'] as const;
/** The environment of every python start (strace floor and real runs alike). */
const CHROOT_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', HOME: '/root' };
/** The paper's numbers (DESIGN.md): local cache < 100 µs; AZ cache 550 µs median, 3.7 ms p99.9; S3 36 ms median, 175 ms p99.9. */
const PAPER: Record<TierName, string> = { memory: 'local < 100', disk: 'local < 100', shared: 'AZ 550 / 3700 (p99.9)', origin: 'S3 36000 / 175000 (p99.9)' };

/**
 * glibc's malloc hands 512 KiB buffers out as fresh mmap()s and gives freed
 * memory back to the kernel, so every chunk fetched and decrypted faults in
 * new pages; on this VM that costs more than the crypto (bench/hash.ts).
 * Rows marked +tunables run serve with these thresholds raised.
 */
export const GLIBC_MALLOC_TUNABLES = 'glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=1073741824';

type TierName = 'memory' | 'disk' | 'shared' | 'origin';
const TIERS: readonly TierName[] = ['memory', 'disk', 'shared', 'origin'];

export interface Percentiles {
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
  readonly count: number;
}

/** What `--stats-json` holds (the parts used here). */
interface LatencyJson {
  readonly count: number;
  readonly mean: number;
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}
interface TierJson {
  readonly requests: number;
  readonly hits: number;
  readonly misses: number;
  readonly bytes: number;
  readonly fills: { readonly done: number; readonly failed: number; readonly dropped: number };
  readonly latencyUs: LatencyJson;
}
interface StatsJson {
  readonly tiers: { readonly [name: string]: TierJson | undefined };
  readonly reads: { readonly count: number; readonly bytes: number; readonly errors: number; readonly latencyUs: LatencyJson };
  readonly chunks: { readonly total: number; readonly fetched: number; readonly decrypted: number; readonly touched: number; readonly prefetched: number };
  readonly nbd?: { readonly requests: number; readonly latency: LatencyJson };
  readonly prefetch?: { readonly done: number; readonly total: number; readonly warmed: number };
}

export interface LatencyRow {
  readonly name: string;
  readonly tier: TierName;
  /** Served with GLIBC_TUNABLES (see below). */
  readonly glibcTunables: boolean;
  readonly flags: readonly string[];
  /** Client-side µs; each percentile is the median over runs of that run's percentile. */
  readonly client: Percentiles;
  /** Client-side µs over every run's samples together. */
  readonly clientPooled: Percentiles;
  /** Server side (stats JSON after the runs): whole view read(), NBD request, and the tier's own hit latency (the fetch, µs). */
  readonly serverRead: LatencyJson;
  readonly serverNbd: LatencyJson | null;
  readonly tierHit: LatencyJson;
  /** Demand reads / hits of that tier / origin hits during the runs (the origin should stay 0 for cache tiers). */
  readonly reads: number;
  readonly tierHits: number;
  readonly originHits: number;
}

export interface CopyRow {
  readonly name: string;
  readonly seconds: Stat;
  /** Image MB (10^6) per median second. */
  readonly mbps: number;
  /** mbps / nbdkit's mbps. */
  readonly ratio: number;
  /** Peak resident set of the server process, MiB (VmHWM at the end). */
  readonly serverPeakRssMiB: number | null;
}

export interface ColdRun {
  readonly prefetch: boolean;
  readonly glibcTunables: boolean;
  /** Seconds from spawning serve to its ready line; to nbdfuse's pid file; to the loop mount done; python's own wall time; all together. */
  readonly serveStartS: number;
  readonly fuseS: number;
  readonly mountS: number;
  readonly pythonS: number;
  readonly totalS: number;
  /** python run again on the same mount (page cache warm): the program's own time. */
  readonly warmPythonS: number;
  readonly originChunks: number;
  readonly originBytes: number;
  readonly touchedChunks: number;
  readonly prefetched: number;
  /** originChunks − prefetched: chunk fetches from the origin on behalf of demand reads. */
  readonly demandOriginChunks: number;
  /** Prefetch progress when python exited. */
  readonly prefetchDoneAtExit: number | null;
  readonly readP99Us: number;
  readonly readMaxUs: number;
}

export interface ColdStart {
  readonly command: string;
  readonly imageBytes: number;
  readonly imageChunks: number;
  /** From strace on a loop mount of the extracted image: regular files opened or executed, their bytes, and the chunks holding their data. */
  readonly floor: { readonly files: number; readonly bytes: number; readonly dataChunks: number; readonly list: readonly { path: string; bytes: number }[] } | null;
  readonly traceChunks: number;
  readonly runs: readonly ColdRun[];
  readonly noPrefetch: ColdSummary;
  readonly withPrefetch: ColdSummary;
  /** No prefetch, serve under GLIBC_TUNABLES. */
  readonly noPrefetchTunables: ColdSummary;
}

export interface ColdSummary {
  readonly pythonS: Stat;
  readonly totalS: Stat;
  readonly originChunks: Stat;
  readonly originMiB: Stat;
  readonly demandOriginChunks: Stat;
}

export interface ServeBench {
  readonly image: { readonly tag: string; readonly bytes: number; readonly chunks: number; readonly chunkBytes: number };
  readonly latency: { readonly reads: number; readonly runs: number; readonly rows: readonly LatencyRow[] } | null;
  /**
   * In process, µs for one 512 KiB chunk (median and fastest of 200): the name check (BLAKE3), and openChunk
   * (name check + AES-256-CTR + keyed BLAKE3). The fastest is the cost on an idle core.
   */
  readonly openChunkUs: { readonly nameCheck: { median: number; min: number }; readonly openChunk: { median: number; min: number } };
  readonly copy: { readonly runs: number; readonly rows: readonly CopyRow[] } | null;
  readonly cold: ColdStart | null;
  readonly notes: readonly string[];
}

// --- small helpers ------------------------------------------------------------------

const bin = (): string => path.join(repoRoot(), 'bin', 'chunkyard.js');
const cli = (args: readonly string[]) => run(process.execPath, [bin(), ...args]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const nowS = (): number => Number(process.hrtime.bigint()) / 1e9;

function percentiles(samples: readonly number[]): Percentiles {
  const s = Float64Array.from(samples).sort();
  const at = (p: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
  return { p50: round(at(50), 1), p99: round(at(99), 1), p999: round(at(99.9), 1), count: s.length };
}

function medianOf(xs: readonly number[]): number {
  return statOf(xs).median;
}

/** xorshift32: the same offsets for every tier within a run. */
function randomOffsets(n: number, size: number, seed: number): number[] {
  let x = (seed * 2654435761) >>> 0 || 1;
  const blocks = Math.floor(size / READ_BYTES);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out.push((x % blocks) * READ_BYTES);
  }
  return out;
}

async function peakRssMiB(pid: number | undefined): Promise<number | null> {
  if (pid === undefined) return null;
  const s = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const m = /VmHWM:\s+(\d+) kB/.exec(s);
  return m ? round(Number(m[1]) / 1024, 0) : null;
}

async function readStats(file: string): Promise<StatsJson> {
  return JSON.parse(await readFile(file, 'utf8')) as StatsJson;
}

/** Waits for `file` to appear while `child` runs. */
async function waitForFile(file: string, child: ChildProcess, what: string, stderr: () => string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (existsSync(file)) return;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it was ready: ${stderr().trim()}`);
    await sleep(50);
  }
  throw new Error(`${what} was not ready after 30 s: ${stderr().trim()}`);
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((r) => child.once('close', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await gone;
  clearTimeout(t);
}

/** The serve processes of this benchmark, each on its own unix socket, all stopped at the end. */
class Servers {
  readonly #live = new Set<ServeProcess>();
  #n = 0;
  constructor(
    readonly dir: string,
    readonly common: readonly string[],
  ) {}

  /** `tunables`: run with GLIBC_TUNABLES = GLIBC_MALLOC_TUNABLES. */
  async start(name: string, flags: readonly string[], tunables = false): Promise<{ s: ServeProcess; sock: string; statsJson: string }> {
    const n = this.#n++;
    const sock = path.join(this.dir, `${name}-${n}.sock`);
    const statsJson = path.join(this.dir, `${name}-${n}.json`);
    const s = await startServe([...this.common, '--listen', `unix:${sock}`, ...flags], { statsJson, ...(tunables ? { env: { GLIBC_TUNABLES: GLIBC_MALLOC_TUNABLES } } : {}) });
    this.#live.add(s);
    return { s, sock, statsJson };
  }

  /** SIGTERM; the final stats JSON. */
  async stop(p: { s: ServeProcess; statsJson: string }): Promise<StatsJson> {
    const code = await p.s.stop();
    this.#live.delete(p.s);
    if (code !== 0) throw new Error(`serve exited with ${code}: ${p.s.stderr().trim().slice(-2000)}`);
    return readStats(p.statsJson);
  }

  async stopAll(): Promise<void> {
    await Promise.allSettled([...this.#live].map((s) => s.stop()));
    this.#live.clear();
  }
}

/**
 * One request in flight in all: for each offset, one 4 KiB read from each
 * server in turn (round robin), so every tier sees the same moments of a
 * machine whose load comes and goes. µs per read, by server, after
 * WARMUP_READS untimed reads each.
 */
async function timeReadsRoundRobin<K>(socks: ReadonlyMap<K, string>, offsets: readonly number[]): Promise<Map<K, number[]>> {
  const clients = new Map<K, RawNbdClient>();
  try {
    for (const [k, sock] of socks) {
      const c = await RawNbdClient.connect({ unix: sock });
      clients.set(k, c);
      await c.go();
    }
    const read = async (c: RawNbdClient, offset: number): Promise<void> => {
      const r = await c.request({ type: Cmd.READ, offset, length: READ_BYTES });
      if (r.error !== 0 || r.data?.length !== READ_BYTES) throw new Error(`NBD read at ${offset} failed: error ${r.error}`);
    };
    for (let i = 0; i < WARMUP_READS; i++) for (const c of clients.values()) await read(c, offsets[(i * 7919) % offsets.length]!);
    const us = new Map<K, number[]>([...clients.keys()].map((k) => [k, []]));
    for (const off of offsets) {
      for (const [k, c] of clients) {
        const t0 = process.hrtime.bigint();
        await read(c, off);
        us.get(k)!.push(Number(process.hrtime.bigint() - t0) / 1000);
      }
    }
    return us;
  } finally {
    for (const c of clients.values()) c.destroy();
  }
}

/** CPU time counters of the whole machine (/proc/stat), to tell how busy it was meanwhile. */
async function cpuTimes(): Promise<{ idle: number; total: number } | undefined> {
  const line = (await readFile('/proc/stat', 'utf8').catch(() => '')).split('\n')[0] ?? '';
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  if (f.length < 5 || f.some((x) => !Number.isFinite(x))) return undefined;
  return { idle: f[3]! + f[4]!, total: f.reduce((a, b) => a + b, 0) };
}

/** Share of the machine's CPU time that was busy (ours and everyone else's) since `t0`, in %. */
async function busySince(t0: { idle: number; total: number } | undefined): Promise<number | null> {
  const t1 = await cpuTimes();
  if (t0 === undefined || t1 === undefined || t1.total === t0.total) return null;
  return round(100 * (1 - (t1.idle - t0.idle) / (t1.total - t0.total)), 0);
}

/** `nbdcopy URI null:`: wall seconds. */
async function copyToNull(uri: string, extra: readonly string[] = []): Promise<number> {
  const { seconds } = await timed(() => run('nbdcopy', [...extra, uri, 'null:']));
  return seconds;
}

// --- 1 + 2: latency per tier, nbdcopy throughput ------------------------------------

/** A serve process of the latency and copy runs: which tier answers, its flags, and whether it runs with GLIBC_TUNABLES. */
interface Variant {
  readonly name: string;
  readonly tier: TierName;
  readonly flags: readonly string[];
  readonly tunables: boolean;
}

async function benchReadPath(
  tmp: string,
  servers: Servers,
  image: { file: string; bytes: number; chunks: number },
  notes: string[],
): Promise<{ latency: ServeBench['latency']; copy: ServeBench['copy'] }> {
  const disk = path.join(tmp, 'cache-disk');
  const fullTrace = path.join(tmp, 'full-trace.json');

  // Warm the disk cache (one request at a time, so no fill is dropped) and record a trace of every chunk.
  log('serve: warming the disk cache');
  const w = await servers.start('warm-disk', ['--cache-dir', disk, '--memory-chunks', '0', '--record-trace', fullTrace]);
  await run('nbdcopy', ['--connections=1', '--requests=1', w.s.info.uri, 'null:']);
  const ws = await servers.stop(w);
  if (ws.tiers['disk']?.fills.done !== image.chunks) notes.push(`disk warm-up filled ${ws.tiers['disk']?.fills.done} of ${image.chunks} chunks`);
  // Warm copies for the other disk servers (one process per cache directory).
  const diskCopy = async (name: string): Promise<string> => {
    const d = path.join(tmp, name);
    await cp(disk, d, { recursive: true });
    await rm(path.join(d, 'lock'), { force: true });
    return d;
  };
  const diskT = await diskCopy('cache-disk-tunables');
  const diskDefault = await diskCopy('cache-disk-default');
  const diskDefaultT = await diskCopy('cache-disk-default-tunables');

  let redis: RedisTestServers | undefined;
  const redisProblem = redisServerProblem();
  if (redisProblem !== undefined) notes.push(`shared tier skipped: ${redisProblem}`);
  let nbdkit: ChildProcess | undefined;
  try {
    let sharedFlags: string[] | undefined;
    if (redisProblem === undefined) {
      // 191 MB × 5/4 over 5 nodes is ~48 MB each: 128 MiB leaves room for Redis's own overhead.
      redis = await startRedisServers({ count: 5, maxmemory: '128mb' });
      sharedFlags = ['--no-cache', '--memory-chunks', '0', '--shared-cache', redis.urls.join(',')];
      log('serve: warming the shared tier (5 redis-server, EC 4+1)');
      const ww = await servers.start('warm-shared', sharedFlags);
      await run('nbdcopy', ['--connections=1', '--requests=1', ww.s.info.uri, 'null:']);
      const wws = await servers.stop(ww);
      if (wws.tiers['shared']?.fills.done !== image.chunks) notes.push(`shared warm-up filled ${wws.tiers['shared']?.fills.done} of ${image.chunks} chunks`);
    }

    const memoryChunks = String(image.chunks + 64);
    const variants: Variant[] = [
      // Every chunk prefetched into memory before the runs: demand reads then only hit memory.
      { name: 'memory', tier: 'memory', flags: ['--no-cache', '--memory-chunks', memoryChunks, '--prefetch', fullTrace], tunables: false },
      { name: 'disk', tier: 'disk', flags: ['--cache-dir', disk, '--memory-chunks', '0'], tunables: false },
      ...(sharedFlags ? [{ name: 'shared', tier: 'shared' as const, flags: sharedFlags, tunables: false }] : []),
      { name: 'origin', tier: 'origin', flags: ['--no-cache', '--memory-chunks', '0'], tunables: false },
      { name: 'disk +tunables', tier: 'disk', flags: ['--cache-dir', diskT, '--memory-chunks', '0'], tunables: true },
      ...(sharedFlags ? [{ name: 'shared +tunables', tier: 'shared' as const, flags: sharedFlags, tunables: true }] : []),
      { name: 'origin +tunables', tier: 'origin', flags: ['--no-cache', '--memory-chunks', '0'], tunables: true },
    ];
    const live = new Map<string, { v: Variant; p: Awaited<ReturnType<Servers['start']>> }>();
    for (const v of variants) live.set(v.name, { v, p: await servers.start(v.tier, v.flags, v.tunables) });
    const mem = live.get('memory')!.p;
    for (let i = 0; ; i++) {
      const st = (await mem.s.stats()) as StatsJson;
      if ((st.prefetch?.done ?? 0) >= image.chunks) break;
      if (i > 600) throw new Error(`memory prefetch stuck at ${JSON.stringify(st.prefetch)}`);
      await sleep(100);
    }

    // 1. Latency: servers interleaved read by read, the same offsets for each.
    const samples = new Map<string, number[][]>();
    const cpu0 = await cpuTimes();
    const load0 = os.loadavg()[0]!;
    for (let r = 0; r < settings.runs; r++) {
      log(`serve: latency run ${r + 1}/${settings.runs}: ${READS} reads from each of ${[...live.keys()].join(', ')}, round robin`);
      const offsets = randomOffsets(READS, image.bytes, r + 1);
      const us = await timeReadsRoundRobin(new Map([...live].map(([k, x]) => [k, x.p.sock])), offsets);
      for (const [k, u] of us) samples.set(k, [...(samples.get(k) ?? []), u]);
    }
    const busy = await busySince(cpu0);
    notes.push(`latency runs: machine CPU ${busy ?? '?'}% busy (all processes, ours included), load average ${round(load0, 1)} → ${round(os.loadavg()[0]!, 1)} on ${os.cpus().length} CPUs`);
    const rows: LatencyRow[] = [];
    for (const [k, { v, p }] of live) {
      const st = (await p.s.stats()) as StatsJson;
      const runs = samples.get(k)!;
      const per = runs.map(percentiles);
      const tier = st.tiers[v.tier]!;
      rows.push({
        name: v.name,
        tier: v.tier,
        glibcTunables: v.tunables,
        flags: v.flags.map((f) => (f.startsWith(tmp) ? path.relative(tmp, f) : f.includes('unix://') ? '<5 redis unix sockets>' : f)),
        client: { p50: medianOf(per.map((x) => x.p50)), p99: medianOf(per.map((x) => x.p99)), p999: medianOf(per.map((x) => x.p999)), count: runs[0]!.length },
        clientPooled: percentiles(runs.flat()),
        serverRead: st.reads.latencyUs,
        serverNbd: st.nbd?.latency ?? null,
        tierHit: tier.latencyUs,
        reads: st.reads.count,
        tierHits: tier.hits,
        originHits: v.tier === 'origin' ? 0 : (st.tiers['origin']?.hits ?? 0),
      });
    }
    for (const r of rows) log(`serve: ${r.name}: client p50 ${ms(r.client.p50)} ms, p99.9 ${ms(r.client.p999)} ms; tier hit p50 ${ms(r.tierHit.p50)} ms`);

    // 2. Warm sequential copies, sources interleaved run by run.
    nbdkit = spawnNbdkit(tmp, image.file);
    const nbdkitSock = path.join(tmp, 'nbdkit.sock');
    let nbdkitErr = '';
    nbdkit.stderr?.on('data', (b: Buffer) => (nbdkitErr += b.toString()));
    await waitForFile(path.join(tmp, 'nbdkit.pid'), nbdkit, 'nbdkit', () => nbdkitErr);
    const dd = await servers.start('disk-default', ['--cache-dir', diskDefault]);
    const ddT = await servers.start('disk-default', ['--cache-dir', diskDefaultT], true);
    const sources: { name: string; uri: string; pid: number | undefined }[] = [
      { name: 'nbdkit file (extract)', uri: `nbd+unix:///?socket=${nbdkitSock}`, pid: nbdkit.pid },
      { name: 'disk, default --memory-chunks 64', uri: dd.s.info.uri, pid: dd.s.child.pid },
      { name: 'disk, default --memory-chunks 64 +tunables', uri: ddT.s.info.uri, pid: ddT.s.child.pid },
      ...[...live.values()].map(({ v, p }) => ({
        name: v.tier === 'memory' ? `memory (--memory-chunks ${memoryChunks})` : `${v.name} (--memory-chunks 0${v.tier === 'disk' ? '' : ', no disk cache'})`,
        uri: p.s.info.uri,
        pid: p.s.child.pid,
      })),
    ];
    // One untimed copy each: page cache, JIT, Redis connections.
    for (const s of sources) await copyToNull(s.uri);
    const copyRuns = Math.max(settings.runs, MIN_COPY_RUNS);
    const secs = new Map<string, number[]>();
    const cpu1 = await cpuTimes();
    for (let r = 0; r < copyRuns; r++) {
      log(`serve: nbdcopy run ${r + 1}/${copyRuns} of ${sources.length} sources`);
      for (const s of sources) secs.set(s.name, [...(secs.get(s.name) ?? []), await copyToNull(s.uri)]);
    }
    notes.push(`nbdcopy runs: machine CPU ${(await busySince(cpu1)) ?? '?'}% busy (all processes, ours included)`);
    const base = image.bytes / 1e6 / statOf(secs.get(sources[0]!.name)!).median;
    const copyRows: CopyRow[] = [];
    for (const s of sources) {
      const st = statOf(secs.get(s.name)!);
      const mbps = image.bytes / 1e6 / st.median;
      copyRows.push({ name: s.name, seconds: st, mbps: round(mbps, 1), ratio: round(mbps / base, 3), serverPeakRssMiB: await peakRssMiB(s.pid) });
    }
    for (const r of copyRows) log(`serve: ${r.name}: ${r.mbps} MB/s (${r.ratio} of nbdkit)`);
    return { latency: { reads: READS, runs: settings.runs, rows }, copy: { runs: copyRuns, rows: copyRows } };
  } finally {
    await servers.stopAll();
    if (nbdkit) await stopChild(nbdkit);
    await redis?.stopAll();
  }
}

function spawnNbdkit(tmp: string, file: string): ChildProcess {
  return spawn('nbdkit', ['--exit-with-parent', '-f', '-r', '-U', path.join(tmp, 'nbdkit.sock'), '-P', path.join(tmp, 'nbdkit.pid'), 'file', file], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

/** In process: one 512 KiB chunk of the image through the checks serve does on every fetch. */
async function timeOpenChunk(imageFile: string): Promise<ServeBench['openChunkUs']> {
  const plain = Buffer.alloc(CHUNK);
  const fh = await open(imageFile, 'r');
  try {
    await fh.read(plain, 0, CHUNK, 40 * CHUNK);
  } finally {
    await fh.close();
  }
  const salt = { epoch: 0, secret: randomBytes(32) };
  const sealed = sealChunk(plain, salt);
  const ref = { id: sealed.id, key: sealed.key };
  const time = (fn: () => void): { median: number; min: number } => {
    for (let i = 0; i < 20; i++) fn();
    const us: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t0 = process.hrtime.bigint();
      fn();
      us.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
    const st = statOf(us);
    return { median: round(st.median, 0), min: round(st.min, 0) };
  };
  return { nameCheck: time(() => checkChunkName(sealed.ciphertext, sealed.id)), openChunk: time(() => void openChunk(sealed.ciphertext, ref, salt)) };
}

// --- 3: cold start ------------------------------------------------------------------

/** Path `p` (absolute, inside the image) with symlinks resolved inside `root`; undefined if it does not resolve. */
async function resolveIn(root: string, p: string): Promise<string | undefined> {
  let parts = p.split('/').filter((x) => x !== '' && x !== '.');
  const done: string[] = [];
  for (let hops = 0; parts.length > 0; ) {
    const part = parts.shift()!;
    if (part === '..') {
      done.pop();
      continue;
    }
    const at = path.join(root, ...done, part);
    const st = await lstat(at).catch(() => undefined);
    if (st === undefined) return undefined;
    if (st.isSymbolicLink()) {
      if (++hops > 40) return undefined;
      const target = await readlink(at);
      if (target.startsWith('/')) done.length = 0;
      parts = [...target.split('/').filter((x) => x !== '' && x !== '.'), ...parts];
      continue;
    }
    done.push(part);
  }
  return '/' + done.join('/');
}

/** Paths of successful execve/open/openat calls made after chroot() in an `strace -f -e trace=%file` log. */
function openedAfterChroot(logText: string): string[] {
  const pending = new Map<string, string>();
  const out: string[] = [];
  let chrooted = false;
  for (const raw of logText.split('\n')) {
    const m = /^(\d+)\s+(.*)$/.exec(raw);
    if (!m) continue;
    const pid = m[1]!;
    let line = m[2]!;
    if (line.endsWith('<unfinished ...>')) {
      pending.set(pid, line.slice(0, -'<unfinished ...>'.length));
      continue;
    }
    const resumed = /^<\.\.\. \w+ resumed>(.*)$/.exec(line);
    if (resumed) {
      line = (pending.get(pid) ?? '') + resumed[1]!;
      pending.delete(pid);
    }
    if (/^chroot\(/.test(line) && /=\s+0\s*$/.test(line)) {
      chrooted = true;
      continue;
    }
    if (!chrooted) continue;
    const call = /^(execve|execveat|open|openat|openat2|creat)\((.*)\)\s+=\s+(-?\d+)/.exec(line);
    if (!call || Number(call[3]) < 0) continue;
    const q = /"((?:[^"\\]|\\.)*)"/.exec(call[2]!);
    if (!q) continue;
    const p = q[1]!.replace(/\\(.)/g, '$1');
    if (p.startsWith('/')) out.push(p);
  }
  return out;
}

async function blockSize(imageFile: string): Promise<number> {
  const fh = await open(imageFile, 'r');
  try {
    const b = Buffer.alloc(4);
    await fh.read(b, 0, 4, 1024 + 24); // s_log_block_size
    return 1024 << b.readUInt32LE(0);
  } finally {
    await fh.close();
  }
}

async function coldFloor(imageFile: string, tmp: string): Promise<NonNullable<ColdStart['floor']>> {
  const logFile = path.join(tmp, 'strace.log');
  const files = await withLoopMount(imageFile, async (root) => {
    await run('strace', ['-f', '-e', 'trace=%file', '-o', logFile, 'chroot', root, ...PYTHON], { env: CHROOT_ENV });
    const seen = new Map<string, number>();
    for (const p of openedAfterChroot(await readFile(logFile, 'utf8'))) {
      const real = await resolveIn(root, p);
      if (real === undefined || seen.has(real)) continue;
      const st = await lstat(path.join(root, real));
      if (st.isFile()) seen.set(real, st.size);
    }
    return seen;
  });
  // The chunks holding those files' data blocks (debugfs on the image file, no mount).
  const bs = await blockSize(imageFile);
  const chunks = new Set<number>();
  for (const p of files.keys()) {
    const out = (await run('debugfs', ['-R', `blocks "${p}"`, imageFile])).stdout;
    for (const b of out.trim().split(/\s+/).filter((x) => /^\d+$/.test(x))) chunks.add(Math.floor((Number(b) * bs) / CHUNK));
  }
  const list = [...files].map(([p, bytes]) => ({ path: p, bytes }));
  return { files: list.length, bytes: list.reduce((n, f) => n + f.bytes, 0), dataChunks: chunks.size, list };
}

/** A fresh cache; serve; nbdfuse; loop mount; python in a chroot; tear down; the stats. */
async function coldRun(tmp: string, servers: Servers, n: number, opts: { prefetch?: string; recordTrace?: string; tunables?: boolean }): Promise<ColdRun> {
  const dir = path.join(tmp, `cold-${n}`);
  const fuseDir = path.join(dir, 'fuse');
  const mnt = path.join(dir, 'mnt');
  await mkdir(fuseDir, { recursive: true });
  await mkdir(mnt, { recursive: true });
  const pidFile = path.join(dir, 'nbdfuse.pid');
  const t0 = nowS();
  const p = await servers.start(`cold${opts.prefetch ? '-prefetch' : ''}`, [
    '--cache-dir',
    path.join(dir, 'cache'),
    ...(opts.recordTrace !== undefined ? ['--record-trace', opts.recordTrace] : []),
    ...(opts.prefetch !== undefined ? ['--prefetch', opts.prefetch] : []),
  ], opts.tunables === true);
  const tServe = nowS();
  const fuse = spawn('nbdfuse', ['-r', '-P', pidFile, fuseDir, p.s.info.uri], { stdio: ['ignore', 'ignore', 'pipe'] });
  let fuseErr = '';
  fuse.stderr.on('data', (b: Buffer) => (fuseErr += b.toString()));
  let mounted = false;
  let fused = false;
  try {
    await waitForFile(pidFile, fuse, 'nbdfuse', () => fuseErr);
    fused = true;
    const tFuse = nowS();
    await run('mount', ['-o', 'loop,ro', path.join(fuseDir, 'nbd'), mnt]);
    mounted = true;
    const tMount = nowS();
    await run('chroot', [mnt, ...PYTHON], { env: CHROOT_ENV });
    const tPy = nowS();
    const atExit = (await p.s.stats()) as StatsJson;
    const w = await timed(() => run('chroot', [mnt, ...PYTHON], { env: CHROOT_ENV }));
    await run('umount', [mnt]);
    mounted = false;
    await run('fusermount3', ['-u', fuseDir]);
    fused = false;
    await waitExit(fuse);
    const st = await servers.stop(p);
    const origin = st.tiers['origin']!;
    return {
      prefetch: opts.prefetch !== undefined,
      glibcTunables: opts.tunables === true,
      serveStartS: round(tServe - t0, 3),
      fuseS: round(tFuse - tServe, 3),
      mountS: round(tMount - tFuse, 3),
      pythonS: round(tPy - tMount, 3),
      totalS: round(tPy - t0, 3),
      warmPythonS: round(w.seconds, 3),
      originChunks: origin.hits,
      originBytes: origin.bytes,
      touchedChunks: st.chunks.touched,
      prefetched: st.chunks.prefetched,
      demandOriginChunks: origin.hits - st.chunks.prefetched,
      prefetchDoneAtExit: atExit.prefetch?.done ?? null,
      readP99Us: round(st.reads.latencyUs.p99, 0),
      readMaxUs: round(st.reads.latencyUs.max, 0),
    };
  } finally {
    if (mounted) await run('umount', ['-l', mnt], { allowFail: true });
    if (fused) await run('fusermount3', ['-u', fuseDir], { allowFail: true });
    if (fuse.exitCode === null && fuse.signalCode === null) await stopChild(fuse);
    await servers.stopAll();
    await rm(dir, { recursive: true, force: true });
  }
}

async function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const t = setTimeout(() => {
      child.kill('SIGKILL');
    }, 30_000);
    child.once('close', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

function coldProblem(): string | undefined {
  if (!isRoot()) return 'needs root (loop mounts, chroot)';
  for (const t of ['nbdfuse', 'fusermount3', 'strace', 'chroot', 'mount', 'debugfs']) if (whichSync(t) === undefined) return `needs ${t} (not installed)`;
  if (!existsSync('/dev/fuse')) return 'needs /dev/fuse for nbdfuse';
  return undefined;
}

async function benchCold(tmp: string, servers: Servers, image: { file: string; bytes: number; chunks: number }, notes: string[]): Promise<ColdStart | null> {
  const problem = coldProblem();
  if (problem !== undefined) {
    notes.push(`cold start skipped: ${problem}`);
    log(`serve: cold start skipped, ${problem}`);
    return null;
  }
  log('serve: cold start floor (strace on the extracted image)');
  const floor = await coldFloor(image.file, tmp);
  const runs: ColdRun[] = [];
  let traceChunks = 0;
  const coldRuns = Math.max(settings.runs, MIN_COLD_RUNS);
  const cpu0 = await cpuTimes();
  for (let r = 0; r < coldRuns; r++) {
    const trace = path.join(tmp, `trace-${r}.json`);
    log(`serve: cold start run ${r + 1}/${coldRuns}, no prefetch (recording a trace)`);
    runs.push(await coldRun(tmp, servers, 3 * r, { recordTrace: trace }));
    traceChunks = (JSON.parse(await readFile(trace, 'utf8')) as { indexes: number[] }).indexes.length;
    log(`serve: cold start run ${r + 1}/${coldRuns}, --prefetch the trace (${traceChunks} chunks)`);
    runs.push(await coldRun(tmp, servers, 3 * r + 1, { prefetch: trace }));
    log(`serve: cold start run ${r + 1}/${coldRuns}, no prefetch, GLIBC_TUNABLES`);
    runs.push(await coldRun(tmp, servers, 3 * r + 2, { tunables: true }));
  }
  notes.push(`cold start runs: machine CPU ${(await busySince(cpu0)) ?? '?'}% busy (all processes, ours included)`);
  const summary = (rs: readonly ColdRun[]): ColdSummary => ({
    pythonS: statOf(rs.map((x) => x.pythonS)),
    totalS: statOf(rs.map((x) => x.totalS)),
    originChunks: statOf(rs.map((x) => x.originChunks)),
    originMiB: statOf(rs.map((x) => x.originBytes / MiB)),
    demandOriginChunks: statOf(rs.map((x) => x.demandOriginChunks)),
  });
  const cold: ColdStart = {
    command: PYTHON.join(' '),
    imageBytes: image.bytes,
    imageChunks: image.chunks,
    floor,
    traceChunks,
    runs,
    noPrefetch: summary(runs.filter((x) => !x.prefetch && !x.glibcTunables)),
    withPrefetch: summary(runs.filter((x) => x.prefetch)),
    noPrefetchTunables: summary(runs.filter((x) => x.glibcTunables)),
  };
  log(`serve: cold start: ${cold.noPrefetch.originChunks.median} chunks from the origin; python ${cold.noPrefetch.pythonS.median} s, with prefetch ${cold.withPrefetch.pythonS.median} s`);
  return cold;
}

// --- entry ------------------------------------------------------------------------------

export async function benchServe(): Promise<ServeBench | undefined> {
  const c = corpus();
  if ('missing' in c) {
    log(`serve: skipped, no corpus at ${c.missing}`);
    return undefined;
  }
  for (const t of ['nbdcopy', 'nbdkit']) {
    if (whichSync(t) === undefined) {
      log(`serve: skipped, needs ${t} (not installed)`);
      return undefined;
    }
  }
  const tmp: TmpDir = await tmpDir('bench-serve');
  const notes: string[] = [];
  try {
    const store = path.join(tmp.path, 'store');
    const key = path.join(tmp.path, 'key.json');
    const file = path.join(tmp.path, `${TAG}.ext4`);
    log('serve: converting base and py into a file store, extracting py');
    await cli(['keygen', '-o', key]);
    for (const tag of ['base', TAG]) await cli(['convert', `oci:${c.dir}:${tag}`, '--store', store, '--key-file', key, '--tag', tag]);
    await cli(['extract', TAG, '--store', store, '--key-file', key, '-o', file]);
    const bytes = (await stat(file)).size;
    const image = { file, bytes, chunks: Math.ceil(bytes / CHUNK) };
    const servers = new Servers(tmp.path, [TAG, '--store', store, '--key-file', key]);
    try {
      const openChunkUs = await timeOpenChunk(file);
      const { latency, copy } = await benchReadPath(tmp.path, servers, image, notes);
      const cold = await benchCold(tmp.path, servers, image, notes);
      return { image: { tag: TAG, bytes, chunks: image.chunks, chunkBytes: CHUNK }, latency, openChunkUs, copy, cold, notes };
    } finally {
      await servers.stopAll();
    }
  } finally {
    await tmp.cleanup();
  }
}

// --- tables -------------------------------------------------------------------------------

const ms = (us: number): number => round(us / 1000, 2);

function printLatencyTable(rows: readonly LatencyRow[]): void {
  const mem = rows.find((r) => r.tier === 'memory');
  printTable(`serve: 4 KiB random reads through NBD, one in flight, servers taken in turn read by read (ms; client percentiles: median over runs of ${READS} reads)`, [
    ['server', 'client p50', 'p99', 'p99.9', 'server read p50', 'tier hit p50', 'p99', 'p99.9', 'open+rest p50', 'tier hits/reads', 'paper µs'],
    ...rows.map((r) => [
      r.name,
      ms(r.client.p50),
      ms(r.client.p99),
      ms(r.client.p999),
      ms(r.serverRead.p50),
      ms(r.tierHit.p50),
      ms(r.tierHit.p99),
      ms(r.tierHit.p999),
      r.tier === 'memory' || mem === undefined ? '-' : String(ms(r.client.p50 - r.tierHit.p50 - mem.client.p50)),
      `${r.tierHits}/${r.reads}`,
      PAPER[r.tier],
    ]),
  ]);
  console.log('  tier hit = the fetch alone (stats JSON tiers.X.latencyUs); open+rest = client p50 − tier hit p50 − memory client p50: name checks, decrypt,');
  console.log(`  authenticate, allocations, copies, scheduling. +tunables = serve run with GLIBC_TUNABLES=${GLIBC_MALLOC_TUNABLES}`);
}

function printCopyTable(rows: readonly CopyRow[], bytes: number): void {
  printTable(`serve: warm sequential nbdcopy URI null: of ${round(bytes / 1e6, 1)} MB (median seconds; ratio = MB/s / nbdkit's)`, [
    ['source', 'median s', 'min s', 'MB/s', 'ratio', 'server peak RSS MiB'],
    ...rows.map((r) => [r.name, r.seconds.median, r.seconds.min, r.mbps, r.ratio, r.serverPeakRssMiB ?? NaN]),
  ]);
}

function printColdTables(c: ColdStart): void {
  const mb = (b: number): number => round(b / MiB, 1);
  if (c.floor) {
    printTable(`serve: cold start of \`${c.command}\` in py: what it needs (strace, after chroot)`, [
      ["files opened/exec'd", 'their MiB', 'chunks holding their data', 'image MiB', 'image chunks'],
      [c.floor.files, mb(c.floor.bytes), c.floor.dataChunks, mb(c.imageBytes), c.imageChunks],
    ]);
  }
  const floor = c.floor?.bytes ?? NaN;
  const med = (rs: readonly ColdRun[], f: (r: ColdRun) => number): number => medianOf(rs.map(f));
  const row = (name: string, s: ColdSummary, rs: readonly ColdRun[]): (string | number)[] => [
    name,
    s.originChunks.median,
    s.originMiB.median,
    round((100 * s.originMiB.median * MiB) / c.imageBytes, 1),
    round((s.originMiB.median * MiB) / floor, 1),
    s.demandOriginChunks.median,
    med(rs, (r) => r.serveStartS),
    med(rs, (r) => r.fuseS + r.mountS),
    s.pythonS.median,
    s.pythonS.min,
    s.totalS.median,
  ];
  const runs = c.runs.filter((r) => !r.prefetch && !r.glibcTunables).length;
  printTable(`serve: cold start through nbdfuse + loop mount, fresh cache each run (medians of ${runs} runs; trace ${c.traceChunks} chunks)`, [
    ['', 'origin chunks', 'origin MiB', '% of image', '× files MiB', 'demand origin chunks', 'serve up s', 'fuse+mount s', 'python s', 'min s', 'total s'],
    row('no prefetch', c.noPrefetch, c.runs.filter((r) => !r.prefetch && !r.glibcTunables)),
    row('--prefetch trace', c.withPrefetch, c.runs.filter((r) => r.prefetch)),
    row('no prefetch +tunables', c.noPrefetchTunables, c.runs.filter((r) => r.glibcTunables)),
  ]);
  const warm = medianOf(c.runs.map((r) => r.warmPythonS));
  console.log(`  total = serve spawned → python exited (node start, manifest, nbdfuse, mount, python); the mount's own reads are in "origin chunks"`);
  console.log(`  python again on the same mount (page cache warm): ${warm} s`);
}

export function printServeTables(b: ServeBench): void {
  if (b.latency) {
    printLatencyTable(b.latency.rows);
    const o = b.openChunkUs;
    console.log(
      `  per 512 KiB chunk in process, median (fastest): name check (BLAKE3) ${o.nameCheck.median} (${o.nameCheck.min}) µs, ` +
        `openChunk = name check + AES-256-CTR + keyed BLAKE3 ${o.openChunk.median} (${o.openChunk.min}) µs`,
    );
  }
  if (b.copy) printCopyTable(b.copy.rows, b.image.bytes);
  if (b.cold) printColdTables(b.cold);
  for (const n of b.notes) console.log(`  note: ${n}`);
}
