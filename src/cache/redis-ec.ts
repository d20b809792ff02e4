/**
 * The shared cache tier (L2): each chunk erasure-coded into k data + m parity
 * shards on k + m of N Redis nodes, as in the paper's AZ cache (4 + 1).
 *
 * Placement: rendezvous hashing picks the k + m heaviest nodes for the chunk
 * id (rendezvous.ts). Every one of them holds the same key,
 * `<prefix><id>:<k>+<m>`, and the shard's index is in its header
 * (shard-format.ts), not in the key. A writer puts shard i on the i-th
 * heaviest node, but a reader does not rely on that: it GETs the key from
 * all k + m nodes and takes whatever valid shards come back. That is what
 * makes a membership change cheap: when a node leaves or joins, the other
 * nodes keep their shards, the chunk is one shard short (which the parity
 * covers), and read repair gives the newcomer the missing index. Tying
 * index i to rank i would shift every later rank when a high-ranked node
 * leaves and lose half of the cached chunks on a 6-node cluster.
 *
 * Reads ask all k + m nodes at once and decode as soon as k *valid* shards
 * (header sane, check matches, bound to this chunk) are in; a slow or dead
 * node costs nothing. A node error, a timeout, a refused connection, nil or
 * an invalid value all just mean "that shard is missing"; with fewer than k
 * valid shards the answer is a miss, never a throw. Once every node has
 * answered, shards found missing, corrupt or duplicated on a live node are
 * rewritten from the decoded chunk in the background (read repair).
 *
 * Writes (the fetcher's write-back after an origin read) encode and SET all
 * shards in parallel; failures are counted, never thrown. Eviction is the
 * nodes' own (maxmemory-policy allkeys-lfu or similar); nothing expires.
 *
 * A dead node must never block or crash a reader: each node has its own
 * ioredis client with no offline queue (commands to a node that is not
 * connected fail at once), no retries per command, connect and command
 * timeouts, an 'error' listener (without one ioredis prints "Unhandled error
 * event") and a reconnect backoff that keeps trying, so a node that comes
 * back is used again.
 */
import { Redis } from 'ioredis';
import type { ChunkId } from '../chunks/id.js';
import { InterruptedError, UsageError } from '../errors.js';
import type { OpOptions } from '../store/store.js';
import { MAX_DATA_SHARDS, MAX_PARITY_SHARDS, decodeShards, encodeShards } from './erasure.js';
import { parseRedisNode, redact, type RedisNodeAddress } from './redis-node.js';
import { topNodes } from './rendezvous.js';
import { MAX_CHUNK_BYTES, packShard, unpackShard } from './shard-format.js';
import type { CacheTier } from './tier.js';

export interface RedisEcOptions {
  /** Node addresses (redis-node.ts): at least k + m of them, no node twice. */
  readonly nodes: readonly string[];
  /** Data shards per chunk. @default 4 */
  readonly k?: number;
  /** Parity shards per chunk: how many nodes may fail. @default 1 */
  readonly m?: number;
  /** Per command: a node that has not answered by then counts as missing. @default 1000 */
  readonly timeoutMs?: number;
  /** For connecting to a node. @default max(timeoutMs, 2000) */
  readonly connectTimeoutMs?: number;
  /** Longest wait between reconnect attempts to a node that is down. @default 1000 */
  readonly maxReconnectDelayMs?: number;
  /** Prefix of every key. @default 'cy:' */
  readonly keyPrefix?: string;
  /** Rewrite missing, corrupt or duplicate shards after a hit. @default true */
  readonly repair?: boolean;
}

export interface RedisEcStats {
  readonly gets: number;
  readonly hits: number;
  readonly misses: number;
  /** Valid shards received (stragglers that came after the decode included). */
  readonly shardsRead: number;
  /** Shards a node did not have (nil) or did not give (error, timeout, down). */
  readonly shardsMissing: number;
  /** Values that failed their check: wrong bytes, wrong chunk, wrong code, cut short. */
  readonly shardsCorrupt: number;
  /** Shards rewritten by read repair. */
  readonly repairs: number;
  readonly puts: number;
  /** Shard SETs that failed (a put still resolves). */
  readonly putErrors: number;
  /** Failed commands per node id (errors, timeouts, node down). */
  readonly nodeErrors: Readonly<Record<string, number>>;
}

/** Connection state of a node as ioredis reports it ('ready' = usable). */
export type NodeStatus = Redis['status'];

interface CacheNode {
  readonly id: string;
  readonly client: Redis;
  errors: number;
  lastError?: string;
}

