import type { KeyObject } from 'node:crypto';
import type { ShadowedData } from '../build/build.js';
import { checkChunkName, openChunk, type ChunkRef } from '../chunks/seal.js';
import { ChunkyardError, IntegrityError, UsageError } from '../errors.js';
import { Ext4Reader } from '../ext4/reader.js';
import type { Keys } from '../keys/keys.js';
import { manifestSalt, openManifest } from '../manifest/seal.js';
import { parseManifest, type ParsedManifest } from '../manifest/schema.js';
import { manifestSigner, verifySignature } from '../manifest/sign.js';
import type { Digest } from '../source/digest.js';
import type { ImageSource } from '../source/source.js';
import type { Store } from '../store/store.js';
import { forEachBounded } from '../store/pool.js';
import { manifestFromImage } from './convert.js';
import { fetchManifest } from './ref.js';
import { StoreByteSource } from './store-source.js';

export type ProblemKind = 'missing-chunk' | 'corrupt-chunk' | 'bad-plaintext' | 'signature' | 'filesystem' | 'rebuild';

export interface Problem {
  readonly kind: ProblemKind;
  readonly message: string;
  readonly index?: number;
  readonly offset?: number;
  readonly id?: string;
}

export interface VerifyReport {
  readonly manifest: Digest;
  readonly ok: boolean;
  readonly chunks: { readonly total: number; readonly holes: number; readonly checked: number; readonly missing: number; readonly corrupt: number };
  /** With the key: the manifest authenticated and every plaintext re-derived its key. */
  readonly decrypted: boolean;
  readonly signature: 'valid' | 'unsigned' | 'not checked' | 'invalid';
  readonly signer?: string;
  /** Inodes walked by chunkyard's ext4 reader (with the key). */
  readonly filesystemInodes?: number;
  readonly rebuild?: 'identical' | 'different';
  readonly problems: readonly Problem[];
}

export interface VerifyOptions {
  readonly keys?: Keys;
  /** Check the manifest's Ed25519 signature with this public key. */
  readonly publicKey?: KeyObject;
  /** Rebuild from this source and require the identical manifest (needs the key). */
  readonly rebuild?: ImageSource;
  /**
   * Build options the image was converted with, for the rebuild: they shape
   * the filesystem but are not recorded in the manifest. @default keep, 0
   */
  readonly rebuildOptions?: { readonly shadowed?: ShadowedData; readonly headroom?: number };
  readonly concurrency?: number;
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: { readonly checked: number; readonly total: number }) => void;
}

/**
 * Checks a published image. Without a key: the manifest is well formed and
 * intact (the store checks its digest), every chunk is present and hashes to
 * its name. With the key: the manifest authenticates, every chunk decrypts and
 * re-derives its key, and the filesystem walks cleanly. Every problem is
 * reported (chunk index, offset, name), not just the first.
 */
