import type { ChunkId } from '../chunks/id.js';
import type { Store } from '../store/store.js';

/**
 * "Does the store already hold this chunk?", answered while the image streams
 * by, in as few requests as we can tell up front (the rule of store/missing.ts,
 * made incremental because chunk names are known only as they are sealed).
 *
 * A remote store is listed first, page by page, for as long as the rest of
 * the listing is estimated to cost fewer requests than a HEAD per chunk of
 * this image; names are uniform hashes and pages come in key order, so after
 * k names ending at fraction f of the key space about k(1−f)/f remain. If the
 * listing completes, every question is answered from memory (no HEAD at all);
 * if not, names at or below the last listed key are answered from the
 * listing and the others with a HEAD each. A local store is asked with a
 * stat per chunk: cheap, and a listing never pays for itself there.
 */
export class Presence {
  readonly #store: Store;
  readonly #listed = new Set<ChunkId>();
  /** Every name ≤ this was listed (complete: all names). */
  #listedUpTo: ChunkId | '' = '';
  #complete = false;

  private constructor(store: Store) {
    this.#store = store;
  }

  /** `expectedChunks`: a rough count of the image's distinct chunks (the budget for listing). */
  static async create(store: Store, expectedChunks: number, signal?: AbortSignal): Promise<Presence> {
    const p = new Presence(store);
    if (store.costModel.kind === 'remote') await p.#list(Math.max(1, expectedChunks), signal);
    return p;
  }

  get strategy(): 'list' | 'head' | 'list+head' | 'stat' {
    if (this.#store.costModel.kind === 'local') return 'stat';
    if (this.#complete) return 'list';
    return this.#listedUpTo === '' ? 'head' : 'list+head';
  }

  async #list(budget: number, signal: AbortSignal | undefined): Promise<void> {
    let pages = 0;
    for await (const page of this.#store.listChunkPages(signal ? { signal } : {})) {
      pages++;
      for (const id of page.ids) this.#listed.add(id);
      const last = page.ids[page.ids.length - 1];
      if (last !== undefined) this.#listedUpTo = last;
      if (!page.more) {
        this.#complete = true;
        return;
      }
      if (last === undefined) return;
      const f = Number.parseInt(last.slice(0, 13), 16) / 2 ** 52;
      const remainingNames = f > 0 ? (this.#listed.size * (1 - f)) / f : Infinity;
      const pageSize = this.#store.costModel.kind === 'remote' ? this.#store.costModel.listPageSize : 1000;
      const remainingPages = Math.ceil(remainingNames / pageSize);
      const unanswered = budget * (1 - f);
      if (remainingPages >= unanswered || pages >= budget) return;
    }
    this.#complete = true;
  }

  /** Whether the store holds `id`; `known` = answered without a request. */
  async has(id: ChunkId, signal?: AbortSignal): Promise<{ present: boolean; known: boolean }> {
    if (this.#complete || (this.#listedUpTo !== '' && id <= this.#listedUpTo)) {
      return { present: this.#listed.has(id), known: true };
    }
    return { present: await this.#store.has(id, signal ? { signal } : {}), known: false };
  }
}