/** What one node's answer to a shard GET turned out to be. */
type Answer =
  | { readonly kind: 'valid'; readonly index: number }
  | { readonly kind: 'duplicate'; readonly index: number }
  | { readonly kind: 'nil' }
  | { readonly kind: 'corrupt' }
  | { readonly kind: 'error' };

export class RedisEcTier implements CacheTier {
  readonly name = 'shared';
  readonly k: number;
  readonly m: number;
  private readonly nodes: readonly CacheNode[];
  private readonly byId: ReadonlyMap<string, CacheNode>;
  private readonly nodeIds: readonly string[];
  private readonly keyPrefix: string;
  private readonly repairEnabled: boolean;
  private readonly background = new Set<Promise<void>>();
  private closed = false;
  private readonly counters = { gets: 0, hits: 0, misses: 0, shardsRead: 0, shardsMissing: 0, shardsCorrupt: 0, repairs: 0, puts: 0, putErrors: 0 };

  private constructor(nodes: CacheNode[], k: number, m: number, keyPrefix: string, repair: boolean) {
    this.nodes = nodes;
    this.byId = new Map(nodes.map((n) => [n.id, n]));
    this.nodeIds = nodes.map((n) => n.id);
    this.k = k;
    this.m = m;
    this.keyPrefix = keyPrefix;
    this.repairEnabled = repair;
  }

  /**
   * Connects to every node and resolves once each is ready or has failed
   * its first attempt (bounded by the connect timeout): nodes that are down
   * are not an error, they are retried in the background. Throws UsageError
   * for bad options or addresses.
   */
  static async open(options: RedisEcOptions): Promise<RedisEcTier> {
    const k = options.k ?? 4;
    const m = options.m ?? 1;
    if (!Number.isInteger(k) || k < 1 || k > MAX_DATA_SHARDS) throw new UsageError(`invalid shared-tier k ${k}: want 1 to ${MAX_DATA_SHARDS} data shards`);
    if (!Number.isInteger(m) || m < 0 || m > MAX_PARITY_SHARDS) throw new UsageError(`invalid shared-tier m ${m}: want 0 to ${MAX_PARITY_SHARDS} parity shards`);
    if (options.nodes.length < k + m) {
      throw new UsageError(`the shared tier needs at least ${k + m} nodes for ${k}+${m} shards, got ${options.nodes.length}`);
    }
    const timeoutMs = positive('timeoutMs', options.timeoutMs ?? 1000);
    const connectTimeoutMs = positive('connectTimeoutMs', options.connectTimeoutMs ?? Math.max(timeoutMs, 2000));
    const maxDelay = positive('maxReconnectDelayMs', options.maxReconnectDelayMs ?? 1000);
    const addresses = options.nodes.map(parseRedisNode);
    const seen = new Map<string, string>();
    for (const [i, a] of addresses.entries()) {
      const before = seen.get(a.id);
      if (before !== undefined) throw new UsageError(`cache node ${JSON.stringify(redact(options.nodes[i]!))} is listed twice (also as ${JSON.stringify(redact(before))})`);
      seen.set(a.id, options.nodes[i]!);
    }
    const nodes = addresses.map((a) => connect(a, { timeoutMs, connectTimeoutMs, maxDelay }));
    await Promise.all(nodes.map((n) => firstAttempt(n.client, connectTimeoutMs)));
    return new RedisEcTier(nodes, k, m, options.keyPrefix ?? 'cy:', options.repair ?? true);
  }

  /** The Redis key every shard of `id` is stored under (one per node). */
  keyFor(id: ChunkId): string {
    return `${this.keyPrefix}${id}:${this.k}+${this.m}`;
  }

  /** The node ids holding `id`'s shards, heaviest first (a writer puts shard i on the i-th). */
  placement(id: ChunkId): string[] {
    return topNodes(id, this.nodeIds, this.k + this.m);
  }

  get(id: ChunkId, options: OpOptions = {}): Promise<Buffer | undefined> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(new InterruptedError(`interrupted reading chunk ${id} from the shared cache`));
    this.counters.gets++;
    if (this.closed) {
      this.counters.misses++;
      return Promise.resolve(undefined);
    }
    const { k, m } = this;
    const n = k + m;
    const placed = this.placement(id).map((nid) => this.byId.get(nid)!);
    const key = this.keyFor(id);
    const shards: (Buffer | undefined)[] = new Array<Buffer | undefined>(n).fill(undefined);
    const answers: Answer[] = [];
    let length: number | undefined;
    let valid = 0;
    let outstanding = n;
    let decoded: Promise<Buffer | undefined> | undefined;
    let allAnswered!: () => void;
    const everyAnswer = new Promise<void>((r) => (allAnswered = r));

