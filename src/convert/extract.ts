import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { openChunk } from '../chunks/seal.js';
import { IntegrityError } from '../errors.js';
import type { Keys } from '../keys/keys.js';
import { manifestSalt, openManifest } from '../manifest/seal.js';
import type { Digest } from '../source/digest.js';
import { forEachBounded } from '../store/pool.js';
import type { Store } from '../store/store.js';
import { fetchManifest } from './ref.js';

export interface ExtractResult {
  readonly manifest: Digest;
  readonly imageBytes: number;
  readonly chunks: number;
  readonly holes: number;
}

/**
 * Writes a published image back to a file, every chunk checked and
 * decrypted; holes are left unwritten so the file stays sparse. Written under
 * a temporary name and renamed when complete.
 */
export async function extractImage(
  store: Store,
  ref: string,
  outPath: string,
  options: { readonly keys: Keys; readonly concurrency?: number; readonly signal?: AbortSignal; readonly onProgress?: (done: number, total: number) => void },
): Promise<ExtractResult> {
  const { signal } = options;
  const { digest, manifest } = await fetchManifest(store, ref, signal);
  const opened = openManifest(manifest.bytes, options.keys.manifestKey);
  const salt = manifestSalt(opened.header, options.keys.salt);
  const { size } = opened.header.filesystem;
  const chunkSize = opened.header.chunks.size;
  const tmp = join(dirname(outPath), `.${basename(outPath)}.${randomBytes(6).toString('hex')}.partial`);
  const fh = await open(tmp, 'wx', 0o644);
  let ok = false;
  try {
    await fh.truncate(size);
    const indices = opened.chunks.flatMap((r, i) => (r ? [i] : []));
    let done = 0;
    await forEachBounded(indices, options.concurrency ?? 8, async (index) => {
      const r = opened.chunks[index]!;
      const ct = await store.get(r.id, signal ? { signal } : {});
      if (ct === undefined) throw new IntegrityError(`chunk ${index} at offset ${index * chunkSize} (${r.id}) is missing from ${store.url}`);
      const plain = openChunk(ct, r, salt);
      const offset = index * chunkSize;
      const n = Math.min(chunkSize, size - offset);
      let written = 0;
      while (written < n) written += (await fh.write(plain, written, n - written, offset + written)).bytesWritten;
      options.onProgress?.(++done, indices.length);
    }, signal);
    await fh.sync();
    await fh.close();
    await rename(tmp, outPath);
    ok = true;
    return { manifest: digest, imageBytes: size, chunks: opened.chunks.length, holes: opened.chunks.length - indices.length };
  } finally {
    if (!ok) {
      await fh.close().catch(() => {});
      await unlink(tmp).catch(() => {});
    }
  }
}
