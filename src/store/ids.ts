/**
 * The names a store holds things under: chunk ids and tag names, each
 * checked once at the store's edge.
 *
 * `ChunkId` is the chunker's (src/chunks/id.ts): 64 lowercase hex digits,
 * the BLAKE3 of the stored (encrypted) bytes. The store never computes it;
 * it only refuses names that could not be one (and so could not escape a
 * directory or clash with a temp file).
 */
import { UsageError } from '../errors.js';

export { type ChunkId, isChunkId, parseChunkId } from '../chunks/id.js';

declare const tagBrand: unique symbol;
/** A tag name: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`, like a docker tag. */
export type TagName = string & { readonly [tagBrand]: true };

/**
 * Docker's tag grammar. No `/`: in a file store a tag `a` (a file) and a tag
 * `a/b` (needing `a` to be a directory) could not both exist, and the two
 * backends must accept the same names. The leading character can't be `.`,
 * so a tag never looks like a temp file (`.<name>.<random>.tmp`) or `..`.
 */
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

export function isTagName(s: unknown): s is TagName {
  return typeof s === 'string' && TAG_RE.test(s);
}

/** A user names tags on the command line, so a bad one is a UsageError. */
export function parseTagName(s: unknown): TagName {
  if (!isTagName(s)) {
    throw new UsageError(`invalid tag ${JSON.stringify(s)}: want 1-128 characters [A-Za-z0-9._-], not starting with '.' or '-'`);
  }
  return s;
}
