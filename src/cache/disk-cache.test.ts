import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { UsageError } from '../errors.js';
import type { ChunkId } from '../chunks/id.js';
import { requireRoot, run, tmpDir, type TmpDir } from '../testing/tools.js';
import { DiskCache } from './disk-cache.js';
import { seededRandom } from './trace-gen.js';

const KiB = 1024;

/** A chunk and its name (sha256 here: the cache never checks names, the fetcher does). */
function chunk(bytes: Buffer): { id: ChunkId; data: Buffer } {
  return { id: createHash('sha256').update(bytes).digest('hex') as ChunkId, data: bytes };
}

function randomChunk(size: number): { id: ChunkId; data: Buffer } {
  return chunk(randomBytes(size));
}

/** Every chunk file under DIR/chunks (name → size), and temp files separately. */
function onDisk(dir: string): { files: Map<string, number>; temps: string[]; bytes: number } {
  const files = new Map<string, number>();
  const temps: string[] = [];
  let bytes = 0;
  const root = path.join(dir, 'chunks');
  if (!existsSync(root)) return { files, temps, bytes };
  for (const shard of readdirSync(root)) {
    if (!statSync(path.join(root, shard)).isDirectory()) continue;
    for (const name of readdirSync(path.join(root, shard))) {
      const size = statSync(path.join(root, shard, name)).size;
      if (name.endsWith('.tmp')) temps.push(name);
      else {
        files.set(name, size);
        bytes += size;
      }
    }
  }
  return { files, temps, bytes };
}

function chunkPath(dir: string, id: string): string {
  return path.join(dir, 'chunks', id.slice(0, 2), id);
}

/** Checks that the index and the files agree and the capacity holds. */
function assertConsistent(cache: DiskCache, dir: string): void {
  const disk = onDisk(dir);
  const s = cache.stats();
  assert.ok(disk.bytes <= s.capacityBytes, `${disk.bytes} bytes of chunk files > capacity ${s.capacityBytes}`);
  assert.equal(disk.files.size, s.entries, 'files on disk = entries in the index');
  assert.equal(disk.bytes, s.bytes, 'bytes on disk = bytes in the index');
  assert.deepEqual(disk.temps, [], 'no temp files left');
}

