/**
 * Flags of the read path (serve, and ls/cat/stat on a published REF): the
 * local disk cache, the shared erasure-coded tier, metrics output.
 */
import { Command, Option } from 'commander';
import { writeFile, rename } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { POLICY_NAMES, type PolicyName } from '../cache/eviction.js';
import { formatMetrics, type MetricsSnapshot } from '../cache/metrics.js';
import { UsageError } from '../errors.js';
import type { ReadPathConfig } from '../serve/published.js';
import type { CliIO } from './io.js';
import { parseChoice, parseSize } from './options.js';

export interface CacheFlags {
  cacheDir?: string;
  /** false with --no-cache */
  cache?: boolean;
  cacheSize?: string;
  cachePolicy?: string;
  sharedCache?: string;
  ec?: string;
  sharedTimeout?: string;
  memoryChunks?: string;
  statsJson?: string;
}

export const DEFAULT_CACHE_SIZE = '4G';

export function defaultCacheDir(env: CliIO['env']): string {
  if (env['CHUNKYARD_CACHE_DIR']) return env['CHUNKYARD_CACHE_DIR'];
  return join(env['XDG_CACHE_HOME'] || join(env['HOME'] || homedir(), '.cache'), 'chunkyard');
}

export function addCacheOptions(cmd: Command): Command {
  return cmd
    .option('--cache-dir <dir>', 'local chunk cache (default: $CHUNKYARD_CACHE_DIR or ~/.cache/chunkyard)')
    .option('--no-cache', 'no local disk cache (memory and shared tiers only)')
    .option('--cache-size <size>', `bytes the local cache may hold (default ${DEFAULT_CACHE_SIZE})`)
    .addOption(new Option('--cache-policy <policy>', 'local cache eviction (default lru2: resists scans)').choices(POLICY_NAMES))
    .option('--shared-cache <urls>', 'shared cache tier: comma-separated Redis nodes (redis://HOST:PORT, unix:///PATH)')
    .option('--ec <k+m>', 'shared tier erasure coding: data+parity shards per chunk (default 4+1)')
    .option('--shared-timeout <ms>', 'shared tier per-node timeout in milliseconds (default 1000)')
    .option('--memory-chunks <n>', 'decrypted chunks kept in memory (default 64)')
    .option('--stats-json <file>', 'write read-path metrics (per tier: hits, misses, bytes, latency) as JSON at exit');
}

export function parseEc(s: string): { k: number; m: number } {
  const m = /^(\d+)\+(\d+)$/.exec(s.trim());
  if (!m) throw new UsageError(`invalid --ec ${JSON.stringify(s)}: want DATA+PARITY like 4+1`);
  return { k: Number(m[1]), m: Number(m[2]) };
}

function parseCount(s: string, what: string, min: number): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`invalid ${what} ${JSON.stringify(s)}: want a whole number ≥ ${min}`);
  return n;
}

/** The read-path configuration the flags ask for. `cacheDirRequired`: serve insists the disk cache can be used. */
export function readPathFrom(flags: CacheFlags, io: CliIO): ReadPathConfig {
  const sharedSet = flags.ec !== undefined || flags.sharedTimeout !== undefined;
  if (sharedSet && flags.sharedCache === undefined) throw new UsageError('--ec and --shared-timeout need --shared-cache');
  const nodes = flags.sharedCache
    ?.split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (nodes !== undefined && nodes.length === 0) throw new UsageError('--shared-cache: no nodes given');
  const ec = flags.ec !== undefined ? parseEc(flags.ec) : undefined;
  return {
    ...(flags.cache !== false
      ? {
          diskCache: {
            dir: flags.cacheDir ?? defaultCacheDir(io.env),
            capacityBytes: parseSize(flags.cacheSize ?? DEFAULT_CACHE_SIZE, '--cache-size'),
            ...(flags.cachePolicy !== undefined ? { policy: parseChoice(flags.cachePolicy, '--cache-policy', POLICY_NAMES) as PolicyName } : {}),
          },
        }
      : {}),
    ...(nodes !== undefined
      ? {
          sharedCache: {
            nodes,
            ...(ec ?? {}),
            ...(flags.sharedTimeout !== undefined ? { timeoutMs: parseCount(flags.sharedTimeout, '--shared-timeout', 1) } : {}),
          },
        }
      : {}),
    ...(flags.memoryChunks !== undefined ? { memoryChunks: parseCount(flags.memoryChunks, '--memory-chunks', 0) } : {}),
  };
}

/** Writes metrics JSON atomically (a reader never sees half a file). */
export async function writeStatsJson(file: string, snapshot: MetricsSnapshot): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(snapshot, null, 2) + '\n');
  await rename(tmp, file);
}

export function printMetrics(io: CliIO, snapshot: MetricsSnapshot): void {
  io.stderr.write(formatMetrics(snapshot).replace(/\n?$/, '\n'));
}
