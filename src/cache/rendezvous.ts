/**
 * Rendezvous (highest-random-weight) hashing: which cache nodes hold a key.
 *
 * Every node gets a weight per key, SHA-256(node ‖ key); the key lives on the
 * n heaviest. No ring, no table, nothing to agree on: every reader with the
 * same node list computes the same answer. When a node leaves, only the keys
 * it held move (each to the next-heaviest node); when a node joins, it takes
 * only the keys it now outweighs, one place each.
 *
 * That minimal movement is a property of the *set* of the n heaviest nodes,
 * not of their order: removing the node ranked 1st shifts every later rank by
 * one. So the shared tier does not tie shard i to rank i for reading; each
 * shard records its index in its own header and a reader asks all n nodes
 * for the same key (see redis-ec.ts). A node leaving then costs exactly its
 * own shard of each chunk it held, which the parity covers.
 */
import { createHash } from 'node:crypto';

/** The weight of `node` for `key`: 32 bytes, compared as a big-endian number. */
export function nodeWeight(node: string, key: string): Buffer {
  const n = Buffer.from(node, 'utf8');
  const k = Buffer.from(key, 'utf8');
  // Length-prefixed, so ("ab", "c") and ("a", "bc") weigh differently.
  const input = Buffer.allocUnsafe(4 + n.length + k.length);
  input.writeUInt32BE(n.length, 0);
  n.copy(input, 4);
  k.copy(input, 4 + n.length);
  // SHA-256, not BLAKE3: on inputs this short the cost is the call, and node's
  // built-in hash call is ~5x cheaper than the BLAKE3 addon's (a get ranks
  // every node).
  return createHash('sha256').update(input).digest();
}

/** `nodes` heaviest first for `key`. The order of `nodes` does not matter; ties (never seen in practice) go by node id. */
export function rankNodes<N extends string>(key: string, nodes: readonly N[]): N[] {
  return nodes
    .map((node) => ({ node, w: nodeWeight(node, key) }))
    .sort((a, b) => Buffer.compare(b.w, a.w) || (a.node < b.node ? -1 : a.node > b.node ? 1 : 0))
    .map((x) => x.node);
}

/** The `n` nodes that hold `key`, heaviest first. */
export function topNodes<N extends string>(key: string, nodes: readonly N[], n: number): N[] {
  if (n > nodes.length) throw new RangeError(`Cannot place ${n} shards on ${nodes.length} nodes`);
  return rankNodes(key, nodes).slice(0, n);
}
