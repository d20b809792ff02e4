/**
 * Platforms (os/architecture/variant): parsing, normalising and matching, as
 * containerd's `platforms` package does it (see reference/oci.md §3). Every
 * comparison goes through `normalizePlatform` so `x86_64` and `amd64`, or
 * `arm64/v8` and `arm64`, are the same platform.
 */
import { UsageError } from '../errors.js';
import type { Platform } from './source.js';

export const DEFAULT_PLATFORM: Platform = Object.freeze({ os: 'linux', architecture: 'amd64' });

/** containerd's normalizeArch, plus lower-casing and `macos` → `darwin`. */
export function normalizePlatform(p: Platform): Platform {
  let os = p.os.toLowerCase();
  if (os === 'macos') os = 'darwin';
  let arch = p.architecture.toLowerCase();
  let variant = (p.variant ?? '').toLowerCase();
  switch (arch) {
    case 'i386':
      arch = '386';
      variant = '';
      break;
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      arch = 'amd64';
      if (variant === 'v1') variant = '';
      break;
    case 'aarch64':
    case 'arm64':
      arch = 'arm64';
      if (variant === '8' || variant === 'v8') variant = '';
      break;
    case 'armhf':
      arch = 'arm';
      variant = 'v7';
      break;
    case 'armel':
      arch = 'arm';
      variant = 'v6';
      break;
    case 'arm':
      if (variant === '' || variant === '7') variant = 'v7';
      else if (variant === '5' || variant === '6' || variant === '8') variant = `v${variant}`;
      break;
  }
  return variant === '' ? { os, architecture: arch } : { os, architecture: arch, variant };
}

export function formatPlatform(p: Platform): string {
  return p.variant !== undefined && p.variant !== '' ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

/** Both sides are normalised first; the variant must agree after normalisation. */
export function platformMatches(want: Platform, have: Platform): boolean {
  const a = normalizePlatform(want);
  const b = normalizePlatform(have);
  return a.os === b.os && a.architecture === b.architecture && (a.variant ?? '') === (b.variant ?? '');
}

const PART_RE = /^[A-Za-z0-9._-]+$/;

/**
 * Parses `os/arch[/variant]` (as given to `--platform`) into a normalised
 * Platform. Throws UsageError on anything else.
 */
export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || !parts.every((x) => PART_RE.test(x))) {
    throw new UsageError(`invalid platform ${JSON.stringify(s)}: want os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8`);
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return normalizePlatform(variant === undefined ? { os, architecture } : { os, architecture, variant });
}
