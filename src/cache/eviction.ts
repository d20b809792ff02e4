/**
 * Eviction policies for a byte-bounded cache: which keys to forget when a
 * new one must fit. Pure, synchronous bookkeeping over keys and sizes; the
 * owner (disk-cache.ts) does the I/O for what `admit` returns.
 *
 * - `lru`: least recently used goes first. Flushed by any scan longer than
 *   the cache (a burst of one-off image starts).
 * - `lru2`: LRU-K with K = 2 (O'Neil, O'Neil & Weikum, SIGMOD'93): the victim
 *   is the entry whose second most recent access is oldest; entries seen
 *   once go first (oldest first). A bounded history of evicted keys' last
 *   access lets a chunk fetched again soon after eviction count both uses.
 * - `s3fifo`: S3-FIFO (Yang et al., SOSP'23): new keys enter a small FIFO
 *   (~10% of bytes) and leave it fast unless hit; hit ones move to the main
 *   FIFO, which reinserts entries with a non-zero 2-bit counter; a ghost FIFO
 *   of keys evicted from small sends a key seen again straight to main.
 *
 * Time is logical (one tick per access), so results are deterministic.
 * Every operation is O(1) (lru; s3fifo amortized) or O(log n) (lru2's heap).
 */

export type PolicyName = 'lru' | 'lru2' | 's3fifo';
export const POLICY_NAMES: readonly PolicyName[] = ['lru', 'lru2', 's3fifo'];

export function isPolicyName(s: unknown): s is PolicyName {
  return typeof s === 'string' && (POLICY_NAMES as readonly string[]).includes(s);
}

/**
 * How a key enters: 'new' (a miss just filled) or 'restored' (found on disk
 * when a cache is reopened: it had earned its place before, so s3fifo puts
 * it in main rather than on trial in small; lru and lru2 treat both alike).
 */
export type Admission = 'new' | 'restored';

export interface EvictionPolicy {
  readonly name: PolicyName;
  /** Byte capacity; `bytes` never exceeds it. */
  readonly capacity: number;
  /** Sum of the sizes of the keys held. */
  readonly bytes: number;
  /** Number of keys held. */
  readonly size: number;
  has(key: string): boolean;
  /** Records an access to a held key (a cache hit). A key not held is ignored. */
  hit(key: string): void;
  /**
   * Takes in `key` of `size` bytes after a miss and returns the keys evicted
   * to make room (the caller forgets them). A key larger than the capacity
   * is not taken: the answer is `[key]` and nothing else is evicted. A key
   * already held counts as a hit and evicts nothing.
   */
  admit(key: string, size: number, admission?: Admission): string[];
  /** Forgets `key` (dropped as corrupt, or a failed write). Returns whether it was held. */
  remove(key: string): boolean;
}

export interface PolicyOptions {
  /** s3fifo: the small queue's share of the capacity. @default 0.1 */
  readonly smallRatio?: number;
  /** lru2: evicted keys whose last access is remembered. @default as many as the cache holds (at least 16) */
  readonly historyEntries?: number;
}

export function createPolicy(name: PolicyName, capacityBytes: number, options: PolicyOptions = {}): EvictionPolicy {
  switch (name) {
    case 'lru':
      return new LruPolicy(capacityBytes);
    case 'lru2':
      return new Lru2Policy(capacityBytes, options.historyEntries);
    case 's3fifo':
      return new S3FifoPolicy(capacityBytes, options.smallRatio);
  }
}

function checkCapacity(capacity: number): number {
  if (!Number.isSafeInteger(capacity) || capacity < 0) throw new RangeError(`cache capacity must be a non-negative integer of bytes, got ${capacity}`);
  return capacity;
}

function checkSize(key: string, size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`size of ${key} must be a non-negative integer of bytes, got ${size}`);
}

// --- an intrusive doubly linked list: O(1) push, unlink, move ----------------

interface Linked<N> {
  prev: N | undefined;
  next: N | undefined;
}

/** Head = most recent / newest; tail = next to go. Tracks the bytes of its nodes. */
class List<N extends Linked<N> & { readonly size: number }> {
  head: N | undefined;
  tail: N | undefined;
  length = 0;
  bytes = 0;

