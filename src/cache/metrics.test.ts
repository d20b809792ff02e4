import assert from 'node:assert/strict';
import { formatMetrics, LatencyHistogram, ReadPathMetrics } from './metrics.js';
import { seededRandom as rng } from './trace-gen.js';


/** The nearest-rank percentile of sorted samples: what the histogram approximates. */
function exactPercentile(sorted: readonly number[], p: number): number {
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}

const PS = [0, 0.1, 1, 10, 25, 50, 75, 90, 99, 99.9, 100];

function checkAgainstExact(samples: number[], label: string): void {
  const h = new LatencyHistogram();
  for (const s of samples) h.record(s);
  const sorted = [...samples].sort((a, b) => a - b);
  assert.equal(h.count, samples.length);
  assert.equal(h.min, sorted[0]);
  assert.equal(h.max, sorted[sorted.length - 1]);
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  assert.ok(Math.abs(h.mean - mean) <= 1e-9 * mean, `${label}: mean`);
  let last = 0;
  for (const p of PS) {
    const want = exactPercentile(sorted, p);
    const got = h.percentile(p);
    // ~5% buckets: the representative is within √1.05 of every value in its bucket.
    assert.ok(Math.abs(got - want) <= 0.05 * want, `${label}: p${p} = ${got}, exact ${want}`);
    assert.ok(got >= last, `${label}: percentiles never decrease (p${p})`);
    last = got;
  }
}

describe('cache/metrics: latency histogram', () => {
  it('matches exact percentiles of log-uniform samples from 1 µs to 10 s within the bucket resolution', () => {
    const r = rng(1);
    checkAgainstExact(Array.from({ length: 20_000 }, () => 10 ** (r() * 7)), 'log-uniform');
  });

  it('matches exact percentiles of a tight cluster with a long tail (a cache hit distribution)', () => {
    const r = rng(2);
    const samples = Array.from({ length: 50_000 }, () => (r() < 0.999 ? 40 + r() * 30 : 2_000 + r() * 200_000));
    checkAgainstExact(samples, 'clustered');
  });

  it('matches exact percentiles of small samples (a handful of values, repeated values)', () => {
    checkAgainstExact([5], 'one');
    checkAgainstExact([7, 7, 7, 7, 900], 'repeats');
    const r = rng(3);
    checkAgainstExact(Array.from({ length: 37 }, () => 1 + r() * 1e6), 'few');
  });

  it('keeps values below 1 µs and above 100 s, with exact min and max', () => {
    const h = new LatencyHistogram();
    h.record(0);
    h.record(0.25);
    h.record(500e6);
    assert.equal(h.count, 3);
    assert.equal(h.percentile(0), 0);
    assert.equal(h.percentile(100), 500e6);
    assert.ok(h.percentile(50) < 1, `p50 ${h.percentile(50)} is in the bucket below 1 µs`);
    assert.equal(new LatencyHistogram().percentile(99), 0, 'empty histogram');
  });

  it('refuses negative or non-finite samples and percentiles outside 0..100', () => {
    const h = new LatencyHistogram();
    assert.throws(() => h.record(-1), RangeError);
    assert.throws(() => h.record(Number.NaN), RangeError);
    assert.throws(() => h.record(Infinity), RangeError);
    assert.throws(() => h.percentile(101), RangeError);
    assert.equal(h.count, 0);
  });
});

describe('cache/metrics: snapshot and text', () => {
  it('orders tiers memory, caches (as registered), origin; counts add up; is plain JSON', () => {
    let t = 0;
    const m = new ReadPathMetrics({ now: () => t });
    m.tier('origin');
    m.tier('disk');
    m.tier('shared');
    m.tier('memory');
    const disk = m.tier('disk');
    t = 1;
    const start = m.nowUs();
    t = 1.25; // 250 µs later
    disk.hit(1000, m.sinceUs(start));
    disk.miss();
    disk.miss('error');
    disk.miss('corrupt');
    disk.fillsDone += 2;
    disk.fillsDropped += 1;
    m.tier('origin').hit(4096, 30_000);
    m.reads.count = 3;
    m.reads.bytes = 12_288;
    m.reads.latency.record(120);
    m.chunks.total = 10;
    const s = m.snapshot();
    assert.deepEqual(Object.keys(s.tiers), ['memory', 'disk', 'shared', 'origin']);
    const d = s.tiers['disk']!;
    assert.equal(d.requests, 4);
    assert.equal(d.hits + d.misses, d.requests);
    assert.equal(d.errors, 1);
    assert.equal(d.corrupt, 1);
    assert.equal(d.bytes, 1000);
    assert.deepEqual(d.fills, { done: 2, failed: 0, dropped: 1 });
    assert.ok(Math.abs(d.latencyUs.p50 - 250) <= 0.05 * 250, `disk p50 ${d.latencyUs.p50}`);
    assert.equal(s.tiers.origin.hits, 1);
    assert.deepEqual(JSON.parse(JSON.stringify(s)), s, 'JSON round trip');
    // A snapshot is a copy: later counts do not change it.
    disk.miss();
    assert.equal(s.tiers['disk']!.requests, 4);
  });

  it('formatMetrics prints a header, one row per tier, reads and chunks', () => {
    const m = new ReadPathMetrics();
    m.tier('memory').hit(524288, 20);
    m.tier('disk').miss();
    m.tier('origin').hit(524288, 36_000);
    m.reads.count = 1;
    m.reads.bytes = 4096;
    m.reads.latency.record(36_500);
    m.chunks.total = 8;
    m.chunks.touched = 1;
    m.chunks.fetched = 1;
    const text = formatMetrics(m.snapshot());
    const lines = text.split('\n');
    assert.match(lines[0]!, /^tier\s+requests\s+hits\s+hit%/);
    assert.match(lines[1]!, /^memory\s+1\s+1\s+100\.0%/);
    assert.match(lines[2]!, /^disk\s+1\s+0\s+0\.0%/);
    assert.match(lines[3]!, /^origin\s+1\s+1\s+100\.0%.*512\.0KiB\s+3[56]\.\d+ms/);
    assert.match(lines[4]!, /^reads: 1 \(4\.0KiB\), latency p50 3[67]\.\d+ms/);
    assert.match(lines[5]!, /^chunks: 1 of 8 read/);
    assert.equal(lines.length, 6);
  });
});
