import assert from 'node:assert/strict';
import { createPolicy, POLICY_NAMES, type EvictionPolicy, type PolicyName } from './eviction.js';
import { CHUNK_SIZE, hotAndScans, imageStarts, replay, seededRandom } from './trace-gen.js';

/** Admits each key with size 1 (unless given) and returns everything evicted on the way. */
function admitAll(p: EvictionPolicy, keys: readonly string[], size = 1): string[] {
  return keys.flatMap((k) => p.admit(k, size));
}

function range(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}${i}`);
}

describe('eviction policies', () => {
  for (const name of POLICY_NAMES) {
    describe(name, () => {
      it('never exceeds the capacity, and what admit reports evicted is exactly what left', () => {
        const random = seededRandom(7);
        const capacity = 1000;
        const p = createPolicy(name, capacity);
        const held = new Map<string, number>(); // what the evicted lists say is held, and sizes
        for (let i = 0; i < 20_000; i++) {
          const key = `k${Math.floor(random() * 300)}`;
          const op = random();
          if (op < 0.5) {
            if (p.has(key)) p.hit(key);
            else {
              const size = random() < 0.01 ? 1200 : 1 + Math.floor(random() * 100);
              const evicted = p.admit(key, size);
              held.set(key, size);
              for (const k of evicted) {
                assert.ok(held.has(k), `${name} evicted ${k}, which it did not hold`);
                held.delete(k);
              }
              if (size > capacity) assert.deepEqual(evicted, [key], 'a key larger than the cache evicts only itself');
            }
          } else if (op < 0.9) {
            p.hit(key);
          } else {
            assert.equal(p.remove(key), held.delete(key));
          }
          assert.ok(p.bytes <= capacity, `${name}: ${p.bytes} bytes held > capacity ${capacity} after op ${i}`);
        }
        let bytes = 0;
        for (const s of held.values()) bytes += s;
        assert.equal(p.size, held.size);
        assert.equal(p.bytes, bytes);
        for (const k of range('k', 300)) assert.equal(p.has(k), held.has(k), k);
      });

      it('admitting a held key is a hit and evicts nothing', () => {
        const p = createPolicy(name, 2);
        admitAll(p, ['a', 'b']);
        assert.deepEqual(p.admit('a', 1), []);
        assert.equal(p.size, 2);
        assert.equal(p.bytes, 2);
      });

      it('refuses sizes that are not byte counts', () => {
        const p = createPolicy(name, 10);
        assert.throws(() => p.admit('a', -1), RangeError);
        assert.throws(() => p.admit('a', 1.5), RangeError);
        assert.throws(() => createPolicy(name, -1), RangeError);
      });
    });
  }

  describe('lru', () => {
    it('evicts the least recently used key', () => {
      const p = createPolicy('lru', 3);
      assert.deepEqual(admitAll(p, ['a', 'b', 'c']), []);
      p.hit('a');
      assert.deepEqual(p.admit('d', 1), ['b']);
      assert.deepEqual(p.admit('e', 2), ['c', 'a']);
      assert.ok(p.has('d') && p.has('e'));
    });

    it('matches a reference model under random operations', () => {
      for (let seed = 1; seed <= 20; seed++) {
        const random = seededRandom(seed);
        const capacity = 50 + Math.floor(random() * 200);
        const p = createPolicy('lru', capacity);
        // Reference: keys in recency order, least recent first.
        const order: string[] = [];
        const sizes = new Map<string, number>();
        const touch = (k: string): void => {
          order.splice(order.indexOf(k), 1);
          order.push(k);
        };
        for (let i = 0; i < 2000; i++) {
          const key = `k${Math.floor(random() * 40)}`;
          const op = random();
          if (op < 0.6) {
            const size = Math.floor(random() * 60);
            const got = p.admit(key, size);
            let want: string[] = [];
            if (sizes.has(key)) touch(key);
            else if (size > capacity) want = [key];
            else {
              let bytes = [...sizes.values()].reduce((a, b) => a + b, 0);
              while (bytes + size > capacity) {
                const v = order.shift()!;
                bytes -= sizes.get(v)!;
                sizes.delete(v);
                want.push(v);
              }
              order.push(key);
              sizes.set(key, size);
            }
            assert.deepEqual(got, want, `seed ${seed} op ${i}: admit ${key} ${size}`);
          } else if (op < 0.9) {
            p.hit(key);
            if (sizes.has(key)) touch(key);
          } else {
            const had = sizes.delete(key);
            if (had) order.splice(order.indexOf(key), 1);
            assert.equal(p.remove(key), had);
          }
          assert.equal(p.size, sizes.size);
        }
      }
    });
  });

  describe('lru2', () => {
    it('keeps twice-used keys over a scan of once-used ones', () => {
      const p = createPolicy('lru2', 4);
      admitAll(p, ['a', 'b']);
      p.hit('a');
      p.hit('b');
      const evicted = admitAll(p, range('scan', 50));
      assert.ok(p.has('a') && p.has('b'), 'the twice-used keys survive');
      assert.deepEqual(evicted, range('scan', 48), 'once-used keys leave oldest first');
      // Plain LRU loses both to the same scan.
      const lru = createPolicy('lru', 4);
      admitAll(lru, ['a', 'b']);
      lru.hit('a');
      lru.hit('b');
      admitAll(lru, range('scan', 50));
      assert.ok(!lru.has('a') && !lru.has('b'));
    });

    it('evicts the key whose second most recent access is oldest, not the least recent one', () => {
      const p = createPolicy('lru2', 2);
      admitAll(p, ['a']); // t1
      p.hit('a'); // t2: a = (2, 1)
      admitAll(p, ['b']); // t3
      p.hit('b'); // t4: b = (4, 3)
      p.hit('a'); // t5: a = (5, 2): the most recent, but its 2nd access (2) is older than b's (3)
      assert.deepEqual(p.admit('c', 1), ['a']);
      const lru = createPolicy('lru', 2);
      admitAll(lru, ['a']);
      lru.hit('a');
      admitAll(lru, ['b']);
      lru.hit('b');
      lru.hit('a');
      assert.deepEqual(lru.admit('c', 1), ['b']);
    });

    it('remembers evicted keys: a key fetched again counts its earlier access', () => {
      const p = createPolicy('lru2', 2);
      admitAll(p, ['x', 'y']);
      assert.deepEqual(p.admit('z', 1), ['x']);
      assert.deepEqual(p.admit('x', 1), ['y'], 'x comes back; the once-used y goes');
      // x now has two accesses; new once-used keys go before it.
      assert.deepEqual(admitAll(p, ['w', 'v']), ['z', 'w']);
      assert.ok(p.has('x'));
    });

    it('bounds the history of evicted keys', () => {
      const p = createPolicy('lru2', 1, { historyEntries: 1 });
      admitAll(p, ['x', 'y', 'z']); // x then y evicted; the history keeps only y
      assert.deepEqual(p.admit('x', 1), ['z']);
      assert.deepEqual(p.admit('y', 1), ['x'], 'y was remembered (two accesses), x was not (one), so x goes');
      // Had x been remembered, the victim would have been the one with the older second access.
    });

    it('matches a naive reference model under random operations', () => {
      for (let seed = 1; seed <= 20; seed++) {
        const random = seededRandom(100 + seed);
        const capacity = 50 + Math.floor(random() * 200);
        const historyEntries = Math.floor(random() * 8);
        const p = createPolicy('lru2', capacity, { historyEntries });
        // Reference: linear scans over every entry.
        const entries = new Map<string, { size: number; last: number; previous?: number }>();
        const history = new Map<string, number>(); // insertion order = age
        let clock = 0;
        const victim = (): string => {
          let best: [string, number, boolean] | undefined; // key, time, once
          for (const [k, e] of entries) {
            const once = e.previous === undefined;
            const t = once ? e.last : e.previous!;
            if (!best || (once && !best[2]) || (once === best[2] && t < best[1])) best = [k, t, once];
          }
          return best![0];
        };
        for (let i = 0; i < 2000; i++) {
          const key = `k${Math.floor(random() * 40)}`;
          const op = random();
          if (op < 0.6) {
            const size = Math.floor(random() * 60);
            const got = p.admit(key, size);
            const want: string[] = [];
            const e = entries.get(key);
            if (e) {
              e.previous = e.last;
              e.last = ++clock;
            } else if (size > capacity) {
              want.push(key);
            } else {
              const now = ++clock;
              const remembered = history.get(key);
              history.delete(key);
              let bytes = [...entries.values()].reduce((a, b) => a + b.size, 0);
              while (bytes + size > capacity) {
                const v = victim();
                bytes -= entries.get(v)!.size;
                history.set(v, entries.get(v)!.last);
                entries.delete(v);
                while (history.size > historyEntries) history.delete(history.keys().next().value!);
                want.push(v);
              }
              entries.set(key, remembered === undefined ? { size, last: now } : { size, last: now, previous: remembered });
            }
            assert.deepEqual(got, want, `seed ${seed} op ${i}: admit ${key} ${size}`);
          } else if (op < 0.9) {
            p.hit(key);
            const e = entries.get(key);
            if (e) {
              e.previous = e.last;
              e.last = ++clock;
            }
          } else {
            assert.equal(p.remove(key), entries.delete(key));
          }
        }
      }
    });
  });

  describe('s3fifo', () => {
    // Capacity 100 bytes of 10-byte keys: 10 keys; the small queue aims at 10 bytes (one key).
    it('one-hit wonders leave from the small queue; keys hit there move to main and stay', () => {
      const p = createPolicy('s3fifo', 100);
      admitAll(p, range('k', 10), 10);
      p.hit('k0');
      p.hit('k1');
      const evicted = admitAll(p, range('scan', 30), 10);
      assert.ok(p.has('k0') && p.has('k1'), 'hit keys were promoted to main');
      for (const k of range('k', 10).slice(2)) assert.ok(evicted.includes(k), `${k} (never hit) was evicted`);
      assert.ok(evicted.indexOf('k2') < evicted.indexOf('k9'), 'small is FIFO');
    });

    it('a key evicted from small and seen again (a ghost hit) goes to main', () => {
      const p = createPolicy('s3fifo', 100);
      admitAll(p, ['g', ...range('k', 9)], 10);
      assert.deepEqual(p.admit('n', 10), ['g'], 'g leaves small unhit');
      p.admit('g', 10); // back from the ghost queue: into main
      p.admit('fresh', 10); // a plain newcomer: into small
      admitAll(p, range('scan', 50), 10);
      assert.ok(p.has('g'), 'g, in main, survives a scan');
      assert.ok(!p.has('fresh'), 'a newcomer does not');
    });

    it('main reinserts keys with a non-zero counter, decrementing it', () => {
      const p = createPolicy('s3fifo', 100);
      assert.deepEqual(admitAll(p, range('k', 10), 10), []);
      assert.deepEqual(admitAll(p, range('n', 4), 10), range('k', 4), 'k0..k3 leave small unhit, into the ghost queue');
      assert.deepEqual(admitAll(p, range('k', 4), 10), ['k4', 'k5', 'k6', 'k7'], 'ghost hits go to main; small loses its oldest');
      // Refill main from the ghost queue until small is down to its target (one key, n3).
      assert.deepEqual(admitAll(p, ['k4', 'k5', 'k6', 'k7', 'k8'], 10), ['k8', 'k9', 'n0', 'n1', 'n2']);
      p.hit('k0');
      // Small is at its target, so eviction takes from main: k0 (oldest, hit) goes round again, k1 goes.
      assert.deepEqual(p.admit('k9', 10), ['k1']);
      assert.deepEqual(p.admit('k1', 10), ['k2'], 'k0 is at the head now; k2 is the oldest with a zero counter');
      assert.ok(p.has('k0'));
    });

    it('restored keys start in main', () => {
      const p = createPolicy('s3fifo', 100);
      p.admit('old', 10, 'restored');
      admitAll(p, range('scan', 50), 10);
      assert.ok(p.has('old'));
    });
  });

  describe('scan resistance on a generated trace', () => {
    function ratios(trace: { requests: readonly { key: string; size: number }[] }, capacity: number): Record<PolicyName, number> {
      const out = {} as Record<PolicyName, number>;
      for (const name of POLICY_NAMES) {
        const r = replay(createPolicy(name, capacity), trace.requests);
        out[name] = r.hits / r.requests;
      }
      return out;
    }

    it('LRU-2 and S3-FIFO beat LRU on a hot set interleaved with one-off scans', () => {
      const trace = hotAndScans({ seed: 42, hotKeys: 300, hotRequests: 30_000, scanEvery: 300, scanLength: 400 });
      const r = ratios(trace, 200 * CHUNK_SIZE);
      assert.ok(r.lru2 > r.lru * 1.2, `lru2 ${r.lru2.toFixed(3)} vs lru ${r.lru.toFixed(3)}`);
      assert.ok(r.s3fifo > r.lru * 1.2, `s3fifo ${r.s3fifo.toFixed(3)} vs lru ${r.lru.toFixed(3)}`);
    });

    it('…and on image starts interleaved with one-off big starts', () => {
      const trace = imageStarts({ seed: 9, bases: 2, baseChunks: 40, images: 20, ownChunks: [10, 60], starts: 400, oneOffEvery: 10, oneOffChunks: 600 });
      const r = ratios(trace, Math.floor(trace.distinctBytes * 0.1));
      assert.ok(r.lru2 > r.lru, `lru2 ${r.lru2.toFixed(3)} vs lru ${r.lru.toFixed(3)}`);
      assert.ok(r.s3fifo > r.lru, `s3fifo ${r.s3fifo.toFixed(3)} vs lru ${r.lru.toFixed(3)}`);
    });

    it('traces are deterministic for a seed', () => {
      const a = hotAndScans({ seed: 3, hotKeys: 50, hotRequests: 500, scanEvery: 100, scanLength: 20 });
      const b = hotAndScans({ seed: 3, hotKeys: 50, hotRequests: 500, scanEvery: 100, scanLength: 20 });
      const c = hotAndScans({ seed: 4, hotKeys: 50, hotRequests: 500, scanEvery: 100, scanLength: 20 });
      assert.deepEqual(a, b);
      assert.notDeepEqual(a.requests, c.requests);
      assert.equal(a.requests.length, 500 + 5 * 20);
    });
  });
});
