/**
 * Counters for the read path, per tier (memory L1, disk, shared, origin),
 * plus the reads a block view served and the chunks it touched. The paper
 * judges a cache by its hit shares and by each tier's latency tail (local
 * < 100 µs, AZ cache 550 µs median / 3.7 ms p99.9, S3 36 ms / 175 ms), so
 * each tier keeps a latency histogram fine enough to read a p99.9 from.
 *
 * Plain counters and arrays, no timers or globals: the owner (a CLI command)
 * decides when to print a snapshot (on exit, on SIGUSR1).
 */

// --- latency histogram ----------------------------------------------------------

/** Bucket growth factor: a value is known to within √1.05 ≈ 2.5% of its bucket's representative. */
const RATIO = 1.05;
const LN_RATIO = Math.log(RATIO);
/** 1 µs .. 100 s: below goes to the first bucket, above to the last. */
const MIN_US = 1;
const MAX_US = 100e6;
/** Log buckets between MIN and MAX, plus one below and one above. */
const LOG_BUCKETS = Math.ceil(Math.log(MAX_US / MIN_US) / LN_RATIO);

/**
 * Log-spaced latency histogram in microseconds (HDR-like, ~5% buckets from
 * 1 µs to 100 s: 380 counters, whatever the number of samples). Exact count,
 * sum, min and max ride along; percentiles are read from the buckets and
 * clamped to [min, max], so p0 and p100 are exact.
 */
export class LatencyHistogram {
  readonly #buckets = new Float64Array(LOG_BUCKETS + 2);
  #count = 0;
  #sum = 0;
  #min = Infinity;
  #max = -Infinity;

