import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { tmpDir } from '../testing/tools.js';
import type { TmpDir } from '../testing/tools.js';
import { fileBlockDevice } from './device.js';
import type { BlockDevice } from './device.js';
import { cowOverlay, OVERLAY_BLOCK_SIZE } from './overlay.js';

/** mulberry32: a small seeded PRNG so a failing run can be replayed from its seed. */
function rng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n: number) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

function randomBuffer(rand: (n: number) => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = rand(256);
  return b;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** A base whose reads finish after a random short delay, so concurrent operations complete in shuffled order. */
function jittery(base: BlockDevice, rand: (n: number) => number): BlockDevice & { writes: number } {
  const dev = {
    writes: 0,
    size: base.size,
    readOnly: true,
    async read(offset: number, length: number, signal?: AbortSignal) {
      await new Promise((r) => setTimeout(r, rand(4)));
      return base.read(offset, length, signal);
    },
    async write() {
      dev.writes++;
      throw new Error('the base must never be written');
    },
    close: () => base.close(),
  };
  return dev;
}

describe('blockdev/overlay', function () {
  let tmp: TmpDir;
  beforeEach(async function () {
    tmp = await tmpDir('overlay');
  });
  afterEach(async function () {
    await tmp.cleanup();
  });

  // Sizes that end mid-block, so the last partial block is exercised too.
  for (const seed of [1, 2, 3, 4]) {
    it(`matches a Buffer model under random concurrent unaligned reads and writes (seed ${seed})`, async function () {
      const rand = rng(seed);
      const size = 37 * OVERLAY_BLOCK_SIZE + 1 + rand(OVERLAY_BLOCK_SIZE - 1);
      const baseBytes = randomBuffer(rand, size);
      const basePath = path.join(tmp.path, 'base.img');
      await writeFile(basePath, baseBytes);
      const baseFile = await fileBlockDevice(basePath);
      const base = jittery(baseFile, rand);
      const scratchDir = path.join(tmp.path, 'scratch');
      await mkdir(scratchDir);
      const ov = await cowOverlay(base, { dir: scratchDir });
      const model = Buffer.from(baseBytes);

      const pickRange = (): [number, number] => {
        const kind = rand(5);
        let off: number;
        let len: number;
        if (kind === 0) {
          // block-aligned, whole blocks
          off = rand(37) * OVERLAY_BLOCK_SIZE;
          len = (1 + rand(4)) * OVERLAY_BLOCK_SIZE;
        } else if (kind === 1) {
          // inside one block
          off = rand(size - 1);
          len = 1 + rand(Math.min(OVERLAY_BLOCK_SIZE - (off % OVERLAY_BLOCK_SIZE), size - off));
        } else if (kind === 2) {
          // straddling a block boundary
          const b = 1 + rand(37);
          off = b * OVERLAY_BLOCK_SIZE - 1 - rand(100);
          len = 2 + rand(300);
        } else if (kind === 3) {
          // the tail of the device
          off = size - 1 - rand(6000);
          len = size - off;
        } else {
          off = rand(size);
          len = rand(5 * OVERLAY_BLOCK_SIZE);
        }
        off = Math.max(0, Math.min(off, size));
        len = Math.max(0, Math.min(len, size - off));
        return [off, len];
      };

      for (let round = 0; round < 60; round++) {
        const ops: Array<Promise<void>> = [];
        const batch = 1 + rand(12);
        // Ops are issued without awaiting; the overlay must behave as if they ran one by one in call order.
        for (let i = 0; i < batch; i++) {
          const [off, len] = pickRange();
          if (rand(2) === 0) {
            const data = randomBuffer(rand, len);
            data.copy(model, off);
            ops.push(ov.write(off, data));
          } else {
            const want = Buffer.from(model.subarray(off, off + len));
            ops.push(
              ov.read(off, len).then((got) => {
                assert.ok(got.equals(want), `seed ${seed} round ${round}: read ${len}@${off} differs from the model`);
              }),
            );
          }
        }
        await Promise.all(ops);
      }

      const all = await ov.read(0, size);
      assert.ok(all.equals(model), `seed ${seed}: whole-device read differs from the model`);
      assert.ok(ov.dirtyBytes > 0);
      assert.equal(base.writes, 0);
      assert.equal(sha(await readFile(basePath)), sha(baseBytes), 'the base file changed');

      // The scratch file is sparse-sized like the base and lives in dir until close.
      assert.equal(path.dirname(ov.scratchPath), scratchDir);
      assert.equal((await stat(ov.scratchPath)).size, size);
      await ov.close();
      assert.equal(existsSync(ov.scratchPath), false, 'scratch file left behind');
      assert.deepEqual(await readdir(scratchDir), []);
      await baseFile.close();
    });
  }

  it('serialises overlapping writes in call order and never loses a partial-block write', async function () {
    const size = 4 * OVERLAY_BLOCK_SIZE;
    const basePath = path.join(tmp.path, 'base.img');
    await writeFile(basePath, Buffer.alloc(size, 0xaa));
    const baseFile = await fileBlockDevice(basePath);
    const ov = await cowOverlay(jittery(baseFile, rng(9)), { dir: tmp.path });
    // 2000 one-byte writes to distinct bytes of the same two blocks, all in flight at once: each is a
    // read-modify-write of its block, so without serialisation most of them would be overwritten.
    const model = Buffer.alloc(size, 0xaa);
    const ops: Array<Promise<void>> = [];
    for (let i = 0; i < 2000; i++) {
      const off = OVERLAY_BLOCK_SIZE + i * 3;
      model[off] = i & 0xff;
      ops.push(ov.write(off, Buffer.from([i & 0xff])));
    }
    // Two writes to the same byte: the later call wins.
    ops.push(ov.write(10, Buffer.from([1])), ov.write(10, Buffer.from([2])));
    model[10] = 2;
    await Promise.all(ops);
    assert.ok((await ov.read(0, size)).equals(model));
    await ov.close();
    await baseFile.close();
  });

  it('flushes, rejects out-of-range access and use after close', async function () {
    const basePath = path.join(tmp.path, 'base.img');
    await writeFile(basePath, Buffer.alloc(10000, 7));
    const baseFile = await fileBlockDevice(basePath);
    const ov = await cowOverlay(baseFile, { dir: tmp.path });
    assert.equal(ov.readOnly, false);
    assert.equal(ov.size, 10000);
    await ov.write(9990, Buffer.alloc(10, 1));
    await ov.flush();
    await assert.rejects(ov.write(9995, Buffer.alloc(10)), RangeError);
    await assert.rejects(ov.read(-1, 2), RangeError);
    assert.deepEqual(await ov.read(9989, 11), Buffer.from([7, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
    assert.equal((await ov.read(5, 0)).length, 0);
    await ov.close();
    await assert.rejects(ov.read(0, 1), /closed/);
    await ov.close(); // idempotent
    assert.equal((await baseFile.read(9990, 10)).equals(Buffer.alloc(10, 7)), true, 'base changed');
    await baseFile.close();
  });

  it('extents: written blocks are data, the rest defers to the base (data throughout when the base cannot tell)', async function () {
    const B = OVERLAY_BLOCK_SIZE;
    const bytes = Buffer.alloc(16 * B, 9);
    const holeyBase: BlockDevice = {
      size: bytes.length,
      readOnly: true,
      read: async (o, l) => Buffer.from(bytes.subarray(o, o + l)),
      // Blocks 4–11 read as zeros.
      extents: async (o, l) => {
        const out: { length: number; zero: boolean }[] = [];
        const push = (len: number, zero: boolean): void => {
          if (len > 0) out.push({ length: len, zero });
        };
        const hs = Math.max(o, 4 * B);
        const he = Math.min(o + l, 12 * B);
        if (he <= hs) push(l, false);
        else {
          push(hs - o, false);
          push(he - hs, true);
          push(o + l - he, false);
        }
        return out;
      },
      close: async () => {},
    };
    const ov = await cowOverlay(holeyBase, { dir: tmp.path });
    await ov.write(6 * B + 100, Buffer.alloc(10, 1)); // dirties block 6
    assert.deepEqual(await ov.extents(0, 16 * B), [
      { length: 4 * B, zero: false },
      { length: 2 * B, zero: true },
      { length: B, zero: false },
      { length: 5 * B, zero: true },
      { length: 4 * B, zero: false },
    ]);
    assert.deepEqual(await ov.extents(5 * B + 1, B), [
      { length: B - 1, zero: true },
      { length: 1, zero: false },
    ]);
    await assert.rejects(ov.extents(0, 16 * B + 1), RangeError);
    await ov.close();
    const { extents: _unused, ...noExtents } = holeyBase;
    const plain = await cowOverlay(noExtents, { dir: tmp.path });
    assert.deepEqual(await plain.extents(B, 8 * B), [{ length: 8 * B, zero: false }]);
    await plain.close();
  });
});
