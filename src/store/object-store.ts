/**
 * A full Store from a small core (go-containerregistry's partial: a few
 * methods in, the whole interface out). The core, ObjectBackend, keeps bytes
 * under keys; everything every backend does alike lives here once: the
 * layout (layout.ts), id and tag checks, the chunk presence check, the
 * manifest digest check, "no tag without its manifest", listings filtered to
 * what they name.
 *
 * What stays with each backend is what differs between them: how a write is
 * made atomic and durable (file: temp file, fsync, rename, fsync of the
 * directory; S3: a PUT, durable once answered), retries, mapping its failures
 * to StoreError / NotFoundError / InterruptedError, what one listing request
 * returns, and the request counts.
 */
import { IntegrityError, NotFoundError, throwIfAborted } from '../errors.js';
import { type Digest, parseDigest, sha256Digest } from '../source/digest.js';
import { type ChunkId, isTagName, parseChunkId, parseTagName } from './ids.js';
import { CHUNKS_DIR, chunkIdFromKey, chunkKey, decodeTag, encodeTag, manifestKey, TAGS_DIR, tagKey } from './layout.js';
import type { ChunkPage, CostModel, ListOptions, OpOptions, PutOptions, PutOutcome, RequestCounts, Store, TagEntry } from './store.js';

/** One listing request's worth of keys. */
export interface KeyPage {
  /** Ascending, and after every key of the pages before. */
  readonly keys: readonly string[];
  /** Whether the listing goes on. */
  readonly more: boolean;
}

export interface PutObjectOptions {
  readonly signal?: AbortSignal | undefined;
  /**
   * An object already under the key is as good as this one (the key is the
   * hash of the bytes), so a backend for which a look costs less than a write
   * (file: a stat against write, fsync, rename) looks first and keeps it. S3
   * writes anyway: a HEAD is a request like the PUT.
   */
  readonly keepExisting?: boolean;
}

/** Objects by key, relative to the store's root (`chunks/ab/ab…`, as layout.ts builds them). */
export interface ObjectBackend {
  /** The store's URL, named in errors. */
  readonly url: string;
  /** The whole object, or undefined when there is none; never a part of one. */
  getObject(key: string, signal: AbortSignal | undefined): Promise<Buffer | undefined>;
  headObject(key: string, signal: AbortSignal | undefined): Promise<boolean>;
  /** Stores `data` under `key` atomically: a reader sees the old object, none, or all of the new one. */
  putObject(key: string, data: Uint8Array, options: PutObjectOptions): Promise<void>;
  /** Makes every put that has resolved so far durable. */
  sync(signal: AbortSignal | undefined): Promise<void>;
  /**
   * The keys under `prefix` (a directory of the layout: `chunks/`, `tags/`)
   * that sort after `startAfter`, one page per listing request, at least one
   * page. Temp files and strays may be among them: callers keep what they
   * recognise.
   */
  listObjects(prefix: string, startAfter: string | undefined, signal: AbortSignal | undefined): AsyncIterable<KeyPage>;
}

/** Chunks, manifests and tags on an ObjectBackend; a subclass adds opening, pricing, counts and closing. */
export abstract class ObjectStore implements Store {
  readonly url: string;
  abstract readonly costModel: CostModel;
  readonly #objects: ObjectBackend;

  protected constructor(objects: ObjectBackend) {
    this.#objects = objects;
    this.url = objects.url;
  }

  abstract requestCounts(): RequestCounts;
  abstract close(): Promise<void>;

  // --- chunks ----------------------------------------------------------------

  async get(id: ChunkId, options: OpOptions = {}): Promise<Buffer | undefined> {
    return this.#objects.getObject(chunkKey(parseChunkId(id)), options.signal);
  }

  async has(id: ChunkId, options: OpOptions = {}): Promise<boolean> {
    return this.#objects.headObject(chunkKey(parseChunkId(id)), options.signal);
  }

  async put(id: ChunkId, data: Uint8Array, options: PutOptions = {}): Promise<PutOutcome> {
    const key = chunkKey(parseChunkId(id));
    if ((options.check ?? 'exists') === 'exists' && (await this.#objects.headObject(key, options.signal))) return 'present';
    await this.#objects.putObject(key, data, { signal: options.signal });
    return 'uploaded';
  }

  async sync(options: OpOptions = {}): Promise<void> {
    throwIfAborted(options.signal);
    await this.#objects.sync(options.signal);
  }

  async *listChunkPages(options: ListOptions = {}): AsyncIterable<ChunkPage> {
    const after = options.startAfter === undefined ? undefined : chunkKey(parseChunkId(options.startAfter, 'startAfter'));
    for await (const page of this.#objects.listObjects(`${CHUNKS_DIR}/`, after, options.signal)) {
      const ids: ChunkId[] = [];
      for (const key of page.keys) {
        const id = chunkIdFromKey(key);
        if (id !== undefined) ids.push(id);
      }
      yield { ids, more: page.more }; // every page, even an empty one: one page is one request
    }
  }

  async *listChunks(options: ListOptions = {}): AsyncIterable<ChunkId> {
    for await (const page of this.listChunkPages(options)) yield* page.ids;
  }

  // --- manifests and tags ------------------------------------------------------

  async putManifest(bytes: Uint8Array, options: OpOptions = {}): Promise<Digest> {
    const digest = sha256Digest(bytes);
    await this.#objects.putObject(manifestKey(digest), bytes, { signal: options.signal, keepExisting: true });
    await this.#objects.sync(options.signal);
    return digest;
  }

  async getManifest(digest: Digest, options: OpOptions = {}): Promise<Buffer | undefined> {
    const d = parseDigest(digest, 'manifest digest');
    const bytes = await this.#objects.getObject(manifestKey(d), options.signal);
    if (bytes !== undefined && sha256Digest(bytes) !== d) {
      throw new IntegrityError(`manifest ${d} in ${this.url} is corrupt: its bytes hash to ${sha256Digest(bytes)}`);
    }
    return bytes;
  }

  async hasManifest(digest: Digest, options: OpOptions = {}): Promise<boolean> {
    return this.#objects.headObject(manifestKey(parseDigest(digest, 'manifest digest')), options.signal);
  }

  async setTag(name: string, digest: Digest, options: OpOptions = {}): Promise<void> {
    const tag = parseTagName(name);
    const d = parseDigest(digest, 'manifest digest');
    if (!(await this.hasManifest(d, options))) {
      throw new NotFoundError(`cannot tag ${tag}: manifest ${d} is not in ${this.url}`);
    }
    await this.#objects.putObject(tagKey(tag), Buffer.from(encodeTag(d)), { signal: options.signal });
    await this.#objects.sync(options.signal);
  }

  async getTag(name: string, options: OpOptions = {}): Promise<Digest | undefined> {
    const key = tagKey(parseTagName(name));
    const bytes = await this.#objects.getObject(key, options.signal);
    return bytes === undefined ? undefined : decodeTag(bytes, `${this.url}/${key}`);
  }

  async *listTags(options: OpOptions = {}): AsyncIterable<TagEntry> {
    for await (const page of this.#objects.listObjects(`${TAGS_DIR}/`, undefined, options.signal)) {
      for (const key of page.keys) {
        const name = key.slice(TAGS_DIR.length + 1);
        if (!isTagName(name)) continue;
        const digest = await this.getTag(name, options);
        if (digest !== undefined) yield { name, digest }; // removed since the listing
      }
    }
  }
}
