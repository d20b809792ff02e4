/**
 * GNU sparse files (oci.md §7): old GNU ('S' typeflag, map in the header) and
 * PAX 0.0 / 0.1 / 1.0 (`GNU.sparse.*`). The reader expands them to their
 * logical content: the stored fragments in order, zeros in the gaps. The
 * zeros come from one shared buffer, so a huge hole costs no memory.
 */
import { parseDecimal, type PaxFields } from './pax.js';
import { BLOCK, parseNumeric, TarFormatError, type TarHeader } from './tar-header.js';

export interface SparseFragment {
  readonly offset: number;
  readonly length: number;
}

/** Meta data we are willing to read for one sparse map (like Go's 1 MiB cap on special files). */
export const MAX_SPARSE_MAP_BYTES = 1 << 20;

/** What the PAX records say about sparseness. */
export type PaxSparse =
  /** 0.0 / 0.1: the map is in the records. */
  | { readonly version: '0.x'; readonly fragments: SparseFragment[]; readonly size: number | undefined; readonly name: Buffer | undefined }
  /** 1.0: the map is at the start of the entry's data. */
  | { readonly version: '1.0'; readonly size: number | undefined; readonly name: Buffer | undefined };

export function paxSparse(pax: PaxFields): PaxSparse | undefined {
  if (pax.local.length === 0) return undefined; // the common case, without building a map
  // Only the entry's own records count: a sparse map in a global header makes no sense.
  const own = new Map(pax.local);
  const text = (k: string): string | undefined => own.get(`GNU.sparse.${k}`)?.toString('latin1');
  const major = text('major');
  const minor = text('minor');
  // 0.0 repeats offset/numbytes pairs; collect them in order.
  const pairs: string[] = [];
  for (const [k, v] of pax.local) {
    if (k !== 'GNU.sparse.offset' && k !== 'GNU.sparse.numbytes') continue;
    const want = pairs.length % 2 === 0 ? 'GNU.sparse.offset' : 'GNU.sparse.numbytes';
    if (k !== want) throw new TarFormatError('GNU sparse 0.0: offset/numbytes records out of order');
    pairs.push(v.toString('latin1'));
  }
  const mapText = pairs.length > 0 ? pairs.join(',') : text('map');
  let version: '0.x' | '1.0';
  if (major === '0' && (minor === '0' || minor === '1')) version = '0.x';
  else if (major === '1' && minor === '0') version = '1.0';
  else if (major !== undefined || minor !== undefined) throw new TarFormatError(`unsupported GNU sparse format ${major ?? '?'}.${minor ?? '?'}`);
  else if (mapText !== undefined) version = '0.x';
  else return undefined;

  const sizeText = text('size') ?? text('realsize');
  const size = sizeText !== undefined ? parseDecimal(sizeText, 'GNU.sparse.size') : undefined;
  const name = own.get('GNU.sparse.name');
  if (version === '1.0') return { version, size, name: name?.length ? name : undefined };

  const nums = mapText === undefined || mapText === '' ? [] : mapText.split(',').map((s) => parseDecimal(s, 'GNU sparse map entry'));
  if (nums.length % 2 !== 0) throw new TarFormatError('GNU sparse map has an odd number of values');
  const blocks = text('numblocks');
  if (blocks !== undefined && parseDecimal(blocks, 'GNU.sparse.numblocks') * 2 !== nums.length) {
    throw new TarFormatError(`GNU sparse map has ${nums.length / 2} entries, numblocks says ${blocks}`);
  }
  return { version, fragments: toFragments(nums), size, name: name?.length ? name : undefined };
}

/**
 * The 1.0 map: decimal numbers, one per line (count, then offset/length
 * pairs), padded to whole blocks. `nextBlock` reads the entry's data.
 * Returns the map and how many bytes of data it took.
 */