  pushHead(n: N): void {
    n.prev = undefined;
    n.next = this.head;
    if (this.head) this.head.prev = n;
    else this.tail = n;
    this.head = n;
    this.length++;
    this.bytes += n.size;
  }

  unlink(n: N): void {
    if (n.prev) n.prev.next = n.next;
    else this.head = n.next;
    if (n.next) n.next.prev = n.prev;
    else this.tail = n.prev;
    n.prev = n.next = undefined;
    this.length--;
    this.bytes -= n.size;
  }

  moveToHead(n: N): void {
    if (this.head === n) return;
    this.unlink(n);
    this.pushHead(n);
  }
}

// --- LRU -----------------------------------------------------------------------

class LruNode implements Linked<LruNode> {
  prev: LruNode | undefined;
  next: LruNode | undefined;
  constructor(
    readonly key: string,
    readonly size: number,
  ) {}
}

class LruPolicy implements EvictionPolicy {
  readonly name = 'lru';
  readonly capacity: number;
  readonly #nodes = new Map<string, LruNode>();
  readonly #list = new List<LruNode>();

  constructor(capacity: number) {
    this.capacity = checkCapacity(capacity);
  }

  get bytes(): number {
    return this.#list.bytes;
  }

  get size(): number {
    return this.#nodes.size;
  }

  has(key: string): boolean {
    return this.#nodes.has(key);
  }

  hit(key: string): void {
    const n = this.#nodes.get(key);
    if (n) this.#list.moveToHead(n);
  }

  admit(key: string, size: number): string[] {
    checkSize(key, size);
    if (this.#nodes.has(key)) {
      this.hit(key);
      return [];
    }
    if (size > this.capacity) return [key];
    const evicted: string[] = [];
    while (this.#list.bytes + size > this.capacity) {
      const victim = this.#list.tail!;
      this.#list.unlink(victim);
      this.#nodes.delete(victim.key);
      evicted.push(victim.key);
    }
    const n = new LruNode(key, size);
    this.#nodes.set(key, n);
    this.#list.pushHead(n);
    return evicted;
  }

  remove(key: string): boolean {
    const n = this.#nodes.get(key);
    if (!n) return false;
    this.#list.unlink(n);
    this.#nodes.delete(key);
    return true;
  }
}

// --- LRU-2 -----------------------------------------------------------------------

/**
 * A held key's last two access times. `previous === undefined`: seen once
 * (it sits in the `once` list); otherwise it sits in the heap keyed on
 * `previous`. Ticks are unique, so the heap order has no ties.
 */
class Lru2Entry implements Linked<Lru2Entry> {
  prev: Lru2Entry | undefined;
  next: Lru2Entry | undefined;
  previous: number | undefined;
  heapIndex = -1;
  constructor(
    readonly key: string,
    readonly size: number,
    public last: number,
  ) {}
}

/** A remembered evicted key: its last access time. */
class HistoryEntry implements Linked<HistoryEntry> {
  prev: HistoryEntry | undefined;
  next: HistoryEntry | undefined;
  readonly size = 0;
  constructor(
    readonly key: string,
    readonly last: number,
  ) {}
}

/** Binary min-heap of entries on `previous`, each knowing its index (for O(log n) update and removal). */
class PreviousHeap {
  readonly items: Lru2Entry[] = [];

  push(e: Lru2Entry): void {
    e.heapIndex = this.items.length;
    this.items.push(e);
    this.#up(e.heapIndex);
  }

  /** Removes `e` wherever it is. */
  delete(e: Lru2Entry): void {
    const i = e.heapIndex;
    const last = this.items.pop()!;
    e.heapIndex = -1;
    if (last === e) return;
    this.items[i] = last;
    last.heapIndex = i;
    this.#down(i);
    this.#up(last.heapIndex);
  }

  /** `e.previous` grew: move it down. */
  increased(e: Lru2Entry): void {
    this.#down(e.heapIndex);
  }

