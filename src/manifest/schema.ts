import { InputError, IntegrityError } from '../errors.js';
import { CHUNK_ID_BYTES, chunkIdFromBytes, type ChunkId } from '../chunks/id.js';
import { assertChunkSize } from '../chunks/chunker.js';
import { MAX_SALT_EPOCH } from '../chunks/salt.js';
import { isKeyId, type KeyId } from '../keys/keys.js';
import { sha256Digest, type Digest } from '../source/digest.js';

/**
 * The manifest: everything needed to run an image from a chunk store, in one
 * small, deterministic, authenticated file. Byte layout (version 1, integers
 * big-endian):
 *
 *   offset          size      field
 *   0               4         magic "CYM1" (the digit is the layout version)
 *   4               4         H: header length
 *   8               H         header: canonical JSON, UTF-8 (ManifestHeader; sorted keys, no spaces)
 *   8+H             B         hole bitmap, B = ceil(N/8): bit i (byte i>>3, bit i&7, LSB first)
 *                             set = chunk i is all zeros and not stored; unused bits 0
 *   8+H+B           32·P      names (BLAKE3 of ciphertext) of the P = N − holes stored chunks, in index order
 *   ── everything above is the AAD of the key-table seal ──
 *   A               12        AES-256-GCM nonce
 *   A+12            32·P      sealed chunk keys (GCM ciphertext of the P keys, same order as the names)
 *   A+12+32P        16        GCM tag
 *   ── optional, added by signManifest ──
 *   S               4         "CYS1"
 *   S+4             32        signer's raw Ed25519 public key
 *   S+36            64        Ed25519 signature of bytes [0, S+36)
 *
 * N is the header's chunks.count. Size: 64 bytes per stored chunk plus one
 * bit per chunk plus the header — 0.012% of the image at 512 KiB chunks
 * (the paper: < 0.02%).
 *
 * Without any key, anyone can parse the header and list the chunk names
 * (verify without keys, GC). With the manifest key, the GCM tag authenticates
 * every byte up to it: an edited header, a flipped name, two names swapped,
 * a moved hole — all fail the tag, not just the key table.
 */

export const MANIFEST_MAGIC = 'CYM';
export const MANIFEST_VERSION = 1;
export const SIGNATURE_MAGIC = 'CYS1';
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
export const SEALED_KEY_BYTES = 32;
export const SIGNATURE_BLOCK_BYTES = 4 + 32 + 64;
/** Env lists and labels make headers of a few KiB; a MiB is already absurd. */
const MAX_HEADER_BYTES = 1 << 20;

/**
 * Which image this is, by content: digests only. The reference the user typed
 * (a local path, often) is left out, so the same image gives the same manifest
 * from wherever it is read, and no local path leaks into a published manifest.
 */
export interface ManifestSource {
  readonly manifestDigest: Digest;
  readonly configDigest: Digest;
  readonly diffIds: readonly Digest[];
  /** `os/architecture[/variant]` */
  readonly platform: string;
}

/** What a runtime needs from the image config to start the image. */
export interface ManifestRuntime {
  readonly entrypoint: readonly string[] | null;
  readonly cmd: readonly string[] | null;
  readonly env: readonly string[];
  readonly workingDir: string;
  readonly user: string;
  readonly labels: Readonly<Record<string, string>>;
}

export interface ManifestFilesystem {
  readonly type: 'ext4';
  /** Bytes; a whole number of blocks. */
  readonly size: number;
  readonly blockSize: number;
  readonly uuid: string;
}

export interface ManifestChunks {
  /** Bytes per chunk (the last one is zero-padded). */
  readonly size: number;
  /** ceil(filesystem.size / size), holes included. */
  readonly count: number;
  readonly hash: 'blake3';
  readonly cipher: 'aes-256-ctr';
  /** The salt epoch the chunks were sealed under. */
  readonly saltEpoch: number;
}

export interface ManifestKeys {
  /** Fingerprint of the manifest key that sealed the key table. */
  readonly id: KeyId;
  readonly seal: 'aes-256-gcm';
}

