/**
 * Where things live inside a store, the same for every backend (relative to
 * the directory or the S3 prefix), so a store can be copied between backends
 * with `cp -r` / `aws s3 sync`:
 *
 *   chunks/<first 2 hex>/<64 hex>    a chunk (256 shards keep directories small)
 *   manifests/sha256/<64 hex>        a manifest, named by the sha256 of its bytes
 *   tags/<name>                      "sha256:<64 hex>\n", a manifest's digest
 *
 * Temp files of the file store are `.<name>.<random>.tmp` beside the final
 * name; nothing that starts with `.` is ever a final name.
 */
import { InputError } from '../errors.js';
import { type Digest, digestHex, parseDigest } from '../source/digest.js';
import { type ChunkId, isChunkId, type TagName } from './ids.js';

export const CHUNKS_DIR = 'chunks';
export const MANIFESTS_DIR = 'manifests/sha256';
export const TAGS_DIR = 'tags';

export function chunkShard(id: ChunkId): string {
  return id.slice(0, 2);
}

export function chunkKey(id: ChunkId): string {
  return `${CHUNKS_DIR}/${chunkShard(id)}/${id}`;
}

export function manifestKey(digest: Digest): string {
  return `${MANIFESTS_DIR}/${digestHex(digest)}`;
}

export function tagKey(name: TagName): string {
  return `${TAGS_DIR}/${name}`;
}

/** The id named by a key under `chunks/`, or undefined for anything else (temp files, strays, misplaced shards). */
export function chunkIdFromKey(relKey: string): ChunkId | undefined {
  const m = /^chunks\/([0-9a-f]{2})\/([0-9a-f]{64})$/.exec(relKey);
  if (m === null || !isChunkId(m[2]) || m[2].slice(0, 2) !== m[1]) return undefined;
  return m[2];
}

export function encodeTag(digest: Digest): string {
  return `${digest}\n`;
}

/** The digest in a tag object; `where` names it in the error. */
export function decodeTag(content: Buffer, where: string): Digest {
  const text = content.toString('utf8');
  if (!text.endsWith('\n') || text.length > 200) {
    throw new InputError(`corrupt tag ${where}: want "sha256:<64 hex>\\n", got ${JSON.stringify(text.slice(0, 80))}`);
  }
  try {
    return parseDigest(text.slice(0, -1), `digest in tag ${where}`);
  } catch (e) {
    throw new InputError(`corrupt tag ${where}: ${(e as Error).message}`, { cause: e });
  }
}
