/**
 * Content-addressed blobs in a FileSet (`blobs/sha256/<hex>`) and the small
 * JSON documents of a layout or archive. Every blob is located, its size
 * compared with its descriptor, and then its digest checked; JSON is only
 * parsed from verified bytes.
 */
import { IntegrityError, InputError, NotFoundError } from '../errors.js';
import { type Digest, digestHex } from './digest.js';
import { type FileRange, type FileSet, readWhole } from './files.js';
import { parseJson } from './schema.js';
import { checkBuffer } from './verify.js';

/** Limits for documents read whole into memory (containers/image uses 4 MiB for manifests too). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
export const MAX_CONFIG_BYTES = 8 * 1024 * 1024;

export function blobName(digest: Digest): string {
  return `blobs/sha256/${digestHex(digest)}`;
}

/**
 * The blob's range; NotFoundError if absent, IntegrityError if its size is
 * not `expected.size`. `what` names it in messages (e.g. `config of oci:x`).
 */
export async function locateBlob(files: FileSet, expected: { readonly digest: Digest; readonly size: number }, what: string): Promise<FileRange> {
  const range = await files.locate(blobName(expected.digest));
  if (range === undefined) throw new NotFoundError(`${what}: blob ${expected.digest} not found in ${files.location}`);
  if (range.size !== expected.size) {
    throw new IntegrityError(`${what}: blob ${expected.digest} (${range.where}) is ${range.size} bytes, but its descriptor says ${expected.size}`);
  }
  return range;
}

/** Locate, read (bounded), verify size and digest, then parse a JSON blob. */
export async function readJsonBlob(
  files: FileSet,
  expected: { readonly digest: Digest; readonly size: number },
  what: string,
  max: number,
): Promise<{ readonly json: unknown; readonly bytes: Buffer }> {
  const range = await locateBlob(files, expected, what);
  const bytes = await readWhole(range, max, what);
  checkBuffer(bytes, { digest: expected.digest, size: expected.size, what: `${what}: blob ${expected.digest} (${range.where})` });
  return { json: parseJson(bytes, `${what} (${range.where})`), bytes };
}

/** A JSON file that is not content-addressed (index.json, manifest.json, oci-layout). */
export async function readJsonFile(files: FileSet, name: string, max: number): Promise<unknown> {
  const range = await files.locate(name);
  if (range === undefined) throw new NotFoundError(`${files.location}: no ${name}`);
  const bytes = await readWhole(range, max, name);
  return parseJson(bytes, range.where);
}

/** Checks the `oci-layout` marker file. */
export async function checkLayoutMarker(files: FileSet): Promise<void> {
  const range = await files.locate('oci-layout');
  if (range === undefined) throw new InputError(`${files.location}: not an OCI image layout (no oci-layout file)`);
  const json = parseJson(await readWhole(range, 64 * 1024, 'oci-layout'), range.where);
  const v = typeof json === 'object' && json !== null ? (json as Record<string, unknown>)['imageLayoutVersion'] : undefined;
  if (typeof v !== 'string' || !v.startsWith('1.')) {
    throw new InputError(`${range.where}: unsupported imageLayoutVersion ${JSON.stringify(v)} (want 1.x)`);
  }
}
