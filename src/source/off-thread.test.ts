/**
 * The worker-thread layer stream against the in-thread pipeline: on the same
 * blobs both must give the same bytes, or fail with the same error class and
 * message — good blobs of each compression, and every kind of bad one. Plus
 * what only the worker has: flow control, early destroy, abort, and chunk
 * recycling under readLayerEntries' transientChunks.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { compress as zstdCompress } from 'zstd-napi';
import { InterruptedError } from '../errors.js';
import { RECYCLE_CHUNK } from '../layers/byte-reader.js';
import { readLayerEntries } from '../layers/tar.js';
import { openFdCount } from '../testing/streams.js';
import { type TarEntrySpec, tarOf } from '../testing/tar-writer.js';
import { type TmpDir, tmpDir } from '../testing/tools.js';
import type { SupportedCompression } from './decompress.js';
import { type Digest, sha256Digest } from './digest.js';
import { FileLayer, OFF_THREAD_MIN_BYTES } from './layer.js';
import { type LayerBlob, openLayerPipeline } from './layer-pipeline.js';
import { openOffThread, prestartLayerWorker, whenProduced } from './off-thread.js';

/** Small batches and few credits, so flow control and batch edges are exercised. */
const SMALL = { batchBytes: 64 * 1024, credits: 2 };

type Outcome = { ok: true; digest: Digest; bytes: number } | { ok: false; error: string; message: string };

async function outcome(s: Readable): Promise<Outcome> {
  const h = createHash('sha256');
  let bytes = 0;
  try {
    for await (const c of s) {
      h.update(c as Buffer);
      bytes += (c as Buffer).length;
    }
    return { ok: true, digest: `sha256:${h.digest('hex')}` as Digest, bytes };
  } catch (e) {
    return { ok: false, error: (e as Error).constructor.name, message: (e as Error).message };
  }
}

function skippableFrame(payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(0x184d2a50, 0);
  h.writeUInt32LE(payload.length, 4);
  return Buffer.concat([h, payload]);
}

function flip(b: Buffer, at = Math.floor(b.length / 2)): Buffer {
  const c = Buffer.from(b);
  c[at] = (c[at] ?? 0) ^ 0x01;
  return c;
}

