import { UsageError } from '../errors.js';

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** "512K", "512KiB", "1M", "4MiB", "524288" → bytes (binary units: sizes of blocks and chunks are powers of two). */
export function parseSize(s: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(s.trim());
  if (!m) throw new UsageError(`invalid ${what} ${JSON.stringify(s)}: want a size like 512K, 1M or 524288`);
  const n = Number(m[1]) * UNITS[m[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(n)) throw new UsageError(`invalid ${what} ${JSON.stringify(s)}: not a whole number of bytes`);
  return n;
}

export function parsePercent(s: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)%?$/.exec(s.trim());
  if (!m) throw new UsageError(`invalid ${what} ${JSON.stringify(s)}: want a percentage like 10 or 10%`);
  return Number(m[1]) / 100;
}

export function parseChoice<T extends string>(s: string, what: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(s)) throw new UsageError(`invalid ${what} ${JSON.stringify(s)}: want one of ${choices.join(', ')}`);
  return s as T;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}
