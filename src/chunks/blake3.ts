import { createRequire } from 'node:module';

/**
 * BLAKE3, from the native addon when it built at install time, else from
 * WebAssembly. Both give the same bytes (the official test vectors are checked
 * against both in blake3.test.ts); only the speed differs (measured by
 * bench/hash.ts: native keyed hash ~5 GB/s, wasm ~1 GB/s, node sha256 ~0.8 GB/s
 * on the reference machine).
 *
 * We load `@c4312/blake3-native` and `blake3-wasm` ourselves instead of going
 * through the `blake3` umbrella package: that package picks its backend by
 * rewriting its own files in a postinstall script, so with install scripts
 * blocked (`npm ci --ignore-scripts`, npm's allowScripts) it points at a
 * native module that was never built and fails to load. Here a missing or
 * broken native build just means the wasm backend.
 */

export type Blake3Backend = 'native' | 'wasm';

export interface Blake3 {
  readonly backend: Blake3Backend;
  /** Plain 32-byte BLAKE3 hash. */
  hash(data: Uint8Array): Buffer;
  /** 32-byte keyed hash (BLAKE3 keyed mode, key of 32 bytes). */
  keyedHash(key: Uint8Array, data: Uint8Array): Buffer;
  /** 32-byte key from BLAKE3's derive_key mode: `context` is a fixed, unique, application string. */
  deriveKey(context: string, material: Uint8Array): Buffer;
}

/** The part of both packages' API we use. */
interface Blake3Module {
  hash(input: Uint8Array): Buffer | Uint8Array;
  keyedHash(key: Uint8Array, input: Uint8Array): Buffer | Uint8Array;
  deriveKey(context: string, material: Uint8Array): Buffer | Uint8Array;
  load(): Promise<void>;
}

const require = createRequire(import.meta.url);

function wrap(backend: Blake3Backend, m: Blake3Module): Blake3 {
  // The wasm package returns Uint8Array in some paths; callers get Buffers.
  const buf = (u: Buffer | Uint8Array): Buffer => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength));
  return {
    backend,
    hash: (data) => buf(m.hash(data)),
    keyedHash: (key, data) => {
      if (key.length !== 32) throw new RangeError(`Cannot use a ${key.length}-byte BLAKE3 key: want 32 bytes`);
      return buf(m.keyedHash(key, data));
    },
    deriveKey: (context, material) => buf(m.deriveKey(context, material)),
  };
}

const loaded = new Map<Blake3Backend, Promise<Blake3>>();

/** Loads one backend; rejects if it is not available (native not built). */
export function loadBlake3Backend(backend: Blake3Backend): Promise<Blake3> {
  let p = loaded.get(backend);
  if (!p) {
    p = (async () => {
      const m = require(backend === 'native' ? '@c4312/blake3-native' : 'blake3-wasm') as Blake3Module;
      await m.load();
      return wrap(backend, m);
    })();
    loaded.set(backend, p);
  }
  return p;
}

/** The fastest backend available: native, else wasm. */
export async function loadBlake3(): Promise<Blake3> {
  try {
    return await loadBlake3Backend('native');
  } catch {
    return loadBlake3Backend('wasm');
  }
}

/**
 * The process-wide instance, loaded once when this module is first imported
 * (wasm needs an async load, and the hot paths — sealChunk — are synchronous).
 */
export const blake3: Blake3 = await loadBlake3();
