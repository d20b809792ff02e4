/**
 * Checking bytes against what vouches for them: a descriptor's size and
 * digest, or a config's diff_id. Streams are checked as they pass (a
 * Transform that fails at EOF, like containers/image's digesting reader);
 * small in-memory blobs (JSON) with `checkBuffer`. Size is checked before
 * the digest: it is cheaper and gives the clearer message.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { IntegrityError } from '../errors.js';
import { type Digest, Digester, sha256Digest } from './digest.js';

export interface Expectation {
  readonly digest: Digest;
  /** Exact byte count, when known (descriptors give it; diff_ids do not). */
  readonly size?: number;
  /** Names the data in messages, e.g. `blob sha256:… (layer 2)`. */
  readonly what: string;
  /** 'diff_id' words the mismatch as one of uncompressed content. Default 'digest'. */
  readonly kind?: 'digest' | 'diff_id';
}

function mismatch(e: Expectation, actual: Digest): IntegrityError {
  return e.kind === 'diff_id'
    ? new IntegrityError(`${e.what}: uncompressed content hashes to ${actual}, but the config's diff_id is ${e.digest}`)
    : new IntegrityError(`${e.what}: content hashes to ${actual}, expected ${e.digest}`);
}

/** Throws IntegrityError unless `buf` has the expected size and digest. */
export function checkBuffer(buf: Uint8Array, e: Expectation): void {
  if (e.size !== undefined && buf.length !== e.size) {
    throw new IntegrityError(`${e.what}: ${buf.length} bytes, expected ${e.size}`);
  }
  const actual = sha256Digest(buf);
  if (actual !== e.digest) throw mismatch(e, actual);
}

/**
 * A pass-through that hashes everything and fails with IntegrityError at
 * EOF on a size or digest mismatch (and as soon as the size is exceeded).
 */
export function createVerifier(e: Expectation): Transform {
  const digester = new Digester();
  return new Transform({
    highWaterMark: 1024 * 1024,
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
      digester.update(chunk);
      if (e.size !== undefined && digester.bytes > e.size) {
        cb(new IntegrityError(`${e.what}: more than the expected ${e.size} bytes`));
        return;
      }
      cb(null, chunk);
    },
    flush(cb: TransformCallback): void {
      if (e.size !== undefined && digester.bytes !== e.size) {
        cb(new IntegrityError(`${e.what}: ${digester.bytes} bytes, expected ${e.size}`));
        return;
      }
      const actual = digester.digest();
      cb(actual === e.digest ? null : mismatch(e, actual));
    },
  });
}
