/**
 * Deterministic synthetic access traces for comparing eviction policies,
 * and a replay that scores a policy on one. Shared by the tests (which check
 * that LRU-2 and S3-FIFO resist scans) and bench/eviction.ts.
 *
 * Two shapes:
 * - `hotAndScans`: a Zipf-popular hot set read over and over, interrupted
 *   by scans of keys never seen before and never read again.
 * - `imageStarts`: what a host's chunk cache sees: starts of images drawn
 *   from a Zipf popularity, each reading its startup chunks (shared base
 *   chunks + its own) in its own fixed order, a few starts interleaved, and
 *   now and then a one-off start of a big image nobody runs again.
 */
import type { EvictionPolicy } from './eviction.js';

export const CHUNK_SIZE = 512 * 1024;

export interface TraceRequest {
  readonly key: string;
  readonly size: number;
}

export interface Trace {
  readonly name: string;
  readonly requests: readonly TraceRequest[];
  /** Distinct keys requested, and the sum of their sizes (the footprint). */
  readonly distinctKeys: number;
  readonly distinctBytes: number;
}

/** A seeded PRNG (mulberry32): uniform in [0, 1), the same sequence for the same seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Draws ranks 0..n-1 with P(i) ∝ 1/(i+1)^s: a cumulative table and a binary search, O(log n) a draw. */
export function zipfSampler(n: number, s: number, random: () => number): () => number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`zipf needs at least one rank, got ${n}`);
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) cdf[i] = sum += 1 / (i + 1) ** s;
  return () => {
    const u = random() * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! > u) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  };
}

/**
 * Chunk sizes: full chunks, and one in `shortEvery` a short one (the last
 * chunk of a file system image), 4 KiB-aligned.
 */
function chunkSizer(random: () => number, chunkSize: number, shortEvery: number): () => number {
  return () => (random() * shortEvery < 1 ? Math.max(4096, Math.floor((random() * chunkSize) / 4096) * 4096) : chunkSize);
}

/** Collects requests and counts distinct keys and bytes. */
class TraceBuilder {
  readonly requests: TraceRequest[] = [];
  readonly #seen = new Set<string>();
  #bytes = 0;

  add(key: string, size: number): void {
    this.requests.push({ key, size });
    if (!this.#seen.has(key)) {
      this.#seen.add(key);
      this.#bytes += size;
    }
  }

