import { createCipheriv, createDecipheriv } from 'node:crypto';
import { IntegrityError } from '../errors.js';
import { blake3 } from '../chunks/blake3.js';
import { CHUNK_CIPHER, CHUNK_HASH, CHUNK_KEY_BYTES, type ChunkRef } from '../chunks/seal.js';
import type { ChunkId } from '../chunks/id.js';
import type { Salt } from '../chunks/salt.js';
import { keyId, MANIFEST_KEY_BYTES } from '../keys/keys.js';
import {
  encodeManifestBody,
  NONCE_BYTES,
  parseManifest,
  SEALED_KEY_BYTES,
  TAG_BYTES,
  type ManifestFilesystem,
  type ManifestHeader,
  type ManifestRuntime,
  type ManifestSource,
  type ParsedManifest,
} from './schema.js';

/**
 * Sealing the chunk-key table under the user's manifest key (AES-256-GCM),
 * with every byte before it as AAD — so the one tag authenticates the whole
 * manifest (header, hole bitmap, names and their order) as well as the keys.
 *
 * The manifest key is never used directly: BLAKE3 derive_key makes one
 * subkey for the GCM key and one for the nonce (and keys.ts one for the
 * public key id), each under its own context string, so no two uses share a
 * key.
 *
 * The nonce is deterministic, so the same image, keys and salt give the same
 * manifest bytes (what `verify --rebuild` compares):
 *
 *   nonce = first 12 bytes of BLAKE3-keyed(nonceKey, BLAKE3(AAD) ‖ BLAKE3(key table))
 *
 * This is the SIV construction: the nonce is a PRF of everything GCM is
 * about to process. GCM breaks only if one (key, nonce) pair seals two
 * different (AAD, plaintext) pairs; here a nonce repeats for different inputs
 * only on a 96-bit PRF collision (≈ 2^-48 after 2^24 manifests per key), and
 * for equal inputs it repeats together with identical output, which reveals
 * nothing but the equality itself — which is the point of determinism.
 */

const SEAL_KEY_CONTEXT = 'chunkyard v1 manifest key table: AES-256-GCM key';
const NONCE_KEY_CONTEXT = 'chunkyard v1 manifest key table: GCM nonce';
export const MANIFEST_SEAL = 'aes-256-gcm';

/** What the caller says about the image; sealManifest fills in chunk counts and key id. */
export interface ManifestInput {
  /** `chunkyard <version>` */
  readonly createdBy: string;
  readonly source: ManifestSource;
  readonly runtime: ManifestRuntime;
  readonly filesystem: ManifestFilesystem;
  readonly chunkSize: number;
  readonly saltEpoch: number;
}

/** A manifest opened with its key. */
export interface OpenedManifest {
  readonly header: ManifestHeader;
  /** One entry per chunk: name and key, or null for a hole. */
  readonly chunks: readonly (ChunkRef | null)[];
}

function subkeys(manifestKey: Buffer): { sealKey: Buffer; nonceKey: Buffer } {
  if (manifestKey.length !== MANIFEST_KEY_BYTES) throw new RangeError(`Cannot use the manifest key: want ${MANIFEST_KEY_BYTES} bytes`);
  return { sealKey: blake3.deriveKey(SEAL_KEY_CONTEXT, manifestKey), nonceKey: blake3.deriveKey(NONCE_KEY_CONTEXT, manifestKey) };
}

/**
 * Builds and seals a manifest. `chunks[i]` is chunk i's name and key, or null
 * for a hole; there must be ceil(filesystem.size / chunkSize) of them.
 * Deterministic: same input, chunks and key → same bytes.
 */
