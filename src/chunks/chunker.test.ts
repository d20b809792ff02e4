import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { buildToFile, buildToSink } from '../build/build.js';
import { BLOCK_SIZE } from '../ext4/constants.js';
import { parseImageReference } from '../source/transports.js';
import { exampleImageDir, tmpDir } from '../testing/tools.js';
import { ChunkingSink, chunkFile, type ChunkConsumer } from './chunker.js';

const CHUNK = 64 * 1024;
const BPC = CHUNK / BLOCK_SIZE; // blocks per chunk

function filled(blocks: number, byte: number): Buffer {
  return Buffer.alloc(blocks * BLOCK_SIZE, byte);
}

/** A consumer that records what it got (copies, since it owns nothing after return here). */
function recorder(): { calls: { index: number; data: Buffer | null }[]; consumer: ChunkConsumer } {
  const calls: { index: number; data: Buffer | null }[] = [];
  return {
    calls,
    consumer: async (index, data) => {
      calls.push({ index, data: data && Buffer.from(data) });
    },
  };
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('chunks/chunker', () => {
  describe('ChunkingSink', () => {
    it('hands on chunks in order with holes, chunk 0 last, and pads a partial last chunk', async () => {
      const r = recorder();
      const sink = new ChunkingSink(CHUNK, r.consumer);
      await sink.write(BPC + 2, filled(1, 0xaa)); // chunk 1
      await sink.write(3 * BPC, filled(BPC, 0xbb)); // chunk 3; chunk 2 never written
      await sink.write(4 * BPC, filled(2, 0)); // chunk 4: written, but all zeros
      await sink.write(5 * BPC + BPC - 1, filled(2, 0xcc)); // spans chunks 5 and 6
      await sink.write(0, filled(1, 0x11)); // chunk 0, last
      await sink.finish(6 * BPC + 3); // chunk 6 is partial: 3 blocks
      assert.deepEqual(
        r.calls.map((c) => [c.index, c.data === null]),
        [
          [1, false],
          [2, true],
          [3, false],
          [4, true],
          [5, false],
          [6, false],
          [0, false],
        ],
      );
      for (const c of r.calls) if (c.data) assert.equal(c.data.length, CHUNK, `chunk ${c.index} is chunk-sized`);
      const one = r.calls[0]!.data!;
      assert.equal(one.readUInt8(2 * BLOCK_SIZE), 0xaa);
      assert.equal(one.readUInt8(2 * BLOCK_SIZE - 1), 0);
      assert.equal(one.readUInt8(3 * BLOCK_SIZE), 0);
      assert.equal(r.calls[4]!.data!.readUInt8(CHUNK - 1), 0xcc);
      assert.equal(r.calls[5]!.data!.readUInt8(0), 0xcc);
      assert.equal(r.calls[5]!.data!.readUInt8(BLOCK_SIZE), 0, 'padding of the partial chunk is zero');
      assert.deepEqual(sink.summary, { chunks: 7, holes: 2, imageBytes: (6 * BPC + 3) * BLOCK_SIZE });
    });

    it('gives holes for every chunk of an image nothing was written to beyond chunk 0', async () => {
      const r = recorder();
      const sink = new ChunkingSink(CHUNK, r.consumer);
      await sink.write(0, filled(1, 1));
      await sink.finish(3 * BPC);
      assert.deepEqual(
        r.calls.map((c) => [c.index, c.data === null]),
        [
          [1, true],
          [2, true],
          [0, false],
        ],
      );
    });

    it('throws on a write that goes back to a chunk already handed on', async () => {
      const sink = new ChunkingSink(CHUNK, recorder().consumer);
      await sink.write(BPC, filled(1, 1));
      await sink.write(2 * BPC, filled(1, 1)); // hands on chunk 1
      await sink.write(2 * BPC + 5, filled(1, 1)); // same chunk, later block: fine
      await sink.write(2 * BPC + 1, filled(1, 1)); // same chunk, earlier block: still fine (not handed on)
      await assert.rejects(sink.write(BPC + 3, filled(1, 0)), /Cannot write block 19: chunk 1 was already handed on/);
    });

    it('refuses writes past the end and partial blocks', async () => {
      const sink = new ChunkingSink(CHUNK, recorder().consumer);
      await sink.write(2 * BPC, filled(1, 1));
      await assert.rejects(sink.finish(2 * BPC), /written beyond the end/);
      await assert.rejects(new ChunkingSink(CHUNK, recorder().consumer).write(0, Buffer.alloc(100)), RangeError);
      assert.throws(() => new ChunkingSink(3 * 4096, recorder().consumer), RangeError);
    });

    it('applies backpressure: a slow consumer keeps at most maxInFlight chunks', async () => {
      const gates: ReturnType<typeof deferred>[] = [];
      let running = 0;
      let maxRunning = 0;
      const sink = new ChunkingSink(
        CHUNK,
        async () => {
          running++;
          maxRunning = Math.max(maxRunning, running);
          const g = deferred();
          gates.push(g);
          await g.promise;
          running--;
        },
        { maxInFlight: 2 },
      );
      // Chunks 1 and 2 go to the consumer; writing into chunk 4 must hand on chunk 3 and wait.
      await sink.write(BPC, filled(1, 1));
      await sink.write(2 * BPC, filled(1, 2));
      await sink.write(3 * BPC, filled(1, 3));
      let written = false;
      const w = sink.write(4 * BPC, filled(1, 4)).then(() => (written = true));
      for (let i = 0; i < 5; i++) await tick();
      assert.equal(written, false, 'the producer waits while the consumer is saturated');
      assert.equal(running, 2);
      gates[0]!.resolve();
      await w;
      assert.equal(running, 2);
      const f = sink.finish(5 * BPC);
      for (let i = 0; i < 20; i++) {
        await tick();
        for (const g of gates) g.resolve();
      }
      await f;
      assert.equal(maxRunning, 2);
      assert.equal(sink.summary!.chunks, 5);
    });

    it('reuses released buffers, zeroed', async () => {
      const seen: (Buffer | null)[] = [];
      let sink!: ChunkingSink;
      sink = new ChunkingSink(CHUNK, async (i, data) => {
        seen[i] = data;
        if (data && i === 1) {
          assert.equal(data.readUInt8(0), 0xee);
          sink.release(data);
        }
      });
      await sink.write(BPC, filled(1, 0xee)); // chunk 1
      await sink.write(2 * BPC + 1, filled(1, 0x22)); // chunk 2: reuses chunk 1's buffer
      await sink.write(0, filled(1, 1));
      await sink.finish(3 * BPC);
      assert.equal(seen[2], seen[1], 'the same memory');
      assert.equal(seen[2]!.readUInt8(0), 0, 'zeroed before reuse');
      assert.equal(seen[2]!.readUInt8(BLOCK_SIZE), 0x22);
    });

    it('reports a consumer failure from the next write or finish', async () => {
      const sink = new ChunkingSink(CHUNK, async (i) => {
        if (i === 1) throw new Error('store is down');
      });
      await sink.write(BPC, filled(1, 1));
      await sink.write(2 * BPC, filled(1, 1));
      await tick();
      await assert.rejects(sink.write(3 * BPC, filled(1, 1)).then(() => sink.finish(4 * BPC)), /store is down/);
    });

    it('gives the same chunks as building to a file and chunking the file (examples/hello)', async () => {
      const ref = parseImageReference(`oci:${exampleImageDir()}:latest`);
      const tmp = await tmpDir('chunker');
      try {
        const digest = (d: Buffer | null): string | null => (d ? createHash('sha256').update(d).digest('hex') : null);
        const streamed = new Map<number, string | null>();
        let image = await ref.open();
        try {
          await buildToSink(image, new ChunkingSink(CHUNK, async (i, d) => void streamed.set(i, digest(d))), { chunkSize: CHUNK, headroom: 4 });
        } finally {
          await image.close();
        }
        const file = path.join(tmp.path, 'hello.ext4');
        image = await ref.open();
        try {
          await buildToFile(image, file, { chunkSize: CHUNK, headroom: 4 });
        } finally {
          await image.close();
        }
        const fromFile = new Map<number, string | null>();
        const summary = await chunkFile(file, CHUNK, async (i, d) => void fromFile.set(i, digest(d)));
        assert.equal(summary.chunks, streamed.size);
        assert.deepEqual([...streamed.entries()].sort((a, b) => a[0] - b[0]), [...fromFile.entries()]);
        assert.ok([...fromFile.values()].some((v) => v === null), 'the image has holes');
        assert.ok([...fromFile.values()].filter((v) => v !== null).length >= 2);
      } finally {
        await tmp.cleanup();
      }
    });
  });

  describe('chunkFile', () => {
    it('chunks a file in order, with holes and a zero-padded tail', async () => {
      const tmp = await tmpDir('chunkfile');
      try {
        const file = path.join(tmp.path, 'img');
        await writeFile(file, Buffer.concat([Buffer.alloc(CHUNK, 7), Buffer.alloc(CHUNK), Buffer.alloc(100, 9)]));
        const r = recorder();
        const s = await chunkFile(file, CHUNK, r.consumer, { maxInFlight: 1 });
        assert.deepEqual(s, { chunks: 3, holes: 1, imageBytes: 2 * CHUNK + 100 });
        assert.deepEqual(
          r.calls.map((c) => c.index),
          [0, 1, 2],
        );
        assert.equal(r.calls[1]!.data, null);
        assert.equal(r.calls[2]!.data!.length, CHUNK);
        assert.equal(r.calls[2]!.data!.readUInt8(99), 9);
        assert.equal(r.calls[2]!.data!.readUInt8(100), 0);
      } finally {
        await tmp.cleanup();
      }
    });
  });
});
