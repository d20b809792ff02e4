import { NotFoundError } from '../errors.js';
import { parseManifest, type ParsedManifest } from '../manifest/schema.js';
import { parseDigest, type Digest } from '../source/digest.js';
import type { Store } from '../store/store.js';

/** A published image in a store: `sha256:<hex>` (a manifest digest) or a tag name. */
export async function resolveRef(store: Store, ref: string, signal?: AbortSignal): Promise<Digest> {
  const opts = signal ? { signal } : {};
  if (ref.startsWith('sha256:')) {
    const d = parseDigest(ref, 'manifest reference');
    if (!(await store.hasManifest(d, opts))) throw new NotFoundError(`manifest ${d} not found in ${store.url}`);
    return d;
  }
  const d = await store.getTag(ref, opts);
  if (d === undefined) throw new NotFoundError(`tag ${JSON.stringify(ref)} not found in ${store.url}`);
  return d;
}

/** Fetches and parses (without keys) the manifest REF names; the store checks its digest. */
export async function fetchManifest(store: Store, ref: string, signal?: AbortSignal): Promise<{ digest: Digest; manifest: ParsedManifest }> {
  const digest = await resolveRef(store, ref, signal);
  const bytes = await store.getManifest(digest, signal ? { signal } : {});
  if (bytes === undefined) throw new NotFoundError(`manifest ${digest} not found in ${store.url}`);
  return { digest, manifest: parseManifest(bytes) };
}