  #less(a: Lru2Entry, b: Lru2Entry): boolean {
    return a.previous! < b.previous!;
  }

  #swap(i: number, j: number): void {
    const a = this.items[i]!;
    const b = this.items[j]!;
    this.items[i] = b;
    this.items[j] = a;
    a.heapIndex = j;
    b.heapIndex = i;
  }

  #up(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#less(this.items[i]!, this.items[parent]!)) return;
      this.#swap(i, parent);
      i = parent;
    }
  }

  #down(i: number): void {
    const n = this.items.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.#less(this.items[l]!, this.items[m]!)) m = l;
      if (r < n && this.#less(this.items[r]!, this.items[m]!)) m = r;
      if (m === i) return;
      this.#swap(i, m);
      i = m;
    }
  }
}

class Lru2Policy implements EvictionPolicy {
  readonly name = 'lru2';
  readonly capacity: number;
  readonly #entries = new Map<string, Lru2Entry>();
  /** Keys accessed once, newest at the head: the subsidiary LRU among "infinitely distant" ones. */
  readonly #once = new List<Lru2Entry>();
  readonly #twice = new PreviousHeap();
  readonly #history = new Map<string, HistoryEntry>();
  readonly #historyOrder = new List<HistoryEntry>();
  readonly #historyLimit: number | undefined;
  #bytes = 0;
  #clock = 0;

  constructor(capacity: number, historyEntries?: number) {
    this.capacity = checkCapacity(capacity);
    if (historyEntries !== undefined && (!Number.isSafeInteger(historyEntries) || historyEntries < 0)) {
      throw new RangeError(`historyEntries must be a non-negative integer, got ${historyEntries}`);
    }
    this.#historyLimit = historyEntries;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#entries.size;
  }

  has(key: string): boolean {
    return this.#entries.has(key);
  }

  hit(key: string): void {
    const e = this.#entries.get(key);
    if (!e) return;
    const now = ++this.#clock;
    if (e.previous === undefined) {
      this.#once.unlink(e);
      e.previous = e.last;
      e.last = now;
      this.#twice.push(e);
    } else {
      e.previous = e.last;
      e.last = now;
      this.#twice.increased(e);
    }
  }

  admit(key: string, size: number): string[] {
    checkSize(key, size);
    if (this.#entries.has(key)) {
      this.hit(key);
      return [];
    }
    if (size > this.capacity) return [key];
    const now = ++this.#clock;
    // Taken out of the history before evicting, so this key's memory is not trimmed away by its own admission.
    const remembered = this.#history.get(key);
    if (remembered) this.#forget(remembered);
    const evicted: string[] = [];
    while (this.#bytes + size > this.capacity) evicted.push(this.#evictOne());
    const e = new Lru2Entry(key, size, now);
    this.#entries.set(key, e);
    this.#bytes += size;
    if (remembered) {
      e.previous = remembered.last;
      this.#twice.push(e);
    } else {
      this.#once.pushHead(e);
    }
    return evicted;
  }

  remove(key: string): boolean {
    const e = this.#entries.get(key);
    if (!e) return false;
    this.#detach(e);
    return true;
  }

  #evictOne(): string {
    const victim = this.#once.tail ?? this.#twice.items[0]!;
    this.#detach(victim);
    this.#remember(victim);
    return victim.key;
  }

  #detach(e: Lru2Entry): void {
    if (e.previous === undefined) this.#once.unlink(e);
    else this.#twice.delete(e);
    this.#entries.delete(e.key);
    this.#bytes -= e.size;
  }

  #remember(e: Lru2Entry): void {
    const h = new HistoryEntry(e.key, e.last);
    this.#history.set(e.key, h);
    this.#historyOrder.pushHead(h);
    const limit = this.#historyLimit ?? Math.max(16, this.#entries.size);
    while (this.#history.size > limit) this.#forget(this.#historyOrder.tail!);
  }

  #forget(h: HistoryEntry): void {
    this.#historyOrder.unlink(h);
    this.#history.delete(h.key);
  }
}

// --- S3-FIFO -------------------------------------------------------------------

const MAX_FREQ = 3;

class FifoEntry implements Linked<FifoEntry> {
  prev: FifoEntry | undefined;
  next: FifoEntry | undefined;
  freq = 0;
  constructor(
    readonly key: string,
    readonly size: number,
    public queue: 'small' | 'main',
  ) {}
}