export async function readSparseMap1(nextBlock: () => Promise<Buffer>): Promise<{ fragments: SparseFragment[]; bytes: number }> {
  const tokens: string[] = [];
  let partial = '';
  let bytes = 0;
  let want = 1;
  while (tokens.length < want) {
    if (bytes >= MAX_SPARSE_MAP_BYTES) throw new TarFormatError(`GNU sparse 1.0 map is larger than ${MAX_SPARSE_MAP_BYTES} bytes`);
    const blk = await nextBlock();
    bytes += BLOCK;
    const lines = (partial + blk.toString('latin1')).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      tokens.push(line);
      if (tokens.length === 1) want = 1 + 2 * parseDecimal(line, 'GNU sparse 1.0 map count');
      if (tokens.length >= want) break;
    }
  }
  const nums = tokens.slice(1, want).map((t) => parseDecimal(t, 'GNU sparse 1.0 map entry'));
  return { fragments: toFragments(nums), bytes };
}

/**
 * Old GNU: four entries in the header, then extension blocks of 21 while the
 * "isextended" byte is set. An entry whose offset field starts with NUL ends
 * a block's list (as GNU and BSD tar do).
 */
export async function readOldGnuSparse(h: TarHeader, nextBlock: () => Promise<Buffer>): Promise<{ fragments: SparseFragment[]; realSize: number }> {
  if (h.format !== 'gnu') throw new TarFormatError("sparse entry ('S') in a non-GNU header");
  const realSize = parseNumeric(h.block.subarray(483, 495));
  if (realSize === undefined) throw new TarFormatError('bad GNU sparse realsize field');
  const nums: number[] = [];
  let blk = h.block;
  let at = 386;
  let count = 4;
  let extFlagAt = 482;
  let extBlocks = 0;
  for (;;) {
    for (let i = 0; i < count; i++) {
      const e = at + i * 24;
      if (blk[e] === 0) break;
      const off = parseNumeric(blk.subarray(e, e + 12));
      const len = parseNumeric(blk.subarray(e + 12, e + 24));
      if (off === undefined || len === undefined) throw new TarFormatError('bad GNU sparse map entry');
      nums.push(off, len);
    }
    if (blk[extFlagAt] === 0) break;
    if (++extBlocks > MAX_SPARSE_MAP_BYTES / BLOCK) throw new TarFormatError(`GNU sparse map is larger than ${MAX_SPARSE_MAP_BYTES} bytes`);
    blk = await nextBlock();
    at = 0;
    count = 21;
    extFlagAt = 504;
  }
  return { fragments: toFragments(nums), realSize };
}

function toFragments(nums: readonly number[]): SparseFragment[] {
  const out: SparseFragment[] = [];
  for (let i = 0; i + 1 < nums.length; i += 2) out.push({ offset: nums[i] ?? 0, length: nums[i + 1] ?? 0 });
  return out;
}

/**
 * Checks fragments are in order, do not overlap and lie within `size` (the
 * checks of Go and BSD tar); returns how many stored bytes they describe.
 */
export function checkFragments(fragments: readonly SparseFragment[], size: number): number {
  let end = 0;
  let stored = 0;
  for (const f of fragments) {
    if (f.offset < end) throw new TarFormatError('GNU sparse map is out of order or overlaps');
    end = f.offset + f.length;
    if (end > size) throw new TarFormatError(`GNU sparse map reaches ${end}, past the file size ${size}`);
    stored += f.length;
  }
  return stored;
}

const ZEROS = Buffer.alloc(256 * 1024);

/** `n` zero bytes as slices of one shared buffer (callers must not write to them). */
export function* zeros(n: number): Generator<Buffer> {
  while (n > 0) {
    const k = Math.min(n, ZEROS.length);
    yield ZEROS.subarray(0, k);
    n -= k;
  }
}

/** Logical content: zeros, fragment, zeros, … up to `size`; `read(n)` yields n stored bytes. */
export async function* expandSparse(fragments: readonly SparseFragment[], size: number, read: (n: number) => AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let pos = 0;
  for (const f of fragments) {
    yield* zeros(f.offset - pos);
    if (f.length > 0) yield* read(f.length);
    pos = f.offset + f.length;
  }
  yield* zeros(size - pos);
}