/** A pid that is certainly not running: a child that has exited and been reaped. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((resolve) => child.on('close', resolve));
  return child.pid!;
}

describe('DiskCache', function () {
  let tmp: TmpDir;
  let dir: string;
  const open: DiskCache[] = [];

  async function openCache(capacityBytes: number, policy?: 'lru' | 'lru2' | 's3fifo'): Promise<DiskCache> {
    const c = await DiskCache.open(policy ? { dir, capacityBytes, policy } : { dir, capacityBytes });
    open.push(c);
    return c;
  }

  beforeEach(async () => {
    tmp = await tmpDir('disk-cache');
    dir = path.join(tmp.path, 'cache');
  });

  afterEach(async () => {
    for (const c of open.splice(0)) await c.close();
    await tmp.cleanup();
  });

  it('round-trips chunks under DIR/chunks/<2 hex>/<id>', async () => {
    const cache = await openCache(1024 * KiB);
    const a = randomChunk(100 * KiB);
    const b = randomChunk(1); // a short last chunk
    assert.equal(await cache.get(a.id), undefined);
    await cache.put(a.id, a.data);
    await cache.put(b.id, b.data);
    assert.deepEqual(await cache.get(a.id), a.data);
    assert.deepEqual(await cache.get(b.id), b.data);
    assert.deepEqual(readFileSync(chunkPath(dir, a.id)), a.data);
    // A second put of a present id is a no-op: the file is not rewritten.
    const before = statSync(chunkPath(dir, a.id)).ino;
    await cache.put(a.id, a.data);
    assert.equal(statSync(chunkPath(dir, a.id)).ino, before);
    const s = cache.stats();
    assert.deepEqual(
      { entries: s.entries, bytes: s.bytes, capacityBytes: s.capacityBytes, evictions: s.evictions, policy: s.policy },
      { entries: 2, bytes: 100 * KiB + 1, capacityBytes: 1024 * KiB, evictions: 0, policy: 'lru2' },
    );
    assertConsistent(cache, dir);
  });

  it('refuses a bad capacity, an unknown policy and ids that are not chunk names', async () => {
    await assert.rejects(DiskCache.open({ dir, capacityBytes: -1 }), UsageError);
    await assert.rejects(DiskCache.open({ dir, capacityBytes: 10, policy: 'mru' as 'lru' }), /unknown cache policy "mru"/);
    const cache = await openCache(10);
    await assert.rejects(cache.get('../../etc/passwd' as ChunkId), /invalid disk cache chunk id/);
  });

  for (const policy of ['lru', 'lru2', 's3fifo'] as const) {
    it(`keeps the bytes on disk within the capacity under many puts (${policy})`, async () => {
      const capacity = 600 * KiB;
      const cache = await openCache(capacity, policy);
      const random = seededRandom(5);
      const chunks = Array.from({ length: 60 }, () => randomChunk(1 + Math.floor(random() * 100 * KiB)));
      for (const [i, c] of chunks.entries()) {
        await cache.put(c.id, c.data);
        if (i % 3 === 0) await cache.get(chunks[Math.floor(random() * (i + 1))]!.id);
        assertConsistent(cache, dir);
      }
      // Concurrent puts too.
      await Promise.all(Array.from({ length: 40 }, () => randomChunk(1 + Math.floor(random() * 100 * KiB))).map((c) => cache.put(c.id, c.data)));
      assertConsistent(cache, dir);
      assert.ok(cache.stats().evictions > 0);
      // Whatever is listed reads back whole.
      for (const c of chunks) {
        const got = await cache.get(c.id);
        if (got) assert.deepEqual(got, c.data);
      }
    });
  }

  it('does not keep a chunk larger than the whole capacity', async () => {
    const cache = await openCache(64 * KiB);
    const small = randomChunk(10 * KiB);
    const big = randomChunk(64 * KiB + 1);
    await cache.put(small.id, small.data);
    await cache.put(big.id, big.data);
    assert.equal(await cache.get(big.id), undefined);
    assert.deepEqual(await cache.get(small.id), small.data, 'nothing was evicted for it');
    assert.equal(cache.stats().tooLarge, 1);
    assertConsistent(cache, dir);
  });

  it('keeps its entries across a reopen, and evicts the oldest down to a smaller capacity', async () => {
    let cache = await openCache(1024 * KiB, 'lru');
    const chunks = Array.from({ length: 8 }, () => randomChunk(100 * KiB));
    for (const c of chunks) await cache.put(c.id, c.data);
    await cache.close();
    // Make the ages unambiguous: chunk i is i minutes younger than chunk 0.
    chunks.forEach((c, i) => utimesSync(chunkPath(dir, c.id), 1_700_000_000 + i * 60, 1_700_000_000 + i * 60));
    cache = await openCache(1024 * KiB, 'lru');
    assert.equal(cache.stats().entries, 8);
    for (const c of chunks) assert.deepEqual(await cache.get(c.id), c.data);
    await cache.close();
    cache = await openCache(350 * KiB, 'lru');
    assert.equal(cache.stats().entries, 3);
    assert.equal(cache.stats().evictions, 5);
    for (const [i, c] of chunks.entries()) assert.equal((await cache.get(c.id)) !== undefined, i >= 5, `chunk ${i}`);
    assertConsistent(cache, dir);
  });

  it('removes temp files left by a crash, and leaves strangers alone', async () => {
    const c = randomChunk(10 * KiB);
    const shard = path.join(dir, 'chunks', c.id.slice(0, 2));
    mkdirSync(shard, { recursive: true });
    writeFileSync(path.join(shard, `.${c.id}.0123abcd.tmp`), c.data.subarray(0, 5000));
    writeFileSync(path.join(dir, 'chunks', 'README'), 'not a chunk');
    const cache = await openCache(1024 * KiB);
    assert.deepEqual(onDisk(dir).temps, []);
    assert.equal(cache.stats().entries, 0);
    assert.equal(await cache.get(c.id), undefined, 'a half-written chunk is not an entry');
    assert.ok(existsSync(path.join(dir, 'chunks', 'README')));
  });

  it('drop removes the file; dropping a missing id is fine', async () => {
    const cache = await openCache(1024 * KiB);
    const c = randomChunk(10 * KiB);
    await cache.put(c.id, c.data);
    await cache.drop(c.id);
    assert.ok(!existsSync(chunkPath(dir, c.id)));
    assert.equal(await cache.get(c.id), undefined);
    await cache.drop(c.id);
    assert.equal(cache.stats().entries, 0);
    // And it can be cached again.
    await cache.put(c.id, c.data);
    assert.deepEqual(await cache.get(c.id), c.data);
  });

  it('returns a chunk corrupted on disk as it is (the fetcher checks names), and drop removes it', async () => {
    const cache = await openCache(1024 * KiB);
    const c = randomChunk(10 * KiB);
    await cache.put(c.id, c.data);
    const bad = Buffer.from(c.data);
    bad[100] = bad[100]! ^ 0xff;
    writeFileSync(chunkPath(dir, c.id), bad.subarray(0, 8000)); // flipped and truncated
    assert.deepEqual(await cache.get(c.id), bad.subarray(0, 8000));
    await cache.drop(c.id);
    assert.ok(!existsSync(chunkPath(dir, c.id)));
    await cache.put(c.id, c.data);
    assert.deepEqual(await cache.get(c.id), c.data);
  });

  it('survives concurrent gets, puts and drops of the same ids without errors or torn chunks', async () => {
    const cache = await openCache(300 * KiB, 's3fifo');
    const random = seededRandom(11);
    const chunks = Array.from({ length: 20 }, (_, i) => randomChunk(10 * KiB + i * 3 * KiB));
    let hits = 0;
    for (let wave = 0; wave < 40; wave++) {
      const ops = Array.from({ length: 40 }, async () => {
        const c = chunks[Math.floor(random() * chunks.length)]!;
        const op = random();
        if (op < 0.5) {
          const got = await cache.get(c.id);
          if (got) {
            hits++;
            assert.ok(got.equals(c.data), `chunk ${c.id} read back different bytes`);
          }
        } else if (op < 0.9) {
          await cache.put(c.id, c.data);
        } else {
          await cache.drop(c.id);
        }
      });
      await Promise.all(ops);
    }
    assert.ok(hits > 0);
    assertConsistent(cache, dir);
    const s = cache.stats();
    assert.equal(s.failedPuts + s.failedReads + s.failedUnlinks, 0);
  });

  it('heals an index entry whose file was deleted behind its back', async () => {
    const cache = await openCache(1024 * KiB);
    const c = randomChunk(10 * KiB);
    await cache.put(c.id, c.data);
    rmSync(chunkPath(dir, c.id));
    assert.equal(await cache.get(c.id), undefined);
    await cache.drop(randomChunk(1).id); // runs after the repair queued by the miss
    assert.equal(cache.stats().entries, 0);
    await cache.put(c.id, c.data);
    assert.deepEqual(await cache.get(c.id), c.data);
  });

  it('answers I/O failures with misses and uncached puts, counting them', async () => {
    const cache = await openCache(1024 * KiB);
    const a = randomChunk(10 * KiB);
    // A regular file where a's shard directory should be: the put cannot write.
    mkdirSync(path.join(dir, 'chunks'), { recursive: true });
    writeFileSync(path.join(dir, 'chunks', a.id.slice(0, 2)), 'in the way');
    await cache.put(a.id, a.data);
    assert.equal(cache.stats().failedPuts, 1);
    assert.equal(await cache.get(a.id), undefined);
    // b's file replaced by a directory: reading it fails (EISDIR).
    let b = randomChunk(10 * KiB);
    while (b.id.slice(0, 2) === a.id.slice(0, 2)) b = randomChunk(10 * KiB);
    await cache.put(b.id, b.data);
    rmSync(chunkPath(dir, b.id));
    mkdirSync(chunkPath(dir, b.id));
    assert.equal(await cache.get(b.id), undefined);
    assert.equal(cache.stats().failedReads, 1);
  });

  it('fails puts, not reads, when the disk is full (ENOSPC on a 1 MiB tmpfs)', async function () {
    requireRoot(this, 'mounting a tmpfs');
    const mnt = path.join(tmp.path, 'tmpfs');
    mkdirSync(mnt);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    try {
      const cache = await DiskCache.open({ dir: mnt, capacityBytes: 8 * 1024 * KiB });
      try {
        const chunks = Array.from({ length: 12 }, () => randomChunk(200 * KiB));
        for (const c of chunks) await cache.put(c.id, c.data);
        const s = cache.stats();
        assert.ok(s.failedPuts > 0, 'some puts hit ENOSPC');
        assert.ok(s.entries > 0, 'the first ones fit');
        for (const c of chunks) {
          const got = await cache.get(c.id);
          if (got) assert.deepEqual(got, c.data);
        }
        assertConsistent(cache, mnt);
      } finally {
        await cache.close();
      }
    } finally {
      await run('umount', [mnt]);
    }
  });

  describe('lock', () => {
    it('refuses a second open of the same directory, naming the pid', async () => {
      await openCache(1024 * KiB);
      await assert.rejects(DiskCache.open({ dir, capacityBytes: 1024 }), (e: Error) => {
        assert.ok(e instanceof UsageError);
        assert.ok(e.message.includes(dir), e.message);
        assert.ok(e.message.includes(String(process.pid)), e.message);
        return true;
      });
    });

    it('refuses a directory locked by another live process', async () => {
      const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
      try {
        mkdirSync(dir, { recursive: true });
        writeFileSync(path.join(dir, 'lock'), `${child.pid}\n`);
        await assert.rejects(DiskCache.open({ dir, capacityBytes: 1024 }), new RegExp(`in use by process ${child.pid}\\b`));
      } finally {
        child.kill();
      }
    });

    it('takes over a stale lock (dead pid, or garbage), and close releases it', async () => {
      mkdirSync(dir, { recursive: true });
      const lock = path.join(dir, 'lock');
      writeFileSync(lock, `${await deadPid()}\n`);
      let cache = await openCache(1024 * KiB);
      assert.equal(readFileSync(lock, 'utf8'), `${process.pid}\n`);
      await cache.close();
      assert.ok(!existsSync(lock));
      writeFileSync(lock, '');
      cache = await openCache(1024 * KiB);
      assert.equal(readFileSync(lock, 'utf8'), `${process.pid}\n`);
      await cache.close();
      cache = await openCache(1024 * KiB);
    });

    it('after close, gets miss and puts are ignored', async () => {
      const cache = await openCache(1024 * KiB);
      const c = randomChunk(1 * KiB);
      await cache.put(c.id, c.data);
      await cache.close();
      assert.equal(await cache.get(c.id), undefined);
      await cache.put(randomChunk(1).id, Buffer.from('x'));
      assert.equal(onDisk(dir).files.size, 1);
    });
  });
});
