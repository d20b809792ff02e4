import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { compress as zstdCompress } from 'zstd-napi';
import { InputError } from '../errors.js';
import { readAllBytes } from '../testing/streams.js';
import { checkSupported, createDecompressor, sniffCompression } from './decompress.js';

/** Feeds `input` in small pieces through a decompressor and collects the output. */
async function decode(kind: 'gzip' | 'zstd', input: Buffer, piece = 1000): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < input.length; i += piece) pieces.push(input.subarray(i, i + piece));
  const d = createDecompressor(kind, 'layer sha256:test');
  const out = readAllBytes(d);
  await Promise.all([pipeline(Readable.from(pieces), d), out]);
  return out;
}

function skippableFrame(payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(0x184d2a50, 0);
  h.writeUInt32LE(payload.length, 4);
  return Buffer.concat([h, payload]);
}

describe('source/decompress', () => {
  const data = Buffer.concat([randomBytes(300_000), Buffer.alloc(700_000, 7), randomBytes(50_000)]);

  it('sniffs compression from magic bytes', () => {
    assert.equal(sniffCompression(zlib.gzipSync(data)), 'gzip');
    assert.equal(sniffCompression(zstdCompress(data)), 'zstd');
    assert.equal(sniffCompression(Buffer.from('BZh91AY&SY')), 'bzip2');
    assert.equal(sniffCompression(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00])), 'xz');
    assert.equal(sniffCompression(Buffer.from('ustar-ish plain tar')), 'none');
    assert.equal(sniffCompression(Buffer.from([0x1f])), 'none');
    assert.throws(() => checkSupported('xz', 'layer sha256:abc'), (e: unknown) => e instanceof InputError && e.message === 'layer sha256:abc: unsupported compression xz (only gzip, zstd and plain tar layers are supported)');
    assert.throws(() => createDecompressor('bzip2', 'x'), InputError);
  });

  it('decodes every gzip member', async () => {
    const two = Buffer.concat([zlib.gzipSync(data.subarray(0, 400_000)), zlib.gzipSync(data.subarray(400_000))]);
    assert.ok((await decode('gzip', two)).equals(data));
  });

  it('decodes every zstd frame and skips skippable frames', async () => {
    const input = Buffer.concat([
      skippableFrame(Buffer.from('zstd:chunked style metadata')),
      zstdCompress(data.subarray(0, 123_456)),
      skippableFrame(Buffer.alloc(100, 1)),
      zstdCompress(data.subarray(123_456)),
    ]);
    assert.ok((await decode('zstd', input)).equals(data));
    assert.ok((await decode('zstd', input, 7)).equals(data));
    assert.ok((await decode('zstd', input, input.length)).equals(data));
  });

  for (const kind of ['gzip', 'zstd'] as const) {
    it(`fails a truncated ${kind} stream with one clear InputError, without hanging`, async () => {
      const full = kind === 'gzip' ? zlib.gzipSync(data) : zstdCompress(data);
      for (const cut of [full.length - 1, Math.floor(full.length / 2), 20]) {
        await assert.rejects(decode(kind, full.subarray(0, cut)), (e: unknown) => {
          assert.ok(e instanceof InputError, String(e));
          assert.equal(e.message, `layer sha256:test: truncated ${kind} stream`);
          return true;
        });
      }
    });

    it(`fails corrupt ${kind} data only at the end of the input (after draining it)`, async () => {
      // zstd only notices corruption in stored blocks through its frame checksum.
      const full = kind === 'gzip' ? zlib.gzipSync(data) : zstdCompress(data, { checksumFlag: true });
      const bad = Buffer.from(full);
      bad.fill(0xff, 100, 200);
      const d = createDecompressor(kind, 'layer sha256:test');
      let fedToEnd = false;
      const src = Readable.from(
        (function* () {
          for (let i = 0; i < bad.length; i += 1000) yield bad.subarray(i, i + 1000);
          fedToEnd = true;
        })(),
      );
      const out = readAllBytes(d);
      const done = pipeline(src, d);
      await assert.rejects(out, (e: unknown) => e instanceof InputError && e.message.startsWith(`layer sha256:test: corrupt ${kind} stream`));
      await done.catch(() => {});
      assert.ok(fedToEnd, 'the decoder consumed the whole input before failing');
    });

    it(`keeps ${kind} output bounded while the consumer does not read`, async () => {
      // 64 MiB of zeros compress to a few KiB: one input chunk could expand enormously.
      const zeros = Buffer.alloc(64 * 1024 * 1024);
      const packed = kind === 'gzip' ? zlib.gzipSync(zeros, { level: 9 }) : zstdCompress(zeros);
      const d = createDecompressor(kind, 'x');
      const src = new PassThrough();
      src.pipe(d);
      src.end(packed);
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(d.readableLength <= 4 * 1024 * 1024, `buffered ${d.readableLength} bytes while paused`);
      // …and then delivers everything when read.
      let n = 0;
      d.on('data', (c: Buffer) => (n += c.length));
      await once(d, 'end');
      assert.equal(n, zeros.length);
    });
  }
});