  /** Adds one sample (µs). Negative or non-finite samples are a caller bug. */
  record(us: number): void {
    if (!(us >= 0) || !Number.isFinite(us)) throw new RangeError(`Cannot record a latency of ${us} µs: want a finite number ≥ 0`);
    this.#buckets[bucketOf(us)]! += 1;
    this.#count++;
    this.#sum += us;
    if (us < this.#min) this.#min = us;
    if (us > this.#max) this.#max = us;
  }

  get count(): number {
    return this.#count;
  }

  /** Mean in µs (0 when empty). */
  get mean(): number {
    return this.#count === 0 ? 0 : this.#sum / this.#count;
  }

  get min(): number {
    return this.#count === 0 ? 0 : this.#min;
  }

  get max(): number {
    return this.#count === 0 ? 0 : this.#max;
  }

  /**
   * The nearest-rank `p`th percentile (0 ≤ p ≤ 100) in µs, to within the
   * bucket resolution; 0 when there are no samples.
   */
  percentile(p: number): number {
    if (!(p >= 0 && p <= 100)) throw new RangeError(`Cannot take percentile ${p}: want 0 to 100`);
    if (this.#count === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * this.#count));
    if (rank === 1) return this.#min;
    if (rank >= this.#count) return this.#max;
    let seen = 0;
    for (let i = 0; i < this.#buckets.length; i++) {
      seen += this.#buckets[i]!;
      if (seen >= rank) return Math.min(this.#max, Math.max(this.#min, representative(i)));
    }
    return this.#max;
  }
}

function bucketOf(us: number): number {
  if (us < MIN_US) return 0;
  if (us >= MAX_US) return LOG_BUCKETS + 1;
  // Guard the edge where rounding in log() would name the bucket above MAX.
  return Math.min(LOG_BUCKETS, 1 + Math.floor(Math.log(us / MIN_US) / LN_RATIO));
}

/** The geometric middle of bucket i: at most √RATIO away from anything in it. */
function representative(i: number): number {
  if (i === 0) return MIN_US / 2;
  if (i === LOG_BUCKETS + 1) return MAX_US;
  const lo = MIN_US * RATIO ** (i - 1);
  return lo * Math.sqrt(RATIO);
}

// --- counters -------------------------------------------------------------------------

export interface LatencySnapshot {
  readonly count: number;
  readonly mean: number;
  readonly min: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

export function latencySnapshot(h: LatencyHistogram): LatencySnapshot {
  return { count: h.count, mean: h.mean, min: h.min, p50: h.percentile(50), p90: h.percentile(90), p99: h.percentile(99), p999: h.percentile(99.9), max: h.max };
}

export interface TierSnapshot {
  /** Lookups asked of the tier; always hits + misses. */
  readonly requests: number;
  readonly hits: number;
  /** Every request that gave no usable chunk: absent, failed, corrupt or abandoned. */
  readonly misses: number;
  /** Misses because the tier failed (threw). */
  readonly errors: number;
  /** Misses because the entry did not match its name (and was dropped). */
  readonly corrupt: number;
  /** Misses because every reader waiting for it left (aborted). */
  readonly aborted: number;
  /** Bytes served by hits. */
  readonly bytes: number;
  /** Copies put into this tier after a hit below it: done, failed, and not tried because too many were pending. */
  readonly fills: { readonly done: number; readonly failed: number; readonly dropped: number };
  /** Latency of hits, µs (the time a reader waits when this tier has the chunk). */
  readonly latencyUs: LatencySnapshot;
}

/** One tier's counters. The fetcher and the view update them; snapshot() copies them out. */
export class TierMetrics {
  requests = 0;
  hits = 0;
  misses = 0;
  errors = 0;
  corrupt = 0;
  aborted = 0;
  bytes = 0;
  fillsDone = 0;
  fillsFailed = 0;
  fillsDropped = 0;
  readonly latency = new LatencyHistogram();

  hit(bytes: number, us: number): void {
    this.requests++;
    this.hits++;
    this.bytes += bytes;
    this.latency.record(us);
  }

  /** A miss; `why` says which kind (plain absent when omitted). */
  miss(why?: 'error' | 'corrupt' | 'aborted'): void {
    this.requests++;
    this.misses++;
    if (why === 'error') this.errors++;
    else if (why === 'corrupt') this.corrupt++;
    else if (why === 'aborted') this.aborted++;
  }

  snapshot(): TierSnapshot {
    return {
      requests: this.requests,
      hits: this.hits,
      misses: this.misses,
      errors: this.errors,
      corrupt: this.corrupt,
      aborted: this.aborted,
      bytes: this.bytes,
      fills: { done: this.fillsDone, failed: this.fillsFailed, dropped: this.fillsDropped },
      latencyUs: latencySnapshot(this.latency),
    };
  }
}

export interface ReadsSnapshot {
  /** read() calls that returned. */
  readonly count: number;
  readonly bytes: number;
  /** read() calls that failed (aborts included). */
  readonly errors: number;
  /** Whole read() latency, µs: what a block-device client waits. */
  readonly latencyUs: LatencySnapshot;
}

export interface ChunksSnapshot {
  /** Chunks in the image, holes included. */
  readonly total: number;
  readonly holes: number;
  /** Fetches the view asked of the fetcher (a chunk evicted from memory and read again counts again). */
  readonly fetched: number;
  /** Chunks decrypted and authenticated. */
  readonly decrypted: number;
  /** Distinct stored chunks read by demand reads. */
  readonly touched: number;
  /** Chunks warmed by prefetch (fetched on behalf of a prefetch). */
  readonly prefetched: number;
}

export interface MetricsSnapshot {
  /** By tier name: `memory` first, then the cache tiers fastest first, `origin` last. */
  readonly tiers: { readonly origin: TierSnapshot } & { readonly [name: string]: TierSnapshot | undefined };
  readonly reads: ReadsSnapshot;
  readonly chunks: ChunksSnapshot;
}

export interface ReadPathMetricsOptions {
  /** A monotonic clock in milliseconds (fractions allowed). @default performance.now */
  readonly now?: () => number;
}

/**
 * Everything one read path counts. Shared by a TieredFetcher (its tiers and
 * the origin) and the ChunkView(s) over it (`memory`, reads, chunks).
 */
export class ReadPathMetrics {
  readonly #tiers = new Map<string, TierMetrics>();
  readonly #now: () => number;
  readonly reads = { count: 0, bytes: 0, errors: 0, latency: new LatencyHistogram() };
  readonly chunks = { total: 0, holes: 0, fetched: 0, decrypted: 0, touched: 0, prefetched: 0 };

  constructor(options: ReadPathMetricsOptions = {}) {
    this.#now = options.now ?? (() => performance.now());
  }

  /** The current time in µs, for latencies: `metrics.sinceUs(metrics.nowUs())`. */
  nowUs(): number {
    return this.#now() * 1000;
  }

  /** µs elapsed since `startUs` (never negative). */
  sinceUs(startUs: number): number {
    return Math.max(0, this.nowUs() - startUs);
  }

  /** The counters of tier `name` (made on first use). */
  tier(name: string): TierMetrics {
    let t = this.#tiers.get(name);
    if (t === undefined) {
      t = new TierMetrics();
      this.#tiers.set(name, t);
    }
    return t;
  }

  /** A plain, JSON-able copy of every counter. */
  snapshot(): MetricsSnapshot {
    const names = [...this.#tiers.keys()];
    const ordered = [...names.filter((n) => n === 'memory'), ...names.filter((n) => n !== 'memory' && n !== 'origin'), 'origin'];
    const tiers: Record<string, TierSnapshot> = {};
    for (const n of ordered) tiers[n] = this.tier(n).snapshot();
    return {
      tiers: tiers as MetricsSnapshot['tiers'],
      reads: { count: this.reads.count, bytes: this.reads.bytes, errors: this.reads.errors, latencyUs: latencySnapshot(this.reads.latency) },
      chunks: { ...this.chunks },
    };
  }
}

// --- text -----------------------------------------------------------------------------

/** `12µs`, `3.4ms`, `1.25s`. */
export function formatMicros(us: number): string {
  if (us < 1000) return `${us < 10 ? us.toFixed(1) : Math.round(us)}µs`;
  if (us < 1e6) return `${(us / 1000).toFixed(us < 1e4 ? 2 : 1)}ms`;
  return `${(us / 1e6).toFixed(2)}s`;
}

/** `512B`, `3.5KiB`, `1.2GiB`. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v}B` : `${v.toFixed(1)}${units[u]}`;
}

function pct(part: number, whole: number): string {
  return whole === 0 ? '-' : `${((100 * part) / whole).toFixed(1)}%`;
}

/**
 * A few lines for people: one table row per tier (requests, hit share, the
 * kinds of miss, bytes, hit latency p50/p99/p99.9), then reads and chunks.
 */
export function formatMetrics(s: MetricsSnapshot): string {
  const header = ['tier', 'requests', 'hits', 'hit%', 'errors', 'corrupt', 'bytes', 'p50', 'p99', 'p99.9', 'fills'];
  const rows: string[][] = [header];
  for (const [name, t] of Object.entries(s.tiers)) {
    if (t === undefined) continue;
    const l = t.latencyUs;
    const fills = name === 'origin' || name === 'memory' ? '-' : `${t.fills.done}${t.fills.failed + t.fills.dropped > 0 ? ` (${t.fills.failed} failed, ${t.fills.dropped} dropped)` : ''}`;
    rows.push([
      name,
      String(t.requests),
      String(t.hits),
      pct(t.hits, t.requests),
      String(t.errors),
      String(t.corrupt),
      formatBytes(t.bytes),
      l.count === 0 ? '-' : formatMicros(l.p50),
      l.count === 0 ? '-' : formatMicros(l.p99),
      l.count === 0 ? '-' : formatMicros(l.p999),
      fills,
    ]);
  }
  const widths = header.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const lines = rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd());
  const r = s.reads;
  const rl = r.latencyUs;
  lines.push(
    `reads: ${r.count} (${formatBytes(r.bytes)})${r.errors > 0 ? `, ${r.errors} failed` : ''}` +
      (rl.count === 0 ? '' : `, latency p50 ${formatMicros(rl.p50)} p99 ${formatMicros(rl.p99)} p99.9 ${formatMicros(rl.p999)} max ${formatMicros(rl.max)}`),
  );
  const c = s.chunks;
  lines.push(`chunks: ${c.touched} of ${c.total} read (${c.holes} holes), ${c.fetched} fetched, ${c.decrypted} decrypted, ${c.prefetched} prefetched`);
  return lines.join('\n');
}