export async function verifyImage(store: Store, ref: string, options: VerifyOptions = {}): Promise<VerifyReport> {
  const { signal, keys } = options;
  const { digest, manifest } = await fetchManifest(store, ref, signal);
  const problems: Problem[] = [];
  let signature: VerifyReport['signature'] = 'not checked';
  const signer = manifestSigner(manifest);
  if (options.publicKey) {
    if (signer === null) {
      signature = 'unsigned';
      problems.push({ kind: 'signature', message: 'manifest is not signed' });
    } else {
      try {
        verifySignature(manifest.bytes, options.publicKey);
        signature = 'valid';
      } catch (e) {
        signature = 'invalid';
        problems.push({ kind: 'signature', message: (e as Error).message });
      }
    }
  }
  // With the key, the manifest must authenticate before anything else is trusted.
  const opened = keys ? openManifest(manifest.bytes, keys.manifestKey) : undefined;
  const salt = keys && opened ? manifestSalt(opened.header, keys.salt) : undefined;
  const chunkSize = manifest.header.chunks.size;
  const refs: readonly (ChunkRef | null)[] = opened ? opened.chunks : manifest.chunks.map((id) => (id ? { id, key: Buffer.alloc(0) } : null));
  let checked = 0;
  let missing = 0;
  let corrupt = 0;
  const indices = refs.flatMap((r, i) => (r ? [i] : []));
  await forEachBounded(indices, options.concurrency ?? 8, async (index) => {
    const r = refs[index]!;
    const where = { index, offset: index * chunkSize, id: r.id };
    const ct = await store.get(r.id, signal ? { signal } : {});
    checked++;
    options.onProgress?.({ checked, total: indices.length });
    if (ct === undefined) {
      missing++;
      problems.push({ kind: 'missing-chunk', message: `chunk ${index} at offset ${where.offset} (${r.id}) is missing`, ...where });
      return;
    }
    try {
      if (salt) openChunk(ct, r, salt);
      else checkChunkName(ct, r.id);
    } catch (e) {
      if (!(e instanceof IntegrityError)) throw e;
      corrupt++;
      const kind = /plaintext/.test(e.message) ? 'bad-plaintext' : 'corrupt-chunk';
      // openChunk names the chunk by id only; say where it sits, in the same words as a missing one.
      problems.push({ kind, message: `chunk ${index} at offset ${where.offset} (${r.id}): ${e.message.replace(`chunk ${r.id}: `, '')}`, ...where });
    }
  }, signal);
  let filesystemInodes: number | undefined;
  if (opened && salt && missing + corrupt === 0) {
    const src = new StoreByteSource(store, opened.header, opened.chunks, salt, { name: digest });
    try {
      const reader = await Ext4Reader.open(src, signal ? { signal } : {});
      filesystemInodes = 0;
      try {
        for await (const e of reader.walk(signal ? { signal } : {})) {
          filesystemInodes++;
          if (e.stat.kind === 'symlink') await reader.readlink(e.ino, signal);
        }
      } finally {
        await reader.close();
      }
    } catch (e) {
      if (!(e instanceof ChunkyardError) || e.exitCode === 130) throw e;
      problems.push({ kind: 'filesystem', message: `filesystem: ${e.message}` });
    }
  }
  let rebuild: VerifyReport['rebuild'];
  if (options.rebuild) {
    if (!keys) throw new UsageError('--rebuild needs the key (--key-file or CHUNKYARD_KEY)');
    const { shadowed, headroom } = options.rebuildOptions ?? {};
    const again = await manifestFromImage(options.rebuild, {
      keys,
      chunkSize,
      ...(shadowed !== undefined ? { shadowed } : {}),
      ...(headroom !== undefined ? { headroom } : {}),
      ...(signal ? { signal } : {}),
    });
    const stored = manifest.layout.signatureAt === null ? manifest.bytes : manifest.bytes.subarray(0, manifest.layout.signatureAt);
    rebuild = again.equals(stored) ? 'identical' : 'different';
    if (rebuild === 'different') {
      problems.push({ kind: 'rebuild', message: `a rebuild from the source gives a different manifest: ${rebuildDifference(manifest, parseManifest(again))}` });
    }
  }
  problems.sort((a, b) => (a.index ?? -1) - (b.index ?? -1));
  return {
    manifest: digest,
    ok: problems.length === 0,
    chunks: { total: refs.length, holes: refs.length - indices.length, checked, missing, corrupt },
    decrypted: opened !== undefined,
    signature,
    ...(signer !== null ? { signer } : {}),
    ...(filesystemInodes !== undefined ? { filesystemInodes } : {}),
    ...(rebuild !== undefined ? { rebuild } : {}),
    problems,
  };
}

/** What first differs between the stored manifest and the rebuilt one, in words (no key needed). */
function rebuildDifference(stored: ParsedManifest, again: ParsedManifest): string {
  const a = stored.header;
  const b = again.header;
  if (a.source.manifestDigest !== b.source.manifestDigest) {
    return `the source is another image (its manifest is ${b.source.manifestDigest}, the stored one names ${a.source.manifestDigest})`;
  }
  if (a.filesystem.size !== b.filesystem.size) {
    return `the filesystem is ${b.filesystem.size} bytes, the stored one ${a.filesystem.size} (was it converted with another --headroom?)`;
  }
  let differ = 0;
  let first = -1;
  for (let i = 0; i < a.chunks.count; i++) {
    if (stored.chunks[i] !== again.chunks[i]) {
      differ++;
      if (first < 0) first = i;
    }
  }
  if (differ > 0) return `${differ} of ${a.chunks.count} chunks differ, the first at index ${first} (was it converted with another --shadowed?)`;
  return 'the headers differ (another chunkyard version, or runtime settings)';
}