export interface ManifestHeader {
  readonly version: 1;
  /** `chunkyard <version>`. No timestamps: the same inputs and keys give the same bytes. */
  readonly createdBy: string;
  readonly source: ManifestSource;
  readonly runtime: ManifestRuntime;
  readonly filesystem: ManifestFilesystem;
  readonly chunks: ManifestChunks;
  readonly keys: ManifestKeys;
}

/** A manifest read without keys. */
export interface ParsedManifest {
  readonly bytes: Buffer;
  readonly header: ManifestHeader;
  /** One entry per chunk: its name, or null for a hole. */
  readonly chunks: readonly (ChunkId | null)[];
  /** Where things are in `bytes`. */
  readonly layout: ManifestLayout;
}

export interface ManifestLayout {
  /** End of the AAD = offset of the nonce. */
  readonly aadEnd: number;
  /** Stored (non-hole) chunks. */
  readonly stored: number;
  /** Offset of the signature block, or null when unsigned. */
  readonly signatureAt: number | null;
}

/** sha256 of all the manifest's bytes (signature included): its name in a store. */
export function manifestDigest(bytes: Uint8Array): Digest {
  return sha256Digest(bytes);
}

// --- canonical JSON ----------------------------------------------------------

/** JSON with object keys sorted and no whitespace, so equal values give equal bytes. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v === 'boolean' || typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new RangeError(`Cannot encode ${v} in a manifest: only safe integers`);
    return String(v);
  }
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (typeof v === 'object') {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
  }
  throw new RangeError(`Cannot encode a ${typeof v} in a manifest`);
}

// --- header validation -------------------------------------------------------

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

class HeaderReader {
  bad(path: string, want: string): never {
    throw new IntegrityError(`manifest: header field ${path} is not ${want} (corrupt or tampered)`);
  }
  obj(v: unknown, path: string): Record<string, unknown> {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.bad(path, 'an object');
    return v as Record<string, unknown>;
  }
  str(v: unknown, path: string): string {
    if (typeof v !== 'string') this.bad(path, 'a string');
    return v;
  }
  int(v: unknown, path: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) this.bad(path, `an integer from ${min} to ${max}`);
    return v;
  }
  digest(v: unknown, path: string): Digest {
    if (typeof v !== 'string' || !DIGEST_RE.test(v)) this.bad(path, 'a sha256 digest');
    return v as Digest;
  }
  strings(v: unknown, path: string): string[] {
    if (!Array.isArray(v)) this.bad(path, 'a list of strings');
    return v.map((s, i) => this.str(s, `${path}[${i}]`));
  }
  literal<T extends string | number>(v: unknown, path: string, want: T): T {
    if (v !== want) this.bad(path, JSON.stringify(want));
    return want;
  }
}

/** Checks a decoded header's shape and internal consistency; builds it from known fields only. */
export function checkHeader(v: unknown): ManifestHeader {
  const r: HeaderReader = new HeaderReader();
  const o = r.obj(v, '(root)');
  const version = r.literal(o['version'], 'version', MANIFEST_VERSION);
  const s = r.obj(o['source'], 'source');
  const source: ManifestSource = {
    manifestDigest: r.digest(s['manifestDigest'], 'source.manifestDigest'),
    configDigest: r.digest(s['configDigest'], 'source.configDigest'),
    diffIds: (Array.isArray(s['diffIds']) ? s['diffIds'] : r.bad('source.diffIds', 'a list')).map((d, i) => r.digest(d, `source.diffIds[${i}]`)),
    platform: r.str(s['platform'], 'source.platform'),
  };
  const rt = r.obj(o['runtime'], 'runtime');
  const labelsObj = r.obj(rt['labels'], 'runtime.labels');
  const labels: Record<string, string> = {};
  for (const k of Object.keys(labelsObj).sort()) labels[k] = r.str(labelsObj[k], `runtime.labels[${JSON.stringify(k)}]`);
  const runtime: ManifestRuntime = {
    entrypoint: rt['entrypoint'] === null ? null : r.strings(rt['entrypoint'], 'runtime.entrypoint'),
    cmd: rt['cmd'] === null ? null : r.strings(rt['cmd'], 'runtime.cmd'),
    env: r.strings(rt['env'], 'runtime.env'),
    workingDir: r.str(rt['workingDir'], 'runtime.workingDir'),
    user: r.str(rt['user'], 'runtime.user'),
    labels,
  };
  const f = r.obj(o['filesystem'], 'filesystem');
  const blockSize = r.literal(f['blockSize'], 'filesystem.blockSize', 4096);
  const filesystem: ManifestFilesystem = {
    type: r.literal(f['type'], 'filesystem.type', 'ext4'),
    size: r.int(f['size'], 'filesystem.size', blockSize),
    blockSize,
    uuid: r.str(f['uuid'], 'filesystem.uuid'),
  };
  if (filesystem.size % blockSize !== 0) r.bad('filesystem.size', 'a whole number of blocks');
  const c = r.obj(o['chunks'], 'chunks');
  const size = r.int(c['size'], 'chunks.size', 1);
  try {
    assertChunkSize(size);
  } catch {
    r.bad('chunks.size', 'a power of two from 64 KiB to 4 MiB');
  }
  const chunks: ManifestChunks = {
    size,
    count: r.int(c['count'], 'chunks.count', 1),
    hash: r.literal(c['hash'], 'chunks.hash', 'blake3'),
    cipher: r.literal(c['cipher'], 'chunks.cipher', 'aes-256-ctr'),
    saltEpoch: r.int(c['saltEpoch'], 'chunks.saltEpoch', 0, MAX_SALT_EPOCH),
  };
  if (chunks.count !== Math.ceil(filesystem.size / size)) r.bad('chunks.count', `ceil(filesystem.size / chunks.size) = ${Math.ceil(filesystem.size / size)}`);
  const k = r.obj(o['keys'], 'keys');
  const id = k['id'];
  if (!isKeyId(id)) r.bad('keys.id', 'a key id (16 hex digits)');
  const keys: ManifestKeys = { id, seal: r.literal(k['seal'], 'keys.seal', 'aes-256-gcm') };
  return { version, createdBy: r.str(o['createdBy'], 'createdBy'), source, runtime, filesystem, chunks, keys };
}

