/**
 * The OCI image layout reader (reference/oci.md §3–4), over any FileSet: a
 * directory (`oci:`) or a tar index (`oci-archive:`, and the OCI half of a
 * Docker 25+ `docker save`). Picks the image by tag, walks (nested) indexes
 * to the wanted platform, and hands the manifest to `loadImage`.
 */
import { InputError, NotFoundError, throwIfAborted } from '../errors.js';
import { checkLayoutMarker, MAX_MANIFEST_BYTES, readJsonBlob, readJsonFile } from './blobs.js';
import type { Digest } from './digest.js';
import type { FileSet } from './files.js';
import { loadImage } from './image.js';
import { DEFAULT_PLATFORM, formatPlatform, platformMatches } from './platform.js';
import { classify, type Descriptor, type IndexDoc, isAttestation, isIndexMediaType, isObject, type ManifestDoc, parseIndex, parseManifest, REF_NAME } from './schema.js';
import type { ImageReference, ImageSource, OpenOptions, Platform } from './source.js';

/** Deeper than any real image (registries allow index → index → manifest). */
const MAX_DEPTH = 8;

/** NotFoundError for "no entry matches the platform", told apart while searching unlabelled nested indexes. */
class NoPlatformMatch extends NotFoundError {
  override name = 'NotFoundError';
}

/** A manifest reached from the layout's index.json. */
export interface ResolvedManifest {
  readonly digest: Digest;
  readonly manifest: ManifestDoc;
  /** The platform of the index entry that led here, if it had one. */
  readonly platform?: Platform;
}

/** Checks `oci-layout` and reads `index.json`. */
export async function readLayoutIndex(files: FileSet): Promise<IndexDoc> {
  await checkLayoutMarker(files);
  const json = await readJsonFile(files, 'index.json', MAX_MANIFEST_BYTES);
  return parseIndex(json, `${files.location}: index.json`);
}

/** Reads the blob of an index entry as an index or an image manifest (never anything else). */
export async function readManifestBlob(files: FileSet, desc: Descriptor, what: string): Promise<IndexDoc | ManifestDoc> {
  const { json } = await readJsonBlob(files, desc, what, MAX_MANIFEST_BYTES);
  return parseManifestDoc(json, desc.mediaType, `${what}: manifest ${desc.digest}`);
}

/**
 * Verified manifest JSON as an index or an image manifest (never anything
 * else); `declared` is the media type its descriptor (or HTTP Content-Type) gave.
 */
export function parseManifestDoc(json: unknown, declared: string, where: string): IndexDoc | ManifestDoc {
  if (!isObject(json)) throw new InputError(`${where}: not a JSON object`);
  switch (classify(json, declared)) {
    case 'index':
      return parseIndex(json, where);
    case 'manifest':
      return parseManifest(json, where);
    case 'schema1':
      throw new InputError(`${where}: Docker schema1 manifests are not supported (re-push or convert the image)`);
    case 'unknown': {
      const mt = typeof json['mediaType'] === 'string' ? json['mediaType'] : declared;
      throw new InputError(`${where}: media type ${JSON.stringify(mt)} is not an image manifest or index`);
    }
  }
}

/** Fetches and verifies the index or manifest an index entry points at. */
export type ManifestReader = (desc: Descriptor) => Promise<IndexDoc | ManifestDoc>;

interface Walk {
  readonly read: ManifestReader;
  readonly want: Platform;
  readonly what: string;
  readonly signal: AbortSignal | undefined;
  /** Platforms seen on the way, for the "no match" message. */
  readonly seen: string[];
}

async function resolveEntry(w: Walk, desc: Descriptor, depth: number): Promise<ResolvedManifest> {
  throwIfAborted(w.signal);
  if (depth > MAX_DEPTH) throw new InputError(`${w.what}: indexes nested more than ${MAX_DEPTH} deep`);
  const doc = await w.read(desc);
  if (doc.kind === 'manifest') {
    return { digest: desc.digest, manifest: doc, ...(desc.platform !== undefined ? { platform: desc.platform } : {}) };
  }
  return selectPlatform(w, doc.manifests, depth + 1);
}

/**
 * Picks from index entries: attestations are skipped; a single unlabelled
 * entry is taken as is; otherwise the first entry whose platform matches
 * (unlabelled nested indexes are searched in turn).
 */
