import { openChunk, type ChunkRef } from '../chunks/seal.js';
import type { Salt } from '../chunks/salt.js';
import { IntegrityError } from '../errors.js';
import { checkRange, type ByteSource } from '../ext4/byte-source.js';
import type { ManifestHeader } from '../manifest/schema.js';
import type { Store } from '../store/store.js';

/**
 * The bytes of a published image, fetched chunk by chunk from a store as
 * they are read: each chunk is checked against its name, decrypted and
 * authenticated by re-deriving its key. Holes read as zeros without a fetch.
 * A small LRU of decrypted chunks and one fetch in flight per chunk keep an
 * ext4 walk from fetching a chunk twice. (The read path of the next issue —
 * local disk cache, shared tier — replaces the fetch behind this.)
 */
export class StoreByteSource implements ByteSource {
  readonly size: number;
  readonly name: string;
  readonly #store: Store;
  readonly #chunks: readonly (ChunkRef | null)[];
  readonly #chunkSize: number;
  readonly #salt: Salt;
  readonly #cache = new Map<number, Promise<Buffer>>();
  readonly #cacheChunks: number;
  #fetched = 0;

  constructor(store: Store, header: ManifestHeader, chunks: readonly (ChunkRef | null)[], salt: Salt, options: { name: string; cacheChunks?: number }) {
    this.#store = store;
    this.#chunks = chunks;
    this.#chunkSize = header.chunks.size;
    this.size = header.filesystem.size;
    this.#salt = salt;
    this.name = options.name;
    this.#cacheChunks = options.cacheChunks ?? 32;
  }

  /** Chunks fetched from the store so far. */
  get fetchedChunks(): number {
    return this.#fetched;
  }

  get totalChunks(): number {
    return this.#chunks.length;
  }

  async read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
    checkRange(this, offset, length);
    const out = Buffer.alloc(length);
    let pos = offset;
    while (pos < offset + length) {
      const index = Math.floor(pos / this.#chunkSize);
      const within = pos - index * this.#chunkSize;
      const n = Math.min(this.#chunkSize - within, offset + length - pos);
      const ref = this.#chunks[index];
      if (ref) (await this.#chunk(index, ref, signal)).copy(out, pos - offset, within, within + n);
      pos += n;
    }
    return out;
  }

  #chunk(index: number, ref: ChunkRef, signal?: AbortSignal): Promise<Buffer> {
    const hit = this.#cache.get(index);
    if (hit) {
      this.#cache.delete(index); // re-insert: most recently used last
      this.#cache.set(index, hit);
      return hit;
    }
    const p = (async () => {
      this.#fetched++;
      const ct = await this.#store.get(ref.id, signal ? { signal } : {});
      if (ct === undefined) throw new IntegrityError(`chunk ${index} (${ref.id}) is missing from ${this.#store.url}`);
      return openChunk(ct, ref, this.#salt);
    })();
    this.#cache.set(index, p);
    p.catch(() => this.#cache.delete(index));
    while (this.#cache.size > this.#cacheChunks) this.#cache.delete(this.#cache.keys().next().value!);
    return p;
  }

  async close(): Promise<void> {
    this.#cache.clear();
  }
}
