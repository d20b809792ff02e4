/**
 * "Upload only what the store lacks": which of these chunk ids does the store
 * not have yet, asked in as few requests as we can tell up front.
 *
 * Two ways to ask a remote store about N distinct ids:
 *   HEAD per id      N requests (in parallel);
 *   LIST chunks/     ⌈S / P⌉ requests for S stored chunks, P keys per page
 *                    (1000 on S3), one after another.
 * S is unknown until we list, but chunk names are BLAKE3 hashes, uniform
 * over the key space, and a listing comes back in key order. So:
 *
 *  1. Probe: list one page — unless even one LIST costs as much as N HEADs
 *     (N = 1 with the default weight). It answers for every id up to its last
 *     key, and if the listing ended there, for all of them.
 *  2. Estimate: after k keys, the last key K sits at fraction f of the key
 *     space (its first 52 bits over 2^52), so S ≈ k / f and the rest of the
 *     listing costs ≈ ⌈k·(1−f)/f / P⌉ more pages.
 *  3. Decide, again after every page (forward-looking: requests already made
 *     are spent either way): list on while those pages cost less than a HEAD
 *     for each id still unanswered (those above K); else HEAD the rest.
 *  4. Bound: stop listing once the LISTs made cost as much as HEADing all N
 *     would have. Whatever the names look like, findMissing then makes at
 *     most about twice the requests of HEAD-per-id (ski rental); with
 *     uniform names the estimate decides long before this.
 *
 * So a big store with a small image costs 1 LIST + the HEADs for ids above
 * the first page; a small store with a big image costs ⌈S/P⌉ LISTs and no
 * HEADs. Listing only the 2-hex shard prefixes the ids fall into is not
 * offered: with uniform names each touched shard costs at least one request
 * and ≈ S/256/P in all, so it never beats the better of the two by much, and
 * loses to the full listing for small stores (one page can span all shards).
 *
 * Requests are counted, not priced: a LIST is `listWeight` HEADs (default 1;
 * on AWS S3 Standard a LIST is a class-A request at ~12.5× a HEAD's price).
 * A local store (file://) is asked with a stat per id: cheap, and a listing
 * never pays for itself there.
 */
import { throwIfAborted } from '../errors.js';
import { type ChunkId, parseChunkId } from './ids.js';
import { forEachBounded } from './pool.js';
import type { ChunkPage, Store } from './store.js';

export interface FindMissingOptions {
  readonly signal?: AbortSignal;
  /** HEADs in flight at once. @default 16 for a remote store, 8 for a local one */
  readonly concurrency?: number;
  /** 'auto' measures as above; 'head' and 'list' force one way (dry-run comparisons). @default 'auto' */
  readonly strategy?: 'auto' | 'head' | 'list';
  /** What one LIST request costs, in HEAD requests. @default 1 */
  readonly listWeight?: number;
}

export interface FindMissingResult {
  readonly missing: Set<ChunkId>;
  /** Requests this call made. */
  readonly requests: { readonly head: number; readonly list: number };
  /** The way that answered for most of the ids (a probe LIST then HEADs for nearly all is 'head'). */
  readonly strategy: 'head' | 'list';
}

const KEYSPACE_BITS = 52; // 13 hex digits: exact in a double

/** Fraction of the key space at or below `id`, in (0, 1]. */
export function keyFraction(id: ChunkId): number {
  return (parseInt(id.slice(0, KEYSPACE_BITS / 4), 16) + 1) / 2 ** KEYSPACE_BITS;
}

/** Estimated LIST requests still needed after `seen` keys ending at `last`; Infinity when nothing is known. */
export function estimateRemainingPages(seen: number, last: ChunkId | undefined, pageSize: number): number {
  if (last === undefined || seen === 0) return Infinity;
  const f = keyFraction(last);
  return Math.max(1, Math.ceil((seen * (1 - f)) / f / pageSize));
}

export async function findMissing(store: Store, ids: Iterable<ChunkId>, options: FindMissingOptions = {}): Promise<FindMissingResult> {
  const { signal } = options;
  throwIfAborted(signal);
  const sorted = [...new Set([...ids].map((id) => parseChunkId(id)))].sort();
  const n = sorted.length;
  const missing = new Set<ChunkId>();
  const model = store.costModel;
  const weight = options.listWeight ?? 1;
  if (!(weight > 0)) throw new RangeError(`Cannot weigh a LIST at ${weight} HEADs: want a positive number`);
  const concurrency = options.concurrency ?? (model.kind === 'remote' ? 16 : 8);
  const mode = options.strategy ?? 'auto';
  let lists = 0;
  let resolved = 0; // sorted[0..resolved) are answered

  const headRest = async (): Promise<number> => {
    const rest = sorted.slice(resolved);
    await forEachBounded(
      rest,
      concurrency,
      async (id, stop) => {
        if (!(await store.has(id, { signal: stop }))) missing.add(id);
      },
      signal,
    );
    resolved = n;
    return rest.length;
  };

  const wantList = n > 0 && (mode === 'list' || (mode === 'auto' && model.kind === 'remote' && weight < n));
  if (!wantList) {
    const heads = await headRest();
    return { missing, requests: { head: heads, list: 0 }, strategy: 'head' };
  }

  const pageSize = model.kind === 'remote' ? model.listPageSize : 1000;
  let seen = 0;
  let last: ChunkId | undefined;
  let listedToEnd = false;
  const pages = store.listChunkPages(signal ? { signal } : {})[Symbol.asyncIterator]();
  try {
    for (;;) {
      const next = await pages.next();
      if (next.done === true) {
        listedToEnd = true;
        break;
      }
      lists++;
      const page: ChunkPage = next.value;
      for (const key of page.ids) {
        while (resolved < n && sorted[resolved]! < key) missing.add(sorted[resolved++]!);
        if (resolved < n && sorted[resolved] === key) resolved++;
      }
      seen += page.ids.length;
      last = page.ids.at(-1) ?? last;
      if (!page.more) {
        listedToEnd = true;
        break;
      }
      if (resolved === n) break;
      if (mode === 'list') continue;
      const unanswered = n - resolved;
      const estimate = estimateRemainingPages(seen, last, pageSize);
      if (estimate * weight >= unanswered || lists * weight >= n) break;
    }
  } finally {
    if (!listedToEnd) await pages.return?.();
  }
  if (listedToEnd) {
    for (; resolved < n; resolved++) missing.add(sorted[resolved]!);
    return { missing, requests: { head: 0, list: lists }, strategy: 'list' };
  }
  if (resolved === n) return { missing, requests: { head: 0, list: lists }, strategy: 'list' };
  const byList = resolved;
  const heads = await headRest();
  return { missing, requests: { head: heads, list: lists }, strategy: byList > heads ? 'list' : 'head' };
}
