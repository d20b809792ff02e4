/**
 * A Store held in memory, priced like a remote one (`listPageSize` keys per
 * LIST), for tests that need many chunks without a server: findMissing's
 * choices at sizes s3rver would take minutes to fill, and wrappers. It also
 * runs the conformance suite, which keeps the suite honest. Test-only code.
 */
import { IntegrityError, NotFoundError, throwIfAborted } from '../errors.js';
import { type Digest, parseDigest, sha256Digest } from '../source/digest.js';
import { type ChunkId, parseChunkId, parseTagName } from '../store/ids.js';
import {
  type ChunkPage,
  type CostModel,
  type ListOptions,
  type OpOptions,
  type PutOptions,
  type PutOutcome,
  RequestCounter,
  type RequestCounts,
  type Store,
  type TagEntry,
} from '../store/store.js';

export interface MemoryStoreOptions {
  /** @default 1000 */
  readonly listPageSize?: number;
}

export class MemoryStore implements Store {
  readonly url = 'memory:';
  readonly costModel: CostModel;
  readonly #chunks = new Map<ChunkId, Buffer>();
  readonly #manifests = new Map<Digest, Buffer>();
  readonly #tags = new Map<string, Digest>();
  readonly #counts = new RequestCounter();
  #sorted: ChunkId[] | undefined;

  constructor(options: MemoryStoreOptions = {}) {
    this.costModel = { kind: 'remote', listPageSize: options.listPageSize ?? 1000 };
  }

  /** Adds chunks without counting requests (test setup). */
  seed(ids: Iterable<ChunkId>, data: Buffer = Buffer.alloc(0)): void {
    for (const id of ids) this.#chunks.set(parseChunkId(id), data);
    this.#sorted = undefined;
  }

  requestCounts(): RequestCounts {
    return this.#counts.snapshot();
  }

  async close(): Promise<void> {}

  async get(id: ChunkId, options: OpOptions = {}): Promise<Buffer | undefined> {
    const key = parseChunkId(id);
    await this.#tick('get', options.signal);
    const b = this.#chunks.get(key);
    return b === undefined ? undefined : Buffer.from(b);
  }

  async has(id: ChunkId, options: OpOptions = {}): Promise<boolean> {
    const key = parseChunkId(id);
    await this.#tick('head', options.signal);
    return this.#chunks.has(key);
  }

  async put(id: ChunkId, data: Uint8Array, options: PutOptions = {}): Promise<PutOutcome> {
    const key = parseChunkId(id);
    if ((options.check ?? 'exists') === 'exists' && (await this.has(key, options))) return 'present';
    await this.#tick('put', options.signal);
    this.#chunks.set(key, Buffer.from(data));
    this.#sorted = undefined;
    return 'uploaded';
  }

  async sync(options: OpOptions = {}): Promise<void> {
    throwIfAborted(options.signal);
  }

  async *listChunkPages(options: ListOptions = {}): AsyncIterable<ChunkPage> {
    const after = options.startAfter === undefined ? undefined : parseChunkId(options.startAfter);
    this.#sorted ??= [...this.#chunks.keys()].sort();
    const all = after === undefined ? this.#sorted : this.#sorted.filter((id) => id > after);
    const size = this.costModel.kind === 'remote' ? this.costModel.listPageSize : 1000;
    let i = 0;
    do {
      await this.#tick('list', options.signal);
      const ids = all.slice(i, i + size);
      i += size;
      yield { ids, more: i < all.length };
    } while (i < all.length);
  }

  async *listChunks(options: ListOptions = {}): AsyncIterable<ChunkId> {
    for await (const page of this.listChunkPages(options)) yield* page.ids;
  }

  async putManifest(bytes: Uint8Array, options: OpOptions = {}): Promise<Digest> {
    await this.#tick('put', options.signal);
    const d = sha256Digest(bytes);
    this.#manifests.set(d, Buffer.from(bytes));
    return d;
  }

  async getManifest(digest: Digest, options: OpOptions = {}): Promise<Buffer | undefined> {
    const d = parseDigest(digest, 'manifest digest');
    await this.#tick('get', options.signal);
    const b = this.#manifests.get(d);
    if (b !== undefined && sha256Digest(b) !== d) throw new IntegrityError(`manifest ${d} is corrupt`);
    return b === undefined ? undefined : Buffer.from(b);
  }

  async hasManifest(digest: Digest, options: OpOptions = {}): Promise<boolean> {
    const d = parseDigest(digest, 'manifest digest');
    await this.#tick('head', options.signal);
    return this.#manifests.has(d);
  }

  async setTag(name: string, digest: Digest, options: OpOptions = {}): Promise<void> {
    const tag = parseTagName(name);
    const d = parseDigest(digest, 'manifest digest');
    if (!(await this.hasManifest(d, options))) throw new NotFoundError(`cannot tag ${tag}: manifest ${d} is not in ${this.url}`);
    await this.#tick('put', options.signal);
    this.#tags.set(tag, d);
  }

  async getTag(name: string, options: OpOptions = {}): Promise<Digest | undefined> {
    const tag = parseTagName(name);
    await this.#tick('get', options.signal);
    return this.#tags.get(tag);
  }

  async *listTags(options: OpOptions = {}): AsyncIterable<TagEntry> {
    await this.#tick('list', options.signal);
    for (const name of [...this.#tags.keys()].sort()) yield { name, digest: this.#tags.get(name)! };
  }

  /** One request: counted, checked for abort, and a turn of the event loop so concurrency is real. */
  async #tick(kind: keyof RequestCounts, signal: AbortSignal | undefined): Promise<void> {
    throwIfAborted(signal);
    this.#counts.add(kind);
    await new Promise<void>((resolve) => setImmediate(resolve));
    throwIfAborted(signal);
  }
}
