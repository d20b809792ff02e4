/**
 * One place that turns a store URL into a Store (containers/image's
 * alltransports: split the scheme, hand the rest to that backend).
 */
import { fileURLToPath } from 'node:url';
import type { S3ClientConfig } from '@aws-sdk/client-s3';
import { throwIfAborted, UsageError } from '../errors.js';
import { FileStore } from './file.js';
import type { Store } from './store.js';

export interface OpenStoreOptions {
  /** s3:// only: an S3-compatible server. */
  readonly endpoint?: string;
  /** s3:// only. */
  readonly region?: string;
  /** s3:// only. @default true with an endpoint */
  readonly forcePathStyle?: boolean;
  /** s3:// only: extra S3Client config, applied last (server quirks, explicit credentials). */
  readonly s3ClientConfig?: S3ClientConfig;
  /** s3:// only: keys per LIST request. @default 1000 */
  readonly listPageSize?: number;
  readonly signal?: AbortSignal;
}

export const STORE_SCHEMES = ['file://DIR', 'a directory path', 's3://BUCKET/PREFIX'] as const;

const SCHEME_RE = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;

/** Opens `file://DIR`, a plain directory path, or `s3://BUCKET/PREFIX`. */
export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<Store> {
  throwIfAborted(options.signal);
  const scheme = SCHEME_RE.exec(url)?.[1]?.toLowerCase();
  if (scheme === 's3') {
    const { signal: _signal, ...s3 } = options;
    // Loaded on demand: the AWS SDK costs ~0.2 s to import, a fifth of a
    // small build, and most runs use a file store.
    const { S3Store } = await import('./s3.js');
    return S3Store.open(url, s3);
  }
  const s3Only = (['endpoint', 'region', 'forcePathStyle', 's3ClientConfig', 'listPageSize'] as const).filter((k) => options[k] !== undefined);
  if (scheme === undefined || scheme === 'file') {
    if (s3Only.length > 0) throw new UsageError(`${s3Only.join(', ')} only apply to s3:// stores, not ${url}`);
    return FileStore.open(scheme === 'file' ? fileUrlPath(url) : url);
  }
  throw new UsageError(`unsupported store ${JSON.stringify(url)}: use ${STORE_SCHEMES.join(', ')}`);
}

/** `file:///abs`, `file://localhost/abs` → /abs; `file://rel/dir` (not a real URL, but what people type) → rel/dir. */
function fileUrlPath(url: string): string {
  const rest = url.slice('file://'.length);
  if (rest.startsWith('/') || rest.startsWith('localhost/')) {
    try {
      return fileURLToPath(url);
    } catch (e) {
      throw new UsageError(`invalid file URL ${JSON.stringify(url)}: ${(e as Error).message}`);
    }
  }
  if (rest === '') throw new UsageError(`invalid file URL ${JSON.stringify(url)}: want file://DIR`);
  return rest;
}