  build(name: string): Trace {
    return { name, requests: this.requests, distinctKeys: this.#seen.size, distinctBytes: this.#bytes };
  }
}

export interface HotAndScansOptions {
  readonly seed: number;
  /** Keys in the hot set. */
  readonly hotKeys: number;
  /** Requests to the hot set (scans come on top). */
  readonly hotRequests: number;
  /** Zipf exponent of the hot set's popularity. @default 0.9 */
  readonly zipf?: number;
  /** A scan starts after every this many hot requests; 0: no scans. */
  readonly scanEvery: number;
  /** New keys per scan. */
  readonly scanLength: number;
  readonly chunkSize?: number;
  /** One chunk in this many is short. @default 8 */
  readonly shortEvery?: number;
  readonly name?: string;
}

export function hotAndScans(o: HotAndScansOptions): Trace {
  const random = seededRandom(o.seed);
  const size = chunkSizer(random, o.chunkSize ?? CHUNK_SIZE, o.shortEvery ?? 8);
  const hotSizes = Array.from({ length: o.hotKeys }, size);
  const draw = zipfSampler(o.hotKeys, o.zipf ?? 0.9, random);
  const t = new TraceBuilder();
  let scanned = 0;
  for (let i = 1; i <= o.hotRequests; i++) {
    const rank = draw();
    t.add(`hot${rank}`, hotSizes[rank]!);
    if (o.scanEvery > 0 && i % o.scanEvery === 0) {
      for (let j = 0; j < o.scanLength; j++) t.add(`scan${scanned++}`, size());
    }
  }
  return t.build(o.name ?? (o.scanEvery > 0 ? `hot ${o.hotKeys} + scans of ${o.scanLength}` : `hot ${o.hotKeys}, no scan`));
}

export interface ImageStartsOptions {
  readonly seed: number;
  /** Base images (OS + runtime layers) that app images share. */
  readonly bases: number;
  /** Chunks a start reads from its base image. */
  readonly baseChunks: number;
  readonly images: number;
  /** Each image's own startup chunks are drawn from [min, max]. */
  readonly ownChunks: readonly [number, number];
  /** Image popularity exponent. @default 1.0 */
  readonly zipf?: number;
  /** Total starts of popular images. */
  readonly starts: number;
  /** Starts running at once, their reads interleaved. @default 4 */
  readonly concurrent?: number;
  /** Each chunk of the startup set is skipped by one start with this probability. @default 0.05 */
  readonly skip?: number;
  /** A one-off start after every this many starts; 0: none. */
  readonly oneOffEvery: number;
  /** Chunks a one-off start reads (all new). */
  readonly oneOffChunks: number;
  readonly chunkSize?: number;
  readonly name?: string;
}

export function imageStarts(o: ImageStartsOptions): Trace {
  const random = seededRandom(o.seed);
  const size = chunkSizer(random, o.chunkSize ?? CHUNK_SIZE, 8);
  const chunk = (key: string): TraceRequest => ({ key, size: size() });
  const bases = Array.from({ length: o.bases }, (_, b) => Array.from({ length: o.baseChunks }, (_, i) => chunk(`b${b}.${i}`)));
  // Each image: its base's chunks and its own, in a fixed order of its own (a start reads the same things the same way).
  const images = Array.from({ length: o.images }, (_, m) => {
    const [min, max] = o.ownChunks;
    const own = Array.from({ length: min + Math.floor(random() * (max - min + 1)) }, (_, i) => chunk(`i${m}.${i}`));
    const set = [...bases[m % o.bases]!, ...own];
    for (let i = set.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [set[i], set[j]] = [set[j]!, set[i]!];
    }
    return set;
  });
  const pick = zipfSampler(o.images, o.zipf ?? 1.0, random);
  const skip = o.skip ?? 0.05;
  const t = new TraceBuilder();
  let oneOffs = 0;
  // Running starts: each a list of reads and how far it has got.
  const running: { reads: readonly TraceRequest[]; at: number }[] = [];
  const startRun = (reads: readonly TraceRequest[]): void => {
    running.push({ reads: reads.filter(() => random() >= skip), at: 0 });
  };
  for (let s = 1; s <= o.starts || running.length > 0; ) {
    while (running.length < (o.concurrent ?? 4) && s <= o.starts) {
      startRun(images[pick()]!);
      if (o.oneOffEvery > 0 && s % o.oneOffEvery === 0) {
        const id = oneOffs++;
        running.push({ reads: Array.from({ length: o.oneOffChunks }, (_, i) => chunk(`once${id}.${i}`)), at: 0 });
      }
      s++;
    }
    // One read from a random running start.
    const k = Math.floor(random() * running.length);
    const r = running[k]!;
    const req = r.reads[r.at++];
    if (req) t.add(req.key, req.size);
    if (r.at >= r.reads.length) running.splice(k, 1);
  }
  return t.build(o.name ?? `${o.images} images, ${o.starts} starts, one-off ${o.oneOffChunks} every ${o.oneOffEvery}`);
}

export interface ReplayResult {
  readonly requests: number;
  readonly hits: number;
  readonly bytes: number;
  readonly hitBytes: number;
  readonly evictions: number;
}

/** Runs `trace` through `policy`: a held key is a hit, any other is admitted. */
export function replay(policy: EvictionPolicy, requests: readonly TraceRequest[]): ReplayResult {
  let hits = 0;
  let bytes = 0;
  let hitBytes = 0;
  let evictions = 0;
  for (const { key, size } of requests) {
    bytes += size;
    if (policy.has(key)) {
      policy.hit(key);
      hits++;
      hitBytes += size;
    } else {
      evictions += policy.admit(key, size).length;
    }
  }
  return { requests: requests.length, hits, bytes, hitBytes, evictions };
}