async function selectPlatform(w: Walk, entries: readonly Descriptor[], depth: number): Promise<ResolvedManifest> {
  const images = entries.filter((d) => !isAttestation(d));
  const only = images[0];
  if (images.length === 1 && only !== undefined && only.platform === undefined) return resolveEntry(w, only, depth);
  for (const d of images) {
    if (d.platform !== undefined) {
      w.seen.push(formatPlatform(d.platform));
      if (platformMatches(w.want, d.platform)) return resolveEntry(w, d, depth);
    }
  }
  for (const d of images) {
    if (d.platform === undefined && isIndexMediaType(d.mediaType)) {
      try {
        return await resolveEntry(w, d, depth);
      } catch (e) {
        if (!(e instanceof NoPlatformMatch)) throw e;
      }
    } else if (d.platform === undefined) {
      w.seen.push(`(unlabelled ${d.digest})`);
    }
  }
  const present = [...new Set(w.seen)];
  throw new NoPlatformMatch(`${w.what}: no image for ${formatPlatform(w.want)}; platforms present: ${present.length > 0 ? present.join(', ') : '(none)'}`);
}

/** Follows one index entry (manifest or index) to the manifest for `platform`. */
export function resolveManifest(
  files: FileSet,
  entries: readonly Descriptor[],
  options: { readonly platform: Platform; readonly what: string; readonly signal?: AbortSignal },
): Promise<ResolvedManifest> {
  return resolveManifestWith((d) => readManifestBlob(files, d, options.what), entries, options);
}

/** As resolveManifest, with manifests fetched by `read` (a registry fetches them by digest). */
export function resolveManifestWith(
  read: ManifestReader,
  entries: readonly Descriptor[],
  options: { readonly platform: Platform; readonly what: string; readonly signal?: AbortSignal },
): Promise<ResolvedManifest> {
  return selectPlatform({ read, want: options.platform, what: options.what, signal: options.signal, seen: [] }, entries, 0);
}

function describeTags(entries: readonly Descriptor[]): string {
  const tags = [...new Set(entries.flatMap((d) => (d.annotations?.[REF_NAME] !== undefined ? [d.annotations[REF_NAME]] : [])))];
  const untagged = entries.filter((d) => d.annotations?.[REF_NAME] === undefined).length;
  const parts = tags.length > 0 ? [tags.join(', ')] : ['(none)'];
  if (untagged > 0 && tags.length > 0) parts.push(`and ${untagged} untagged`);
  return parts.join(' ');
}

/**
 * Opens the image tagged `tag` (its `org.opencontainers.image.ref.name`)
 * in the layout. Without a tag the layout must hold exactly one image — or
 * be itself a multi-platform index of untagged, platform-labelled entries.
 */
export async function openLayoutImage(files: FileSet, reference: ImageReference, tag: string | undefined, options: OpenOptions): Promise<ImageSource> {
  const what = reference.toString();
  const index = await readLayoutIndex(files);
  const entries = index.manifests.filter((d) => !isAttestation(d));
  const walk = { platform: options.platform ?? DEFAULT_PLATFORM, what, ...(options.signal !== undefined ? { signal: options.signal } : {}) };
  let resolved: ResolvedManifest;
  if (tag !== undefined) {
    const matches = entries.filter((d) => d.annotations?.[REF_NAME] === tag);
    if (matches.length === 0) {
      throw new NotFoundError(`${what}: no image tagged ${JSON.stringify(tag)} in ${files.location}; tags: ${describeTags(entries)}`);
    }
    resolved = await resolveManifest(files, matches, walk);
  } else if (entries.length === 0) {
    throw new NotFoundError(`${what}: ${files.location} holds no images`);
  } else if (entries.length === 1 || entries.every((d) => d.platform !== undefined && d.annotations?.[REF_NAME] === undefined)) {
    resolved = await resolveManifest(files, entries, walk);
  } else {
    throw new InputError(`${what}: ${files.location} holds ${entries.length} images, name one with :TAG; tags: ${describeTags(entries)}`);
  }
  return loadImage(files, reference, resolved.digest, resolved.manifest, {
    ...(resolved.platform !== undefined ? { platformFromIndex: resolved.platform } : {}),
    ...(options.signal !== undefined ? { signal: options.signal } : {}),
  });
}