// --- encoding ----------------------------------------------------------------

/**
 * The AAD part of a manifest: magic, header, hole bitmap, names. `chunks[i]`
 * is chunk i's name or null for a hole; `header.chunks.count` must match.
 */
export function encodeManifestBody(header: ManifestHeader, chunks: readonly (ChunkId | null)[]): Buffer {
  const checked = checkHeaderForWrite(header);
  if (chunks.length !== checked.chunks.count) {
    throw new RangeError(`Cannot encode a manifest of ${checked.chunks.count} chunks with ${chunks.length} chunk entries`);
  }
  const json = Buffer.from(canonicalJson(checked), 'utf8');
  if (json.length > MAX_HEADER_BYTES) throw new RangeError(`Cannot encode a ${json.length}-byte manifest header: over ${MAX_HEADER_BYTES} bytes`);
  const n = chunks.length;
  const bitmapBytes = Math.ceil(n / 8);
  let stored = 0;
  for (let i = 0; i < n; i++) {
    const c = chunks[i];
    if (c === undefined) throw new RangeError(`Cannot encode a manifest: chunk ${i} has no entry`);
    if (c !== null) stored++;
  }
  const out = Buffer.alloc(8 + json.length + bitmapBytes + stored * CHUNK_ID_BYTES);
  out.write(`${MANIFEST_MAGIC}${MANIFEST_VERSION}`, 0, 'latin1');
  out.writeUInt32BE(json.length, 4);
  json.copy(out, 8);
  const bitmapAt = 8 + json.length;
  let nameAt = bitmapAt + bitmapBytes;
  for (let i = 0; i < n; i++) {
    const c = chunks[i]!;
    if (c === null) {
      out[bitmapAt + (i >> 3)]! |= 1 << (i & 7);
    } else {
      if (out.write(c, nameAt, 'hex') !== CHUNK_ID_BYTES) throw new RangeError(`Cannot encode chunk ${i}: bad chunk id`);
      nameAt += CHUNK_ID_BYTES;
    }
  }
  return out;
}