export function sealManifest(input: ManifestInput, chunks: readonly (ChunkRef | null)[], manifestKey: Buffer): Buffer {
  const { sealKey, nonceKey } = subkeys(manifestKey);
  const header: ManifestHeader = {
    version: 1,
    createdBy: input.createdBy,
    source: input.source,
    runtime: input.runtime,
    filesystem: input.filesystem,
    chunks: { size: input.chunkSize, count: chunks.length, hash: CHUNK_HASH, cipher: CHUNK_CIPHER, saltEpoch: input.saltEpoch },
    keys: { id: keyId(manifestKey), seal: MANIFEST_SEAL },
  };
  const names: (ChunkId | null)[] = [];
  let stored = 0;
  for (let i = 0; i < chunks.length; i++) {
    const c = chunks[i];
    if (c === undefined) throw new RangeError(`Cannot seal a manifest: chunk ${i} has no entry`);
    names.push(c === null ? null : c.id);
    if (c !== null) stored++;
  }
  const aad = encodeManifestBody(header, names);
  const table = Buffer.alloc(stored * CHUNK_KEY_BYTES);
  try {
    let at = 0;
    for (const c of chunks) {
      if (c === null || c === undefined) continue;
      if (c.key.length !== CHUNK_KEY_BYTES) throw new RangeError(`Cannot seal a manifest: chunk ${c.id} has a ${c.key.length}-byte key`);
      c.key.copy(table, at);
      at += CHUNK_KEY_BYTES;
    }
    const nonce = blake3.keyedHash(nonceKey, Buffer.concat([blake3.hash(aad), blake3.hash(table)])).subarray(0, NONCE_BYTES);
    const cipher = createCipheriv(MANIFEST_SEAL, sealKey, nonce, { authTagLength: TAG_BYTES });
    cipher.setAAD(aad);
    const sealed = Buffer.concat([cipher.update(table), cipher.final()]);
    return Buffer.concat([aad, nonce, sealed, cipher.getAuthTag()]);
  } finally {
    table.fill(0);
    sealKey.fill(0);
    nonceKey.fill(0);
  }
}

/**
 * The chunk keys, index-aligned with `manifest.chunks` (null for holes).
 * IntegrityError when the manifest names another key, or when anything in it
 * was changed (the tag fails).
 */
export function unsealKeys(manifest: ParsedManifest, manifestKey: Buffer): (Buffer | null)[] {
  const given = keyId(manifestKey);
  if (manifest.header.keys.id !== given) {
    throw new IntegrityError(`manifest sealed with key ${manifest.header.keys.id}, you gave key ${given}`);
  }
  const { bytes, layout } = manifest;
  const { sealKey, nonceKey } = subkeys(manifestKey);
  nonceKey.fill(0);
  const nonceAt = layout.aadEnd;
  const sealedAt = nonceAt + NONCE_BYTES;
  const tagAt = sealedAt + layout.stored * SEALED_KEY_BYTES;
  let table: Buffer;
  try {
    const decipher = createDecipheriv(MANIFEST_SEAL, sealKey, bytes.subarray(nonceAt, sealedAt), { authTagLength: TAG_BYTES });
    decipher.setAAD(bytes.subarray(0, layout.aadEnd));
    decipher.setAuthTag(bytes.subarray(tagAt, tagAt + TAG_BYTES));
    const head = decipher.update(bytes.subarray(sealedAt, tagAt));
    decipher.final(); // throws when the tag does not match
    table = head;
  } catch {
    throw new IntegrityError('manifest: authentication failed (tampered, or not sealed with this key)');
  } finally {
    sealKey.fill(0);
  }
  const keys: (Buffer | null)[] = [];
  let at = 0;
  for (const c of manifest.chunks) {
    if (c === null) {
      keys.push(null);
    } else {
      keys.push(Buffer.from(table.subarray(at, at + CHUNK_KEY_BYTES)));
      at += CHUNK_KEY_BYTES;
    }
  }
  table.fill(0);
  return keys;
}

/** parseManifest + unsealKeys: the header and, per chunk, its name and key. */
export function openManifest(bytes: Buffer, manifestKey: Buffer): OpenedManifest {
  const m = parseManifest(bytes);
  const keys = unsealKeys(m, manifestKey);
  return {
    header: m.header,
    chunks: m.chunks.map((id, i) => (id === null ? null : { id, key: keys[i]! })),
  };
}

/**
 * The salt a manifest's chunks open under: the user's secret at the epoch the
 * manifest was sealed with (which may be older than the key file's current
 * epoch: rotating the epoch does not orphan earlier images).
 */
export function manifestSalt(header: ManifestHeader, salt: Salt): Salt {
  return { epoch: header.chunks.saltEpoch, secret: salt.secret };
}