    const result = new Promise<Buffer | undefined>((resolve, reject) => {
      let done = false;
      const onAbort = (): void => {
        if (done) return;
        done = true;
        reject(new InterruptedError(`interrupted reading chunk ${id} from the shared cache`));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const finish = (data: Buffer | undefined): void => {
        signal?.removeEventListener('abort', onAbort);
        if (data === undefined) this.counters.misses++;
        else this.counters.hits++;
        if (done) return;
        done = true;
        resolve(data);
      };

      const answered = (pos: number, answer: Answer, payload?: Buffer): void => {
        answers[pos] = answer;
        outstanding--;
        if (answer.kind === 'valid') {
          shards[answer.index] = payload;
          valid++;
          if (valid === k && decoded === undefined) {
            // Enough: decode now, from a snapshot; stragglers are only looked at for stats and repair.
            decoded = decodeShards([...shards], k, m, length!).catch(() => undefined);
            void decoded.then(finish);
          }
        }
        if (outstanding === 0) {
          if (decoded === undefined) finish(undefined);
          allAnswered();
        }
      };

      placed.forEach((node, pos) => {
        node.client.getBuffer(key).then(
          (value) => {
            if (value === null) {
              this.counters.shardsMissing++;
              return answered(pos, { kind: 'nil' });
            }
            let s: ReturnType<typeof unpackShard>;
            try {
              s = unpackShard(id, k, m, value);
            } catch (e) {
              s = { ok: false, why: String(e) }; // never let a bad value throw out of a read
            }
            if (!s.ok || (length !== undefined && s.length !== length)) {
              this.counters.shardsCorrupt++;
              return answered(pos, { kind: 'corrupt' });
            }
            this.counters.shardsRead++;
            length ??= s.length;
            if (shards[s.index] !== undefined) return answered(pos, { kind: 'duplicate', index: s.index });
            answered(pos, { kind: 'valid', index: s.index }, s.payload);
          },
          (e: unknown) => {
            this.nodeFailed(node, e);
            this.counters.shardsMissing++;
            answered(pos, { kind: 'error' });
          },
        );
      });
    });

    if (this.repairEnabled) {
      this.track(
        everyAnswer.then(async () => {
          const data = decoded === undefined ? undefined : await decoded;
          if (data !== undefined) await this.repair(id, key, placed, answers, data);
        }),
      );
    }
    return result;
  }

  /**
   * Read repair: gives each live node that answered nil, a corrupt value or
   * a second copy of an index one of the indices nobody holds, its own
   * (rank) index first. Corrupt values left over are deleted.
   */
  private async repair(id: ChunkId, key: string, placed: readonly CacheNode[], answers: readonly Answer[], data: Buffer): Promise<void> {
    const n = this.k + this.m;
    // Who holds which index. Answers arrive in any order, so 'valid' vs 'duplicate' only says who came first;
    // of several holders of one index, the node whose own (rank) index it is keeps it, else the heaviest.
    const holders = new Map<number, number[]>();
    answers.forEach((a, pos) => {
      if (a.kind === 'valid' || a.kind === 'duplicate') holders.set(a.index, [...(holders.get(a.index) ?? []), pos]);
    });
    const fixable = [...answers.keys()].filter((pos) => answers[pos]!.kind === 'nil' || answers[pos]!.kind === 'corrupt');
    for (const [index, list] of holders) {
      const keeper = list.includes(index) ? index : Math.min(...list);
      fixable.push(...list.filter((pos) => pos !== keeper));
    }
    if (fixable.length === 0) return;
    fixable.sort((a, b) => a - b);
    const missing = new Set([...Array(n).keys()].filter((i) => !holders.has(i)));
    const give = new Map<number, number>(); // position → index
    for (const pos of fixable) {
      if (missing.has(pos)) {
        give.set(pos, pos);
        missing.delete(pos);
      }
    }
    const rest = [...missing];
    for (const pos of fixable) if (!give.has(pos) && rest.length > 0) give.set(pos, rest.shift()!);
    const stray = fixable.filter((pos) => !give.has(pos) && answers[pos]!.kind === 'corrupt');
    const shards = give.size > 0 ? await encodeShards(data, this.k, this.m) : [];
    await Promise.all([
      ...[...give].map(async ([pos, index]) => {
        const node = placed[pos]!;
        try {
          await node.client.set(key, packShard(id, { k: this.k, m: this.m, index, length: data.length }, shards[index]!));
          this.counters.repairs++;
        } catch (e) {
          this.nodeFailed(node, e);
        }
      }),
      ...stray.map(async (pos) => {
        const node = placed[pos]!;
        await node.client.del(key).catch((e: unknown) => this.nodeFailed(node, e));
      }),
    ]);
  }

