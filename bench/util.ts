/**
 * Shared pieces of the benchmarks: repeated timing, child processes under
 * /usr/bin/time (wall seconds, peak RSS), chunk hashing of an image file,
 * tables and the results file. Benchmarks report numbers; they never assert.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { open, readFile, writeFile, mkdir, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot, whichSync } from '../src/testing/tools.js';

export const MiB = 1024 * 1024;

/** How many times each measurement is repeated (`--runs`), and whether `build` times the naive pipeline (`--no-naive` skips it). */
export const settings = { runs: 3, naive: true };

export function log(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

// --- statistics ---------------------------------------------------------------

export interface Stat {
  readonly median: number;
  readonly min: number;
  readonly samples: readonly number[];
}

export function stat(samples: readonly number[]): Stat {
  const s = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  const median = s.length === 0 ? NaN : s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median: round(median, 3), min: round(s[0] ?? NaN, 3), samples: samples.map((x) => round(x, 3)) };
}

export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export async function timed<T>(fn: () => Promise<T>): Promise<{ seconds: number; value: T }> {
  const t0 = process.hrtime.bigint();
  const value = await fn();
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, value };
}

// --- child processes ----------------------------------------------------------

export interface ChildResult {
  /** Wall seconds, measured here around the whole child. */
  readonly seconds: number;
  /** Peak resident set of the child in KiB (GNU time %M, or VmHWM polled from /proc). */
  readonly peakKiB: number;
  readonly stdout: string;
}

/**
 * Runs `cmd args` and measures wall time and peak RSS. Uses `/usr/bin/time -f
 * %M` (apt package `time`) when present; else polls /proc/PID/status VmHWM,
 * which can miss a short final peak, so the RSS is then a lower bound.
 * Rejects on a non-zero exit with the tail of stderr.
 */
export async function timeChild(cmd: string, args: readonly string[]): Promise<ChildResult> {
  const gnuTime = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;
  const rssFile = path.join(os.tmpdir(), `chunkyard-bench-time-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const argv = gnuTime ? ['-f', '%e %M', '-o', rssFile, cmd, ...args] : [...args];
  const t0 = process.hrtime.bigint();
  const child = spawn(gnuTime ?? cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  let polledKiB = 0;
  const poll = gnuTime
    ? undefined
    : setInterval(() => {
        readFile(`/proc/${child.pid}/status`, 'utf8')
          .then((s) => {
            const m = /VmHWM:\s+(\d+) kB/.exec(s);
            if (m) polledKiB = Math.max(polledKiB, Number(m[1]));
          })
          .catch(() => {});
      }, 20);
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c) => resolve(c ?? 128));
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (poll) clearInterval(poll);
  let peakKiB = polledKiB;
  if (gnuTime) {
    const text = await readFile(rssFile, 'utf8').catch(() => '');
    await rm(rssFile, { force: true });
    // The last line holds "%e %M"; earlier lines may say "Command exited with non-zero status".
    const last = text.trim().split('\n').pop() ?? '';
    peakKiB = Number(last.split(' ')[1] ?? NaN);
  }
  if (code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited with ${code}: ${Buffer.concat(err).toString('utf8').trim().slice(-2000)}`);
  }
  return { seconds, peakKiB, stdout: Buffer.concat(out).toString('utf8') };
}

