/**
 * DataArea.place against a block-by-block model of the layout rules, on
 * bodies mixing zero and data blocks cut at awkward chunk boundaries; and
 * FileBlockSink's double-buffered, coalescing writes against the bytes asked
 * for.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import path from 'node:path';
import { type TmpDir, tmpDir } from '../testing/tools.js';
import { BLOCK_SIZE } from './constants.js';
import { DataArea, type FileBody } from './data-area.js';
import type { Extent } from './extent.js';
import { MAX_EXTENT_LEN } from './extent.js';
import { type BlockSink, FileBlockSink } from './sink.js';

/** Records every block written (copying, as the BlockSink contract asks). */
class MemorySink implements BlockSink {
  readonly blocks = new Map<number, Buffer>();
  writes = 0;
  async write(block: number, data: Buffer): Promise<void> {
    this.writes++;
    for (let i = 0; i * BLOCK_SIZE < data.length; i++) {
      assert.ok(!this.blocks.has(block + i), `block ${block + i} written twice`);
      this.blocks.set(block + i, Buffer.from(data.subarray(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE)));
    }
  }
  async finish(): Promise<void> {}
}

/** `content` as chunks cut at the given sizes (cycled). */
function bodyOf(content: Buffer, cuts: readonly number[]): FileBody {
  return {
    size: content.length,
    chunks: (async function* () {
      let off = 0;
      for (let i = 0; off < content.length; i++) {
        const n = Math.min(cuts[i % cuts.length]!, content.length - off);
        yield content.subarray(off, off + n);
        off += n;
      }
    })(),
  };
}

/** The layout rules one block at a time: zero blocks are holes, data blocks go to the next free block. */
function model(content: Buffer, cursor: number): { extents: Extent[]; data: Map<number, Buffer>; end: number } {
  const extents: Extent[] = [];
  const data = new Map<number, Buffer>();
  const blocks = Math.ceil(content.length / BLOCK_SIZE);
  for (let l = 0; l < blocks; l++) {
    const b = Buffer.alloc(BLOCK_SIZE);
    content.copy(b, 0, l * BLOCK_SIZE, Math.min(content.length, (l + 1) * BLOCK_SIZE));
    if (b.every((x) => x === 0)) continue;
    const last = extents[extents.length - 1];
    if (last && last.logical + last.length === l && last.length < MAX_EXTENT_LEN) extents[extents.length - 1] = { ...last, length: last.length + 1 };
    else extents.push({ logical: l, physical: cursor, length: 1 });
    data.set(cursor++, b);
  }
  return { extents, data, end: cursor };
}

function mixed(blocks: readonly ('z' | 'd' | 'p')[], tail = 0): Buffer {
  const parts = blocks.map((k) => (k === 'z' ? Buffer.alloc(BLOCK_SIZE) : k === 'd' ? randomBytes(BLOCK_SIZE) : Buffer.concat([Buffer.alloc(BLOCK_SIZE - 1), Buffer.from([1])])));
  if (tail > 0) parts.push(randomBytes(tail));
  return Buffer.concat(parts);
}

describe('ext4/data-area', () => {
  const contents: [string, Buffer][] = [
    ['data, holes and a block whose only non-zero byte is its last', mixed(['d', 'd', 'z', 'p', 'd', 'z', 'z', 'd', 'd', 'd', 'z'], 100)],
    ['all zeros (a hole, no blocks)', Buffer.alloc(10 * BLOCK_SIZE + 7)],
    ['a short file', randomBytes(10)],
    ['empty', Buffer.alloc(0)],
    ['a tail of zeros after data', Buffer.concat([randomBytes(BLOCK_SIZE + 5), Buffer.alloc(3000)])],
  ];
  const cutSets = [[1], [4095, 1, 4097], [BLOCK_SIZE], [3 * BLOCK_SIZE + 17, 5], [1 << 20]];

  for (const [name, content] of contents) {
    it(`places ${name} as the block model says, however it is chunked`, async () => {
      for (const cuts of cutSets) {
        const sink = new MemorySink();
        const area = new DataArea(sink, { chunkSize: 64 * 1024, startBlock: 16 });
        const stored = await area.place(bodyOf(content, cuts));
        const want = model(content, 16);
        assert.deepEqual(stored.extents, want.extents, `cuts ${cuts}`);
        assert.equal(stored.blocks, want.data.size);
        assert.equal(area.end, want.end);
        assert.deepEqual([...sink.blocks.keys()], [...want.data.keys()]);
        for (const [b, d] of want.data) assert.ok(sink.blocks.get(b)!.equals(d), `block ${b}`);
      }
    });
  }

  it('writes a run of data blocks in one call, and splits extents at the maximum length', async function () {
    this.timeout(60_000);
    const content = Buffer.alloc((MAX_EXTENT_LEN + 10) * BLOCK_SIZE, 0x5a);
    const sink = new MemorySink();
    const area = new DataArea(sink, { chunkSize: 64 * 1024, startBlock: 16 });
    const stored = await area.place(bodyOf(content, [content.length]));
    assert.deepEqual(stored.extents, [
      { logical: 0, physical: 16, length: MAX_EXTENT_LEN },
      { logical: MAX_EXTENT_LEN, physical: 16 + MAX_EXTENT_LEN, length: 10 },
    ]);
    assert.equal(sink.writes, 1);
  });

  it('refuses bodies longer or shorter than their size', async () => {
    const area = new DataArea(new MemorySink(), { chunkSize: 64 * 1024, startBlock: 16 });
    await assert.rejects(area.place({ size: 10, chunks: bodyOf(randomBytes(20), [20]).chunks }), RangeError);
    await assert.rejects(area.place({ size: 30, chunks: bodyOf(randomBytes(20), [20]).chunks }), RangeError);
  });

  describe('FileBlockSink', () => {
    let tmp: TmpDir;
    before(async () => {
      tmp = await tmpDir('sink');
    });
    after(async () => {
      await tmp.cleanup();
    });

    it('writes what it is given (runs, gaps, a late block 0) through both buffers', async () => {
      for (const syncEveryBytes of [0, 64 * 1024]) {
        const file = path.join(tmp.path, `img${syncEveryBytes}`);
        const fh = await open(file, 'w+');
        const sink = new FileBlockSink(fh, { syncEveryBytes });
        const total = 1200;
        const want = Buffer.alloc(total * BLOCK_SIZE);
        const scratch = Buffer.alloc(5 * BLOCK_SIZE);
        let block = 1;
        while (block < total - 200) {
          const n = 1 + (block % 300);
          const data = randomBytes(n * BLOCK_SIZE);
          data.copy(want, block * BLOCK_SIZE);
          await sink.write(block, data);
          data.fill(0xee); // the caller may reuse its buffer once write settles
          block += n + (block % 7 === 0 ? 3 : 0);
        }
        randomBytes(scratch.length).copy(scratch);
        scratch.copy(want, 0, 0, BLOCK_SIZE);
        await sink.write(0, scratch.subarray(0, BLOCK_SIZE));
        await sink.finish(total);
        await fh.close();
        const got = await readFile(file);
        assert.equal(got.length, want.length);
        assert.ok(got.equals(want));
      }
    });
  });
});