  /** Stores the k + m shards of `data`, shard i on the i-th heaviest node. Never rejects; failures are counted. */
  async put(id: ChunkId, data: Buffer, options: OpOptions = {}): Promise<void> {
    this.counters.puts++;
    if (this.closed || options.signal?.aborted) return;
    const placed = this.placement(id).map((nid) => this.byId.get(nid)!);
    const key = this.keyFor(id);
    let shards: Buffer[];
    try {
      if (data.length > MAX_CHUNK_BYTES) throw new RangeError(`chunk of ${data.length} bytes is too big for a shard header`);
      shards = await encodeShards(data, this.k, this.m);
    } catch {
      this.counters.putErrors += placed.length;
      return;
    }
    await Promise.all(
      placed.map(async (node, index) => {
        try {
          await node.client.set(key, packShard(id, { k: this.k, m: this.m, index, length: data.length }, shards[index]!));
        } catch (e) {
          this.counters.putErrors++;
          this.nodeFailed(node, e);
        }
      }),
    );
  }

  /** Deletes the chunk's key on every node (not only the current placement: shards may linger from before a membership change). */
  async drop(id: ChunkId): Promise<void> {
    if (this.closed) return;
    const key = this.keyFor(id);
    await Promise.all(this.nodes.map((node) => node.client.del(key).then(
      () => {},
      (e: unknown) => this.nodeFailed(node, e),
    )));
  }

  /** Resolves when the background work started so far (read repairs) has finished. */
  async settled(): Promise<void> {
    while (this.background.size > 0) await Promise.all([...this.background]);
  }

  stats(): RedisEcStats {
    return { ...this.counters, nodeErrors: Object.fromEntries(this.nodes.map((n) => [n.id, n.errors])) };
  }

  /** Each node's connection state, by node id. */
  nodeStatus(): Record<string, NodeStatus> {
    return Object.fromEntries(this.nodes.map((n) => [n.id, n.client.status]));
  }

  /** Waits for background repairs (each bounded by the command timeout), then disconnects from every node. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.settled();
    for (const n of this.nodes) n.client.disconnect();
  }

  private nodeFailed(node: CacheNode, e: unknown): void {
    node.errors++;
    node.lastError = e instanceof Error ? e.message : String(e);
  }

  private track(p: Promise<void>): void {
    // Background work never rejects into the void: a failure here is a node failure, already counted.
    const q = p.catch(() => {}).finally(() => this.background.delete(q));
    this.background.add(q);
  }
}

function positive(name: string, v: number): number {
  if (!Number.isFinite(v) || v <= 0) throw new UsageError(`invalid shared-tier ${name} ${v}: want a positive number of milliseconds`);
  return v;
}

interface ConnectSettings {
  readonly timeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly maxDelay: number;
}

function connect(a: RedisNodeAddress, s: ConnectSettings): CacheNode {
  const client = new Redis({
    ...(a.target.kind === 'unix' ? { path: a.target.path } : { host: a.target.host, port: a.target.port }),
    ...(a.target.kind === 'tcp' && a.target.tls ? { tls: { servername: a.target.host } } : {}),
    ...(a.username !== undefined ? { username: a.username } : {}),
    ...(a.password !== undefined ? { password: a.password } : {}),
    db: a.db,
    // Fail fast instead of queueing for a node that is not connected.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    connectTimeout: s.connectTimeoutMs,
    commandTimeout: s.timeoutMs,
    // Keep trying a node that is down (exponential from 50 ms, capped, with jitter so clients spread out).
    retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times - 1, 10), s.maxDelay) + Math.floor(Math.random() * 50),
    // One round trip less per connect, and servers without CLIENT SETINFO (older Redis, some RESP servers) stay quiet.
    disableClientInfo: true,
    connectionName: 'chunkyard-cache',
  });
  const node: CacheNode = { id: a.id, client, errors: 0 };
  // Connection errors (refused, reset, timed out) come here and are retried by retryStrategy;
  // without a listener ioredis would print "[ioredis] Unhandled error event" for each.
  client.on('error', (e: Error) => {
    node.lastError = e.message;
  });
  return node;
}

/** Resolves when `client` is ready, has failed a first attempt, or `ms` have passed. */
function firstAttempt(client: Redis, ms: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      client.off('ready', done);
      client.off('error', done);
      client.off('end', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    client.once('ready', done);
    client.once('error', done);
    client.once('end', done);
  });
}