/** Runs a command with its stdout sent to /dev/null (for decompression floors); resolves with wall seconds. */
export async function timeToNull(cmd: string, args: readonly string[]): Promise<number> {
  const devnull = await open('/dev/null', 'w');
  try {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { stdio: ['ignore', devnull.fd, 'pipe'] });
    const err: Buffer[] = [];
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    const code = await new Promise<number>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (c) => resolve(c ?? 128));
    });
    if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${code}: ${Buffer.concat(err).toString('utf8').trim()}`);
    return Number(process.hrtime.bigint() - t0) / 1e9;
  } finally {
    await devnull.close();
  }
}

export function have(tool: string): boolean {
  return whichSync(tool) !== undefined;
}

/** `node bin/chunkyard.js` as a [cmd, args] pair, so it can run under /usr/bin/time. */
export function chunkyardCmd(...args: string[]): [string, string[]] {
  return [process.execPath, [path.join(repoRoot(), 'bin', 'chunkyard.js'), ...args]];
}

// --- chunks ---------------------------------------------------------------------

export interface ChunkSet {
  readonly chunkSize: number;
  /** sha256 hex of each distinct non-zero chunk → its length (the last chunk may be short). */
  readonly chunks: Map<string, number>;
  readonly totalChunks: number;
  readonly zeroChunks: number;
}

/** Cuts `file` into fixed `chunkSize` chunks, drops all-zero ones and hashes the rest. Streams: one chunk in memory. */
export async function hashChunks(file: string, chunkSize: number): Promise<ChunkSet> {
  const fh = await open(file, 'r');
  const buf = Buffer.allocUnsafe(chunkSize);
  const chunks = new Map<string, number>();
  let totalChunks = 0;
  let zeroChunks = 0;
  try {
    for (let pos = 0; ; ) {
      let n = 0;
      while (n < chunkSize) {
        const { bytesRead } = await fh.read(buf, n, chunkSize - n, pos + n);
        if (bytesRead === 0) break;
        n += bytesRead;
      }
      if (n === 0) break;
      pos += n;
      totalChunks++;
      const chunk = buf.subarray(0, n);
      if (isZero(chunk)) zeroChunks++;
      else chunks.set(createHash('sha256').update(chunk).digest('hex'), n);
      if (n < chunkSize) break;
    }
  } finally {
    await fh.close();
  }
  return { chunkSize, chunks, totalChunks, zeroChunks };
}

const ZEROS = Buffer.alloc(64 * 1024);

function isZero(b: Buffer): boolean {
  for (let off = 0; off < b.length; off += ZEROS.length) {
    const piece = b.subarray(off, Math.min(b.length, off + ZEROS.length));
    if (!piece.equals(ZEROS.subarray(0, piece.length))) return false;
  }
  return true;
}

/** Chunks of `child` not in `parent`, and their bytes: what `child` adds to a store already holding `parent`. */
export function newChunks(parent: ChunkSet, child: ChunkSet): { chunks: number; bytes: number } {
  let chunks = 0;
  let bytes = 0;
  for (const [h, n] of child.chunks) {
    if (parent.chunks.has(h)) continue;
    chunks++;
    bytes += n;
  }
  return { chunks, bytes };
}

export function chunkBytes(s: ChunkSet): number {
  let n = 0;
  for (const len of s.chunks.values()) n += len;
  return n;
}

// --- output ---------------------------------------------------------------------

/** Prints rows as an aligned text table (first row is the header; numbers right-aligned). */
export function printTable(title: string, rows: readonly (readonly (string | number)[])[]): void {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)));
  const widths: number[] = [];
  for (const r of cells) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  const numeric = (rows[1] ?? []).map((c) => typeof c === 'number');
  console.log(`\n${title}`);
  cells.forEach((r, ri) => {
    console.log(r.map((c, i) => (numeric[i] && ri > 0 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd());
    if (ri === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  });
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return '-';
  if (Number.isInteger(x)) return String(x);
  return Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2);
}

/** bench/results/NAME.json (`build` holds build, big and dedup; `convert` the convert benchmark). */
export function resultsFile(name = 'build'): string {
  return path.join(repoRoot(), 'bench', 'results', `${name}.json`);
}

/** Merges `sections` into bench/results/NAME.json (sections not run this time keep their last values). */
export async function saveResults(sections: Record<string, unknown>, name = 'build'): Promise<string> {
  const file = resultsFile(name);
  await mkdir(path.dirname(file), { recursive: true });
  const old = await loadResults(name);
  const machine = { cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? '?', node: process.version, memMiB: Math.round(os.totalmem() / MiB) };
  const merged = { ...old, ...sections, machine, runs: settings.runs, updated: new Date().toISOString() };
  await writeFile(file, JSON.stringify(merged, null, 2) + '\n');
  return file;
}

export async function loadResults(name = 'build'): Promise<Record<string, unknown>> {
  try {
    return JSON.parse(await readFile(resultsFile(name), 'utf8')) as Record<string, unknown>;
  } catch {
    return {};
  }
}
