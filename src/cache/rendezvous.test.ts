import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { rankNodes, topNodes } from './rendezvous.js';

const NODES = ['redis://10.0.0.1:6379', 'redis://10.0.0.2:6379', 'redis://10.0.0.3:6379', 'unix:///run/redis/a.sock', 'unix:///run/redis/b.sock', 'redis://cache-6:6379'];
/** 10k keys shaped like chunk ids. */
const KEYS = Array.from({ length: 10_000 }, (_, i) => createHash('sha256').update(`key ${i}`).digest('hex'));
const N = 5; // 4 + 1 shards per chunk

/** The (key, node) placements of the n heaviest nodes per key. */
function placements(nodes: readonly string[]): Map<string, Set<string>> {
  return new Map(KEYS.map((k) => [k, new Set(topNodes(k, nodes, N))]));
}

describe('rendezvous hashing', () => {
  it('is deterministic and does not depend on the order nodes are listed in', () => {
    const shuffled = [NODES[3]!, NODES[0]!, NODES[5]!, NODES[1]!, NODES[4]!, NODES[2]!];
    for (const k of KEYS.slice(0, 500)) {
      const r = rankNodes(k, NODES);
      assert.deepEqual(rankNodes(k, NODES), r);
      assert.deepEqual(rankNodes(k, shuffled), r);
      assert.deepEqual([...r].sort(), [...NODES].sort());
    }
    // Different keys get different orders (the ranking is not one fixed order).
    const orders = new Set(KEYS.slice(0, 500).map((k) => rankNodes(k, NODES).join(' ')));
    assert.ok(orders.size > 300, `${orders.size} distinct orders of 6 nodes over 500 keys`);
  });

  it('spreads keys evenly: each node is heaviest for about 1/6 of the keys and holds a shard of about 5/6', () => {
    const first = new Map<string, number>();
    const held = new Map<string, number>();
    for (const k of KEYS) {
      const r = rankNodes(k, NODES);
      first.set(r[0]!, (first.get(r[0]!) ?? 0) + 1);
      for (const n of r.slice(0, N)) held.set(n, (held.get(n) ?? 0) + 1);
    }
    for (const n of NODES) {
      // Expected 1667 ± 37 (1 sd); 15% is over 6 sd.
      const f = first.get(n) ?? 0;
      assert.ok(Math.abs(f - KEYS.length / 6) < 0.15 * (KEYS.length / 6), `${n} heaviest for ${f} keys`);
      const h = held.get(n) ?? 0;
      assert.ok(Math.abs(h - (KEYS.length * 5) / 6) < 0.05 * ((KEYS.length * 5) / 6), `${n} holds ${h}`);
    }
  });

  it('when one of 6 nodes leaves, only the placements on that node move (about its 1/6 share)', () => {
    const before = placements(NODES);
    const gone = NODES[2]!;
    const after = placements(NODES.filter((n) => n !== gone));
    let total = 0;
    let onGone = 0;
    let changed = 0;
    for (const k of KEYS) {
      const b = before.get(k)!;
      const a = after.get(k)!;
      total += b.size;
      if (b.has(gone)) onGone++;
      const lost = [...b].filter((n) => !a.has(n));
      const gained = [...a].filter((n) => !b.has(n));
      changed += lost.length;
      // Exactly the leaving node's placement moves, to one other node; nothing else.
      assert.deepEqual(lost, b.has(gone) ? [gone] : []);
      assert.equal(gained.length, lost.length);
    }
    assert.equal(changed, onGone);
    const share = changed / total;
    assert.ok(share > 0.15 && share < 0.19, `moved ${(share * 100).toFixed(1)}% of placements (the node's share is 1/6)`);
  });

  it('when a 7th node joins, it takes about 1/7 of the placements and nothing else moves', () => {
    const before = placements(NODES);
    const added = 'redis://10.0.0.7:6379';
    const after = placements([...NODES, added]);
    let total = 0;
    let changed = 0;
    for (const k of KEYS) {
      const b = before.get(k)!;
      const a = after.get(k)!;
      total += a.size;
      const gained = [...a].filter((n) => !b.has(n));
      const lost = [...b].filter((n) => !a.has(n));
      // Either nothing changes or the newcomer takes exactly one node's place.
      assert.deepEqual(gained, a.has(added) ? [added] : []);
      assert.equal(lost.length, gained.length);
      changed += gained.length;
    }
    const share = changed / total;
    assert.ok(share > 0.125 && share < 0.16, `the new node took ${(share * 100).toFixed(1)}% of placements (its share is 1/7)`);
  });

  it('topNodes refuses more shards than nodes', () => {
    assert.throws(() => topNodes('k', NODES, 7), RangeError);
  });
});