/** The writer's own header goes through the reader's checks: we never write what we would not read. */
function checkHeaderForWrite(h: ManifestHeader): ManifestHeader {
  try {
    return checkHeader(JSON.parse(canonicalJson(h)));
  } catch (e) {
    if (e instanceof IntegrityError) throw new RangeError(`Cannot encode the manifest: ${e.message.replace(/^manifest: /, '').replace(/ \(corrupt or tampered\)$/, '')}`);
    throw e;
  }
}

// --- parsing -----------------------------------------------------------------

/** Parses a manifest without any key: header and chunk names. Structural damage is an IntegrityError. */
export function parseManifest(bytes: Buffer): ParsedManifest {
  if (bytes.length < 8) throw new IntegrityError(`manifest: truncated (${bytes.length} bytes)`);
  const magic = bytes.toString('latin1', 0, 4);
  if (magic !== `${MANIFEST_MAGIC}${MANIFEST_VERSION}`) {
    if (magic.startsWith(MANIFEST_MAGIC) && /^[0-9]$/.test(magic[3]!)) {
      throw new InputError(`manifest: format version ${magic[3]} is not supported (this chunkyard reads version ${MANIFEST_VERSION})`);
    }
    throw new IntegrityError('manifest: not a chunkyard manifest (bad magic)');
  }
  const headerLength = bytes.readUInt32BE(4);
  if (headerLength > MAX_HEADER_BYTES) throw new IntegrityError(`manifest: header length ${headerLength} is implausible (corrupt or tampered)`);
  const bitmapAt = 8 + headerLength;
  if (bitmapAt > bytes.length) throw new IntegrityError(`manifest: truncated (${bytes.length} bytes, header alone needs ${bitmapAt})`);
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, bitmapAt)));
  } catch {
    throw new IntegrityError('manifest: header is not valid JSON (corrupt or tampered)');
  }
  const header = checkHeader(doc);
  const n = header.chunks.count;
  const bitmapBytes = Math.ceil(n / 8);
  const namesAt = bitmapAt + bitmapBytes;
  if (namesAt > bytes.length) throw new IntegrityError(`manifest: truncated (${bytes.length} bytes, want at least ${namesAt})`);
  let holes = 0;
  for (let i = 0; i < n; i++) if (bytes[bitmapAt + (i >> 3)]! & (1 << (i & 7))) holes++;
  if (n % 8 !== 0 && bytes[namesAt - 1]! >> (n % 8) !== 0) throw new IntegrityError('manifest: hole bitmap has bits set past the last chunk (corrupt or tampered)');
  const stored = n - holes;
  const aadEnd = namesAt + stored * CHUNK_ID_BYTES;
  const unsignedLength = aadEnd + NONCE_BYTES + stored * SEALED_KEY_BYTES + TAG_BYTES;
  let signatureAt: number | null = null;
  if (bytes.length === unsignedLength + SIGNATURE_BLOCK_BYTES && bytes.toString('latin1', unsignedLength, unsignedLength + 4) === SIGNATURE_MAGIC) {
    signatureAt = unsignedLength;
  } else if (bytes.length !== unsignedLength) {
    const what = bytes.length < unsignedLength ? 'truncated' : 'has trailing bytes';
    throw new IntegrityError(`manifest: ${what} (${bytes.length} bytes, want ${unsignedLength}, or ${unsignedLength + SIGNATURE_BLOCK_BYTES} signed)`);
  }
  const chunks: (ChunkId | null)[] = new Array<ChunkId | null>(n);
  let at = namesAt;
  for (let i = 0; i < n; i++) {
    if (bytes[bitmapAt + (i >> 3)]! & (1 << (i & 7))) {
      chunks[i] = null;
    } else {
      chunks[i] = chunkIdFromBytes(bytes.subarray(at, at + CHUNK_ID_BYTES));
      at += CHUNK_ID_BYTES;
    }
  }
  return { bytes, header, chunks, layout: { aadEnd, stored, signatureAt } };
}
