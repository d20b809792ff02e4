/**
 * The store contract. Interfaces grow by capability (desync's Store ⊂
 * WriteStore): code asks for the least it needs — a fetcher a ChunkReader,
 * an upload a ChunkWriter — so tiers and wrappers only implement what they
 * serve. file:// and s3:// implement all of it (`Store`), as ObjectStores
 * (object-store.ts) over a backend each, and both pass conformance.ts. The
 * object layout is in layout.ts.
 *
 * A missing chunk, manifest or tag is an answer (`undefined` / `false`), not a
 * failure; failures are StoreError (or NotFoundError for a missing bucket,
 * InterruptedError when the signal fires).
 */
import type { Digest } from '../source/digest.js';
import type { ChunkId } from './ids.js';

export type { ChunkId, TagName } from './ids.js';

export interface OpOptions {
  readonly signal?: AbortSignal;
}

export interface ChunkReader {
  /** The stored bytes, whole, or undefined when the store has no such chunk. Never a partial object. */
  get(id: ChunkId, options?: OpOptions): Promise<Buffer | undefined>;
  has(id: ChunkId, options?: OpOptions): Promise<boolean>;
}

export type PutOutcome = 'uploaded' | 'present';

export interface PutOptions extends OpOptions {
  /**
   * 'exists' (default): look first, and answer 'present' without writing when
   * the chunk is there. 'none': the caller has just found it missing
   * (findMissing) and the look would double the requests; write straight
   * away. Names are content hashes, so a racing writer of the same name writes
   * the same bytes and either write may win.
   * @default 'exists'
   */
  readonly check?: 'exists' | 'none';
}

export interface ChunkWriter extends ChunkReader {
  /** Stores `data` under `id`; atomic (no reader ever sees part of it). The caller vouches that `id` names `data`. */
  put(id: ChunkId, data: Uint8Array, options?: PutOptions): Promise<PutOutcome>;
  /**
   * Makes every put that has resolved so far durable (file: fsync the
   * directories renamed into; S3: nothing, a PUT is durable when it returns).
   * publish() calls it before writing a manifest.
   */
  sync(options?: OpOptions): Promise<void>;
}

export interface ListOptions extends OpOptions {
  /** List only ids greater than this one. */
  readonly startAfter?: ChunkId;
}

/** One LIST request's worth of chunk ids. */
export interface ChunkPage {
  /** Ascending; every page's ids come after the previous page's. */
  readonly ids: readonly ChunkId[];
  /** Whether the listing goes on (asking for the next page costs another request). */
  readonly more: boolean;
}

export interface ChunkLister {
  /**
   * Every stored chunk id in ascending order, one page per LIST request
   * (S3: up to `listPageSize` keys; file: one shard directory). Temp files
   * and strays are skipped. findMissing uses the pages to price a listing.
   */
  listChunkPages(options?: ListOptions): AsyncIterable<ChunkPage>;
  /** The same ids, one at a time. */
  listChunks(options?: ListOptions): AsyncIterable<ChunkId>;
}

export interface TagEntry {
  readonly name: string;
  readonly digest: Digest;
}

export interface ManifestStore {
  /** Stores manifest bytes under their sha256 (computed here) and returns that digest. */
  putManifest(bytes: Uint8Array, options?: OpOptions): Promise<Digest>;
  /** The manifest, checked against its digest (IntegrityError if the stored bytes differ), or undefined. */
  getManifest(digest: Digest, options?: OpOptions): Promise<Buffer | undefined>;
  hasManifest(digest: Digest, options?: OpOptions): Promise<boolean>;
  /** Points tag `name` at a stored manifest (NotFoundError if it is not stored); replaces any old value atomically. */
  setTag(name: string, digest: Digest, options?: OpOptions): Promise<void>;
  getTag(name: string, options?: OpOptions): Promise<Digest | undefined>;
  /** All tags, sorted by name. */
  listTags(options?: OpOptions): AsyncIterable<TagEntry>;
}

/** Requests made so far, by kind (file: get=read, put=write+rename, head=stat, list=readdir, delete=unlink). */
export interface RequestCounts {
  readonly get: number;
  readonly put: number;
  readonly head: number;
  readonly list: number;
  readonly delete: number;
}

/**
 * How findMissing should price the question "which of these chunks are
 * stored?". Keyed on `kind` so each backend says what its requests cost.
 */
export type CostModel =
  /** A LIST returns up to `listPageSize` keys; a HEAD answers for one. Each is one request. */
  | { readonly kind: 'remote'; readonly listPageSize: number }
  /** Local: a stat per chunk is cheap and a listing never pays for itself. */
  | { readonly kind: 'local' };

export interface Store extends ChunkWriter, ChunkLister, ManifestStore {
  /** Canonical URL (`file:///abs/dir`, `s3://bucket/prefix`); never holds credentials. */
  readonly url: string;
  readonly costModel: CostModel;
  requestCounts(): RequestCounts;
  close(): Promise<void>;
}

export type RequestKind = keyof RequestCounts;

/** Mutable counters behind `requestCounts()`. */
export class RequestCounter {
  readonly #counts: Record<RequestKind, number> = { get: 0, put: 0, head: 0, list: 0, delete: 0 };
  add(kind: RequestKind, n = 1): void {
    this.#counts[kind] += n;
  }
  snapshot(): RequestCounts {
    return { ...this.#counts };
  }
}

/** `after - before`, per kind: the requests one operation made. */
export function countsSince(before: RequestCounts, after: RequestCounts): RequestCounts {
  return {
    get: after.get - before.get,
    put: after.put - before.put,
    head: after.head - before.head,
    list: after.list - before.list,
    delete: after.delete - before.delete,
  };
}
