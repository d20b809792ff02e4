import { createHash, type Hash } from 'node:crypto';
import { InputError } from '../errors.js';

declare const digestBrand: unique symbol;
/** A content digest `sha256:<64 lowercase hex>`, validated once by parseDigest. */
export type Digest = string & { readonly [digestBrand]: true };

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

export function parseDigest(s: unknown, what = 'digest'): Digest {
  if (typeof s !== 'string' || !DIGEST_RE.test(s)) {
    throw new InputError(`invalid ${what} ${JSON.stringify(s)}: want sha256:<64 lowercase hex>`);
  }
  return s as Digest;
}

export function sha256Digest(data: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}` as Digest;
}

export function digestHex(d: Digest): string {
  return d.slice('sha256:'.length);
}

/** Incremental sha256 that yields a Digest. */
export class Digester {
  readonly #hash: Hash = createHash('sha256');
  #bytes = 0;
  update(chunk: Uint8Array): void {
    this.#hash.update(chunk);
    this.#bytes += chunk.length;
  }
  get bytes(): number {
    return this.#bytes;
  }
  digest(): Digest {
    return `sha256:${this.#hash.digest('hex')}` as Digest;
  }
}
