/**
 * Synchronous, incremental decoders that write straight into buffers the
 * caller owns — for the layer worker (layer-worker.ts), which decodes into the
 * very ArrayBuffers it then transfers to the main thread: no intermediate
 * chunks, no copy, no stream machinery per 512 KiB.
 *
 * They decode exactly what the stream decoders of decompress.ts decode and
 * fail with the same InputError messages (the worker's tests run both on the
 * same blobs). Errors are thrown from `decode`/`finish`; deferring them to
 * the end of the input (so a digest mismatch wins) is the caller's job.
 *
 * gzip goes through node's own zlib binding, driven the way node's
 * `zlib.gunzipSync` drives it (`_handle.writeSync` and the shared
 * `_writeState`). Those are internals, so `syncGunzipAvailable()` checks
 * for them and the worker falls back to the stream decoder without them.
 */
import zlib from 'node:zlib';
import zstdBinding from 'zstd-napi/binding.js';
import { type ChunkyardError, InputError } from '../errors.js';
import { gzipError, type SupportedCompression } from './decompress.js';

export interface DecodeStep {
  /** Input bytes used. */
  readonly consumed: number;
  /** Bytes written to `out`. */
  readonly produced: number;
  /**
   * True when calling again (with the rest of the input, and room in `out`)
   * may produce more: `out` filled up, or input remains that the decoder
   * still wants. False once this input is used up (or ignored, see gzip).
   */
  readonly more: boolean;
}

export interface SyncDecoder {
  /** Decodes from `input` into `out` (which has room). Throws InputError on corrupt data. */
  decode(input: Buffer, out: Buffer): DecodeStep;
  /**
   * At the end of the input: writes what is still pending into `out`;
   * `more` means call again with fresh room. Throws InputError if the
   * compressed stream stopped short.
   */
  finish(out: Buffer): DecodeStep;
  /** Frees native state (idempotent). */
  close(): void;
}

const EMPTY = Buffer.alloc(0);

/** The zlib internals the sync gunzip relies on (see module comment). */
interface ZlibInternals {
  _handle: { writeSync(flush: number, input: Buffer, inOff: number, inLen: number, out: Buffer, outOff: number, outLen: number): void } | null;
  /** [availOutAfter, availInAfter] of the last write. */
  _writeState: Uint32Array;
}

function internals(z: zlib.Gunzip): ZlibInternals | undefined {
  const i = z as unknown as Partial<ZlibInternals>;
  return typeof i._handle?.writeSync === 'function' && i._writeState instanceof Uint32Array && i._writeState.length >= 2 ? (i as ZlibInternals) : undefined;
}

/** Whether this node exposes what the sync gunzip needs. */
export function syncGunzipAvailable(): boolean {
  const z = zlib.createGunzip();
  const ok = internals(z) !== undefined;
  z.close();
  return ok;
}

/**
 * gzip, all members. Like node's gunzip, decoding stops at a zero byte where
 * a next member would start: trailing zero padding is ignored.
 */
class SyncGunzip implements SyncDecoder {
  readonly #what: string;
  readonly #z = zlib.createGunzip();
  readonly #zi: ZlibInternals;
  /** The gzip data ended before the input (zero padding follows): ignore the rest. */
  #stopped = false;

  constructor(what: string) {
    this.#what = what;
    const zi = internals(this.#z);
    if (zi === undefined) throw new Error('sync gunzip is not available on this node version');
    this.#zi = zi;
    // The binding reports errors by destroying the stream; we read them from `errored`.
    this.#z.on('error', () => {});
  }

  #write(flush: number, input: Buffer, out: Buffer): DecodeStep {
    const handle = this.#zi._handle;
    if (handle === null) throw new InputError(`${this.#what}: corrupt gzip stream (decoder closed)`);
    handle.writeSync(flush, input, 0, input.length, out, 0, out.length);
    const err = this.#z.errored;
    if (err) throw gzipError(err, this.#what);
    const availOut = this.#zi._writeState[0]!;
    const availIn = this.#zi._writeState[1]!;
    const consumed = input.length - availIn;
    const produced = out.length - availOut;
    if (availOut === 0) return { consumed, produced, more: true };
    if (availIn > 0) this.#stopped = true; // room left but input refused: the stream ended
    return { consumed: input.length, produced, more: false };
  }

  decode(input: Buffer, out: Buffer): DecodeStep {
    if (this.#stopped) return { consumed: input.length, produced: 0, more: false };
    return this.#write(zlib.constants.Z_NO_FLUSH, input, out);
  }

  finish(out: Buffer): DecodeStep {
    if (this.#stopped) return { consumed: 0, produced: 0, more: false };
    return this.#write(zlib.constants.Z_FINISH, EMPTY, out);
  }

  close(): void {
    this.#z.close();
  }
}

/** zstd, all frames, skippable frames skipped (same rules as decompress.ts's ZstdDecoder). */
class SyncZstd implements SyncDecoder {
  readonly #what: string;
  readonly #dctx = new zstdBinding.DCtx();
  #inFrame = false;

  constructor(what: string) {
    this.#what = what;
  }

  #corrupt(detail: string, cause?: unknown): ChunkyardError {
    return new InputError(`${this.#what}: corrupt zstd stream (${detail})`, cause === undefined ? undefined : { cause });
  }

  decode(input: Buffer, out: Buffer): DecodeStep {
    let ret: number;
    let produced: number;
    let consumed: number;
    try {
      [ret, produced, consumed] = this.#dctx.decompressStream(out, input);
    } catch (e) {
      throw this.#corrupt(e instanceof Error ? e.message : String(e), e);
    }
    if (produced === 0 && consumed === 0 && input.length > 0) throw this.#corrupt('decoder made no progress');
    // ret is 0 exactly when a frame has been fully decoded and flushed; a
    // call that moved nothing returns a hint for the next frame: ignore it.
    if (produced > 0 || consumed > 0) this.#inFrame = ret !== 0;
    return { consumed, produced, more: consumed < input.length || produced === out.length };
  }

  finish(out: Buffer): DecodeStep {
    const step = this.decode(EMPTY, out);
    if (!step.more && this.#inFrame) throw new InputError(`${this.#what}: truncated zstd stream`);
    return step;
  }

  close(): void {}
}

/** Plain tar: a copy. */
class Copy implements SyncDecoder {
  decode(input: Buffer, out: Buffer): DecodeStep {
    const n = input.copy(out, 0, 0, Math.min(input.length, out.length));
    return { consumed: n, produced: n, more: n < input.length };
  }

  finish(): DecodeStep {
    return { consumed: 0, produced: 0, more: false };
  }

  close(): void {}
}

export function createSyncDecoder(compression: SupportedCompression, what: string): SyncDecoder {
  switch (compression) {
    case 'gzip':
      return new SyncGunzip(what);
    case 'zstd':
      return new SyncZstd(what);
    case 'none':
      return new Copy();
  }
}
