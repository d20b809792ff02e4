/**
 * Writing an image into a store: the chunks it lacks, with bounded
 * concurrency, then — only once every chunk put has resolved and been made
 * durable — the manifest, then the tag. A reader that finds the tag finds
 * the manifest, and a reader that finds the manifest finds every chunk it
 * names; a writer killed anywhere leaves at worst unreferenced chunks.
 */
import type { Digest } from '../source/digest.js';
import { type ChunkId, parseChunkId, parseTagName } from './ids.js';
import { forEachBounded } from './pool.js';
import type { ChunkWriter, CostModel, ManifestStore, OpOptions, PutOptions } from './store.js';

export interface ChunkToUpload {
  readonly id: ChunkId;
  readonly data: Uint8Array;
}

export interface UploadProgress {
  readonly uploaded: number;
  readonly skipped: number;
  /** Bytes uploaded (skipped chunks not counted). */
  readonly bytes: number;
}

export type UploadSummary = UploadProgress;

export interface UploadOptions {
  /** Puts in flight at once; the source is not pulled further until one finishes. @default 8 for a remote store, 4 for a local one */
  readonly concurrency?: number;
  readonly signal?: AbortSignal;
  /** Ids known to be stored already (findMissing's answer): skipped without a request. */
  readonly present?: ReadonlySet<ChunkId>;
  /**
   * Whether each put looks before it writes (see PutOptions.check).
   * @default 'none' when `present` is given (the rest were just found missing), else 'exists'
   */
  readonly check?: PutOptions['check'];
  /** Called after every chunk (uploaded or skipped). */
  readonly onProgress?: (progress: UploadProgress) => void;
}

/**
 * Puts every chunk of `chunks` the store lacks. Skips ids in `present`, ids
 * already handled in this run, and ids the store answers 'present' for.
 * Holds at most `concurrency` chunks' data at once.
 */
export async function uploadChunks(
  store: ChunkWriter & { readonly costModel?: CostModel },
  chunks: AsyncIterable<ChunkToUpload> | Iterable<ChunkToUpload>,
  options: UploadOptions = {},
): Promise<UploadSummary> {
  const concurrency = options.concurrency ?? (store.costModel?.kind === 'local' ? 4 : 8);
  const check = options.check ?? (options.present !== undefined ? 'none' : 'exists');
  const handled = new Set<ChunkId>();
  let uploaded = 0;
  let skipped = 0;
  let bytes = 0;
  const progress = (): void => options.onProgress?.({ uploaded, skipped, bytes });
  await forEachBounded(
    chunks,
    concurrency,
    async ({ id, data }, signal) => {
      const chunkId = parseChunkId(id);
      if (options.present?.has(chunkId) === true || handled.has(chunkId)) {
        skipped++;
        progress();
        return;
      }
      handled.add(chunkId);
      const outcome = await store.put(chunkId, data, { signal, check });
      if (outcome === 'uploaded') {
        uploaded++;
        bytes += data.byteLength;
      } else {
        skipped++;
      }
      progress();
    },
    options.signal,
  );
  return { uploaded, skipped, bytes };
}

/**
 * The last step of an upload: make the chunks durable (ChunkWriter.sync),
 * store the manifest, then point `tag` at it. Call only after uploadChunks
 * resolved. Returns the manifest's digest.
 */
export async function publish(
  store: ChunkWriter & ManifestStore,
  manifestBytes: Uint8Array,
  tag?: string,
  options: OpOptions = {},
): Promise<Digest> {
  if (tag !== undefined) parseTagName(tag); // a bad tag fails before anything is written
  await store.sync(options);
  const digest = await store.putManifest(manifestBytes, options);
  if (tag !== undefined) await store.setTag(tag, digest, options);
  return digest;
}