class GhostEntry implements Linked<GhostEntry> {
  prev: GhostEntry | undefined;
  next: GhostEntry | undefined;
  constructor(
    readonly key: string,
    readonly size: number,
  ) {}
}

class S3FifoPolicy implements EvictionPolicy {
  readonly name = 's3fifo';
  readonly capacity: number;
  /** Bytes the small queue aims at; above it, eviction takes from small. */
  readonly smallTarget: number;
  readonly #entries = new Map<string, FifoEntry>();
  readonly #small = new List<FifoEntry>();
  readonly #main = new List<FifoEntry>();
  readonly #ghosts = new Map<string, GhostEntry>();
  /** Keys evicted from small, by their sizes bounded to main's share of the capacity (the paper: as many as main holds). */
  readonly #ghostOrder = new List<GhostEntry>();

  constructor(capacity: number, smallRatio = 0.1) {
    this.capacity = checkCapacity(capacity);
    if (!(smallRatio > 0 && smallRatio < 1)) throw new RangeError(`smallRatio must be between 0 and 1, got ${smallRatio}`);
    this.smallTarget = Math.floor(this.capacity * smallRatio);
  }

  get bytes(): number {
    return this.#small.bytes + this.#main.bytes;
  }

  get size(): number {
    return this.#entries.size;
  }

  has(key: string): boolean {
    return this.#entries.has(key);
  }

  hit(key: string): void {
    const e = this.#entries.get(key);
    if (e && e.freq < MAX_FREQ) e.freq++;
  }

  admit(key: string, size: number, admission: Admission = 'new'): string[] {
    checkSize(key, size);
    if (this.#entries.has(key)) {
      this.hit(key);
      return [];
    }
    if (size > this.capacity) return [key];
    const ghost = this.#ghosts.get(key);
    if (ghost) this.#dropGhost(ghost);
    const evicted: string[] = [];
    while (this.bytes + size > this.capacity) evicted.push(this.#evictOne());
    const queue = ghost !== undefined || admission === 'restored' ? 'main' : 'small';
    const e = new FifoEntry(key, size, queue);
    this.#entries.set(key, e);
    (queue === 'main' ? this.#main : this.#small).pushHead(e);
    return evicted;
  }

  remove(key: string): boolean {
    const e = this.#entries.get(key);
    if (!e) return false;
    (e.queue === 'main' ? this.#main : this.#small).unlink(e);
    this.#entries.delete(key);
    return true;
  }

  /**
   * Evicts one key. Entries hit while in small move to main instead (lazy
   * promotion); entries in main with a non-zero counter go round again with
   * it decremented. Amortized O(1): each move or reinsertion is paid for by
   * an earlier admission or hit. Called only while something is held.
   */
  #evictOne(): string {
    for (;;) {
      const fromSmall = this.#small.tail !== undefined && (this.#small.bytes > this.smallTarget || this.#main.tail === undefined);
      if (fromSmall) {
        const e = this.#small.tail!;
        this.#small.unlink(e);
        if (e.freq > 0) {
          // Promoted; it must earn its keep in main afresh.
          e.freq = 0;
          e.queue = 'main';
          this.#main.pushHead(e);
          continue;
        }
        this.#entries.delete(e.key);
        this.#addGhost(e.key, e.size);
        return e.key;
      }
      const e = this.#main.tail!;
      if (e.freq > 0) {
        e.freq--;
        this.#main.moveToHead(e);
        continue;
      }
      this.#main.unlink(e);
      this.#entries.delete(e.key);
      return e.key;
    }
  }

  #addGhost(key: string, size: number): void {
    const g = new GhostEntry(key, size);
    this.#ghosts.set(key, g);
    this.#ghostOrder.pushHead(g);
    const limit = this.capacity - this.smallTarget;
    while (this.#ghostOrder.bytes > limit) this.#dropGhost(this.#ghostOrder.tail!);
  }

  #dropGhost(g: GhostEntry): void {
    this.#ghostOrder.unlink(g);
    this.#ghosts.delete(g.key);
  }
}
