/**
 * A read trace: the order in which an image's chunks were first read by a
 * start-up, kept so the next start of the same image can prefetch them in
 * that order. One small JSON file:
 *
 *   {"format":"chunkyard-trace","version":1,"manifest":"sha256:…"|null,
 *    "chunkTable":"sha256:…","chunkSize":524288,"chunks":1024,"indexes":[0,5,6,…]}
 *
 * `manifest` is the digest of the manifest the trace was recorded under
 * (null when the recorder did not know it); `chunkTable` fingerprints the
 * chunk names themselves, so a trace is refused for another image even when
 * no digest was given. Indexes only, never names or keys: a trace says which
 * parts of the image a program touches, nothing of their content.
 */
import { createHash, randomBytes } from 'node:crypto';
import { open, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ChunkId } from '../chunks/id.js';
import { InputError, NotFoundError } from '../errors.js';
import type { Digest } from '../source/digest.js';

export const TRACE_FORMAT = 'chunkyard-trace';
export const TRACE_VERSION = 1;

/** What a trace must match to be used on an image. */
export interface TraceIdentity {
  readonly manifest: Digest | null;
  readonly chunkTable: Digest;
  readonly chunkSize: number;
  readonly chunks: number;
}

/** sha256 over the chunk count and each entry's name (32 zero bytes for a hole). */
export function chunkTableDigest(chunks: readonly ({ readonly id: ChunkId } | null)[]): Digest {
  const h = createHash('sha256');
  const count = Buffer.alloc(8);
  count.writeBigUInt64BE(BigInt(chunks.length));
  h.update(count);
  const hole = Buffer.alloc(32);
  for (const c of chunks) h.update(c === null ? hole : Buffer.from(c.id, 'hex'));
  return `sha256:${h.digest('hex')}` as Digest;
}

export function encodeTrace(identity: TraceIdentity, indexes: readonly number[]): string {
  return `${JSON.stringify({ format: TRACE_FORMAT, version: TRACE_VERSION, ...identity, indexes })}\n`;
}

/**
 * The indexes of a trace recorded for `expected`, in order, each once.
 * InputError (naming `label`) when the text is not a trace, or is one for
 * another manifest or image.
 */
export function decodeTrace(text: string, expected: TraceIdentity, label: string): number[] {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new InputError(`${label}: not a chunk trace (${(e as Error).message})`, { cause: e });
  }
  if (typeof v !== 'object' || v === null || (v as Record<string, unknown>)['format'] !== TRACE_FORMAT) {
    throw new InputError(`${label}: not a chunk trace (no "format": "${TRACE_FORMAT}")`);
  }
  const t = v as Record<string, unknown>;
  if (t['version'] !== TRACE_VERSION) throw new InputError(`${label}: unsupported chunk trace version ${JSON.stringify(t['version'])}: want ${TRACE_VERSION}`);
  const manifest = t['manifest'];
  if (manifest !== null && expected.manifest !== null && manifest !== expected.manifest) {
    throw new InputError(`${label}: trace was recorded for manifest ${String(manifest)}, not ${expected.manifest}`);
  }
  if (t['chunkTable'] !== expected.chunkTable || t['chunkSize'] !== expected.chunkSize || t['chunks'] !== expected.chunks) {
    throw new InputError(`${label}: trace was recorded for another image (its chunk table differs from manifest ${expected.manifest ?? 'given'})`);
  }
  const raw = t['indexes'];
  if (!Array.isArray(raw)) throw new InputError(`${label}: chunk trace has no "indexes" list`);
  const seen = new Uint8Array(expected.chunks);
  const out: number[] = [];
  for (const [k, i] of raw.entries()) {
    if (!Number.isInteger(i) || (i as number) < 0 || (i as number) >= expected.chunks) {
      throw new InputError(`${label}: indexes[${k}] = ${JSON.stringify(i)} is not a chunk index from 0 to ${expected.chunks - 1}`);
    }
    const n = i as number;
    if (seen[n] === 1) continue;
    seen[n] = 1;
    out.push(n);
  }
  return out;
}

/** Writes a trace atomically (temp file beside it, then rename), so a reader never sees half of one. */
export async function writeTraceFile(file: string, identity: TraceIdentity, indexes: readonly number[]): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, encodeTrace(identity, indexes), { flag: 'wx' });
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** Reads and checks a trace file (see decodeTrace). NotFoundError if there is none. */
export async function readTraceFile(file: string, expected: TraceIdentity): Promise<number[]> {
  // A trace holds at most one index per chunk: anything far bigger is not one (and is not read into memory).
  const limit = 4096 + expected.chunks * 12;
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`${file}: no such trace file`, { cause: e });
    throw e;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new InputError(`${file}: not a regular file`);
    if (st.size > limit) throw new InputError(`${file}: ${st.size} bytes is too big for a chunk trace of ${expected.chunks} chunks`);
    return decodeTrace(await fh.readFile('utf8'), expected, file);
  } finally {
    await fh.close();
  }
}