describe('source/off-thread (layer decoding in a worker thread)', function () {
  this.timeout(60_000);
  let tmp: TmpDir;
  let n = 0;
  before(async () => {
    tmp = await tmpDir('off-thread');
  });
  after(async () => {
    await tmp.cleanup();
  });

  // ~1.6 MB: random (incompressible) and repetitive parts, many batches.
  const tar = Buffer.concat([randomBytes(400_000), Buffer.alloc(900_000, 0x41), randomBytes(300_000)]);
  const diffId = sha256Digest(tar);

  /** Writes `stored` as a blob file; the descriptor vouches for `vouched` (default: the stored bytes). */
  async function blobOf(
    stored: Buffer,
    compression: SupportedCompression,
    opts: { vouched?: Buffer; diffId?: Digest; size?: number; rangeSize?: number; file?: string } = {},
  ): Promise<LayerBlob> {
    const file = opts.file ?? path.join(tmp.path, `blob${n++}`);
    if (opts.file === undefined) await writeFile(file, stored);
    const vouched = opts.vouched ?? stored;
    return {
      range: { file, start: 0, size: opts.rangeSize ?? stored.length, where: file },
      digest: sha256Digest(vouched),
      size: opts.size ?? vouched.length,
      diffId: opts.diffId ?? diffId,
      compression,
      name: `layer 0 ${sha256Digest(vouched)}`,
    };
  }

  async function same(blob: LayerBlob): Promise<Outcome> {
    const here = await outcome(openLayerPipeline(blob));
    const there = await outcome(openOffThread(blob, SMALL));
    assert.deepEqual(there, here);
    const defaults = await outcome(openOffThread(blob));
    assert.deepEqual(defaults, here);
    return here;
  }

  const gz = zlib.gzipSync(tar);
  const zst = Buffer.concat([skippableFrame(Buffer.from('meta')), zstdCompress(tar.subarray(0, 700_000)), zstdCompress(tar.subarray(700_000))]);

  describe('good blobs: the same bytes as in-thread', () => {
    const cases: [string, () => Promise<LayerBlob>][] = [
      ['gzip', () => blobOf(gz, 'gzip')],
      ['gzip, two members', () => blobOf(Buffer.concat([zlib.gzipSync(tar.subarray(0, 500_000)), zlib.gzipSync(tar.subarray(500_000))]), 'gzip')],
      ['gzip with trailing zero padding', () => blobOf(Buffer.concat([gz, Buffer.alloc(3000)]), 'gzip')],
      ['zstd, frames and a skippable frame', () => blobOf(zst, 'zstd')],
      ['plain tar (digest is the diff_id)', () => blobOf(tar, 'none')],
      ['plain tar whose diff_id differs from its digest', () => blobOf(tar, 'none', { diffId: sha256Digest('other') })],
    ];
    for (const [name, make] of cases) {
      it(name, async () => {
        const blob = await make();
        const o = await same(blob);
        if (name.startsWith('plain tar whose')) assert.equal(o.ok, false);
        else assert.deepEqual(o, { ok: true, digest: diffId, bytes: tar.length });
      });
    }
  });

  describe('bad blobs: the same error class and message as in-thread', () => {
    const cases: [string, RegExp, () => Promise<LayerBlob>][] = [
      ['a flipped byte in a gzip blob', /content hashes to sha256:\w+, expected/, () => blobOf(flip(gz), 'gzip', { vouched: gz })],
      ['a flipped byte in a zstd blob', /content hashes to/, () => blobOf(flip(zst), 'zstd', { vouched: zst })],
      ['a flipped byte in a plain blob', /content hashes to/, () => blobOf(flip(tar), 'none', { vouched: tar })],
      ['a vouched-for truncated gzip stream', /: truncated gzip stream$/, () => blobOf(gz.subarray(0, gz.length - 1000), 'gzip')],
      ['a vouched-for corrupt gzip stream', /: corrupt gzip stream \(/, () => blobOf(flip(gz, 5000), 'gzip')],
      ['gzip followed by garbage', /: corrupt gzip stream \(/, () => blobOf(Buffer.concat([gz, Buffer.from('garbage!')]), 'gzip')],
      ['an empty gzip blob', /: truncated gzip stream$/, () => blobOf(Buffer.alloc(0), 'gzip')],
      ['a vouched-for truncated zstd stream', /: truncated zstd stream$/, () => blobOf(zst.subarray(0, zst.length - 1000), 'zstd')],
      ['a vouched-for corrupt zstd stream', /: corrupt zstd stream \(/, () => blobOf(flip(zst, 20), 'zstd')],
      ['a wrong diff_id', /uncompressed content hashes to .*, but the config's diff_id is/, () => blobOf(gz, 'gzip', { diffId: sha256Digest('x') })],
      ['a blob file shorter than its descriptor', /: \d+ bytes, expected \d+$/, () => blobOf(gz, 'gzip', { size: gz.length + 10, rangeSize: gz.length + 10 })],
      ['a blob longer than its descriptor', /more than the expected \d+ bytes$/, () => blobOf(gz, 'gzip', { size: gz.length - 10 })],
      ['a missing blob file', /no such file/, () => blobOf(gz, 'gzip', { file: path.join(tmp.path, 'absent') })],
    ];
    for (const [name, re, make] of cases) {
      it(name, async () => {
        const o = await same(await make());
        assert.equal(o.ok, false, name);
        if (!o.ok) assert.match(o.message, re);
      });
    }
  });

  describe('streams', () => {
    it('keeps memory bounded while the consumer does not read', async () => {
      const big = Buffer.concat([randomBytes(2_000_000), Buffer.alloc(6_000_000)]);
      const s = openOffThread(await blobOf(zlib.gzipSync(big), 'gzip', { diffId: sha256Digest(big) }), SMALL);
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(s.readableLength <= SMALL.batchBytes * (SMALL.credits + 1), `buffered ${s.readableLength}`);
      const o = await outcome(s);
      assert.deepEqual(o, { ok: true, digest: sha256Digest(big), bytes: big.length });
    });

    it('a consumer that stops early leaves no thread or descriptor behind', async function () {
      await new Promise((r) => setTimeout(r, 100)); // workers of earlier tests end as their streams close
      const before = openFdCount();
      if (before === undefined) this.skip();
      const big = randomBytes(4 * 1024 * 1024);
      for (const c of ['gzip', 'zstd', 'none'] as const) {
        const stored = c === 'gzip' ? zlib.gzipSync(big) : c === 'zstd' ? zstdCompress(big) : big;
        const blob = await blobOf(stored, c, { diffId: sha256Digest(big) });
        for (let i = 0; i < 3; i++) {
          const s = openOffThread(blob, SMALL);
          await once(s, 'readable');
          s.read();
          s.destroy();
          await once(s, 'close');
        }
      }
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(openFdCount(), before);
    });

    it('hands its worker on to a layer opened as soon as it is produced (one thread for a chain of layers)', async function () {
      const threads = (): number | undefined => {
        try {
          return readdirSync('/proc/self/task').length;
        } catch {
          return undefined;
        }
      };
      if (threads() === undefined) this.skip();
      await new Promise((r) => setTimeout(r, 100));
      const before = threads()!;
      const parts = [Buffer.concat([randomBytes(300_000), Buffer.alloc(1_000_000)]), randomBytes(700_000), Buffer.alloc(2_000_000, 3)];
      const blobs = [
        await blobOf(zlib.gzipSync(parts[0]!), 'gzip', { diffId: sha256Digest(parts[0]!) }),
        await blobOf(zstdCompress(parts[1]!), 'zstd', { diffId: sha256Digest(parts[1]!) }),
        await blobOf(zlib.gzipSync(parts[2]!), 'gzip', { diffId: sha256Digest(parts[2]!) }),
      ];
      const sizes = [{ batchBytes: 65_536, credits: 4 }, { batchBytes: 100_000, credits: 2 }, SMALL];
      let most = before;
      let producedEarly = 0;
      let next: Promise<Readable> = Promise.resolve(openOffThread(blobs[0]!, sizes[0]));
      for (let i = 0; i < blobs.length; i++) {
        const s = await next;
        let ended = false;
        s.once('end', () => (ended = true));
        if (i + 1 < blobs.length) {
          next = whenProduced(s).then(() => {
            if (!ended) producedEarly++;
            return openOffThread(blobs[i + 1]!, sizes[i + 1]);
          });
        }
        const h = createHash('sha256');
        for await (const c of s) {
          h.update(c as Buffer);
          most = Math.max(most, threads()!);
          await new Promise((r) => setImmediate(r)); // a slow consumer: the worker finishes first
        }
        assert.equal(`sha256:${h.digest('hex')}`, sha256Digest(parts[i]!));
      }
      assert.equal(producedEarly, 2, 'the next layer opened before the previous one was read to its end');
      assert.ok(most <= before + 1, `at most one layer worker at a time (threads ${before} -> ${most})`);
    });

    it('a prestarted worker takes the first layer, and left unused does not hold the process', async function () {
      if (openFdCount() === undefined) this.skip(); // no /proc
      await new Promise((r) => setTimeout(r, 100));
      const before = readdirSync('/proc/self/task').length;
      prestartLayerWorker();
      await new Promise((r) => setTimeout(r, 200)); // booted
      assert.equal(readdirSync('/proc/self/task').length, before + 1);
      const big = randomBytes(500_000);
      const o = await outcome(openOffThread(await blobOf(zlib.gzipSync(big), 'gzip', { diffId: sha256Digest(big) }), SMALL));
      assert.deepEqual(o, { ok: true, digest: sha256Digest(big), bytes: big.length });
      assert.ok(readdirSync('/proc/self/task').length <= before + 1, 'no second worker was started');
      // A process that prestarts and never opens a layer still exits at once.
      const url = new URL('./off-thread.js', import.meta.url).href;
      const child = spawn(process.execPath, ['--input-type=module', '-e', `(await import(${JSON.stringify(url)})).prestartLayerWorker();`]);
      const t0 = Date.now();
      const [code] = (await once(child, 'exit')) as [number];
      assert.equal(code, 0);
      assert.ok(Date.now() - t0 < 10_000, 'exited without waiting on the idle worker');
    });

    it('FileLayer runs large blobs off-thread and honours its AbortSignal', async () => {
      const big = randomBytes(OFF_THREAD_MIN_BYTES * 4);
      const blob = await blobOf(zlib.gzipSync(big), 'gzip', { diffId: sha256Digest(big) });
      const layer = new FileLayer({ index: 0, mediaType: 'x', digest: blob.digest, size: blob.size, diffId: blob.diffId, range: blob.range, compression: 'gzip' });
      assert.deepEqual(await outcome(layer.open()), { ok: true, digest: sha256Digest(big), bytes: big.length });
      const ac = new AbortController();
      const s = layer.open(ac.signal);
      ac.abort();
      const o = await outcome(s);
      assert.ok(!o.ok && o.error === InterruptedError.name, JSON.stringify(o));
    });

    it('recycled chunks under transientChunks read the same entries and bytes', async () => {
      const files: TarEntrySpec[] = [];
      for (let i = 0; i < 300; i++) {
        const size = i % 7 === 0 ? 0 : Math.floor(Math.random() * 30_000);
        files.push({ name: `d${i % 5}/${'n'.repeat(i % 90)}f${i}`, data: i % 3 === 0 ? Buffer.alloc(size, i) : randomBytes(size) });
      }
      const t = tarOf(files);
      const blob = await blobOf(zlib.gzipSync(t), 'gzip', { diffId: sha256Digest(t) });
      const read = async (s: Readable, transientChunks: boolean): Promise<string[]> => {
        const out: string[] = [];
        for await (const e of readLayerEntries(s, { transientChunks })) {
          if (e.type !== 'file') continue;
          const h = createHash('sha256');
          for await (const c of e.data.chunks) h.update(c);
          out.push(`${e.path} ${e.data.size} ${h.digest('hex')}`);
        }
        return out;
      };
      const want = await read(openLayerPipeline(blob), false);
      assert.equal(want.length, files.length);
      // Odd batch sizes put headers and file data across batch edges.
      for (const batchBytes of [4096 + 100, 10_000, 65_536]) {
        const s = openOffThread(blob, { batchBytes, credits: 3 }) as Readable & { [RECYCLE_CHUNK](c: Buffer): void };
        const give = s[RECYCLE_CHUNK].bind(s);
        let recycled = 0;
        s[RECYCLE_CHUNK] = (c: Buffer) => {
          recycled++;
          give(c);
        };
        assert.deepEqual(await read(s, true), want);
        assert.ok(recycled > 10, `recycled ${recycled} chunks`);
      }
    });
  });
});
