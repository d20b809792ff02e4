/**
 * One 512-byte tar header block, decoded (oci.md §7). Pure: no I/O.
 *
 * The rules follow Go's archive/tar (which umoci, containerd and moby read
 * layers with) where formats disagree: octal fields are trimmed of spaces and
 * NULs on both sides, base-256 fields are big-endian two's complement, the
 * checksum may be the signed or the unsigned byte sum, and a GNU header's
 * atime/ctime area is read as a USTAR prefix when it does not parse (old Go
 * writers put one there).
 */

export const BLOCK = 512;

export type TarFormat = 'ustar' | 'star' | 'gnu' | 'v7';

export interface TarHeader {
  /** Byte offset of this header in the tar stream (for messages). */
  readonly offset: number;
  readonly format: TarFormat;
  /** One character; NUL stays '\0'. */
  readonly typeflag: string;
  /** Raw name bytes; for USTAR/STAR the prefix is joined with '/'. */
  readonly name: Buffer;
  readonly linkname: Buffer;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Size field: bytes of data that follow (rounded up to blocks). */
  readonly size: number;
  /** Seconds; may be negative (base-256). */
  readonly mtime: number;
  /** The raw block, for fields only some entry types use (devices, GNU sparse). */
  readonly block: Buffer;
}

/** Thrown for a malformed header; the reader adds which entry/offset it was. */
export class TarFormatError extends Error {}

export function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** Decodes a non-zero header block. Throws TarFormatError on a bad checksum or number. */
export function decodeHeader(block: Buffer, offset: number): TarHeader {
  if (block.length !== BLOCK) throw new TarFormatError(`header block is ${block.length} bytes`);
  checkChecksum(block);
  const format = formatOf(block);
  let name = cstring(block, 0, 100);
  let prefix: Buffer | undefined;
  if (format === 'ustar') prefix = cstring(block, 345, 155);
  else if (format === 'star') prefix = cstring(block, 345, 131);
  else if (format === 'gnu' && block[345] !== 0) {
    // Go ≤1.7 wrote a USTAR prefix into a GNU header's atime/ctime area.
    const bad = parseNumeric(block.subarray(345, 357)) === undefined || (block[357] !== 0 && parseNumeric(block.subarray(357, 369)) === undefined);
    const p = cstring(block, 345, 155);
    if (bad && p.every((c) => c < 0x80)) prefix = p;
  }
  if (prefix !== undefined && prefix.length > 0) name = Buffer.concat([prefix, Buffer.from('/'), name]);
  return {
    offset,
    format,
    typeflag: String.fromCharCode(block[156] ?? 0),
    name,
    linkname: cstring(block, 157, 100),
    mode: numberField(block, 100, 8, 'mode'),
    uid: numberField(block, 108, 8, 'uid'),
    gid: numberField(block, 116, 8, 'gid'),
    size: numberField(block, 124, 12, 'size'),
    mtime: numberField(block, 136, 12, 'mtime'),
    block,
  };
}

/** Device numbers live in USTAR/GNU headers only; read them just for device entries. */
export function deviceNumbers(h: TarHeader): { major: number; minor: number } {
  if (h.format === 'v7') return { major: 0, minor: 0 };
  return { major: numberField(h.block, 329, 8, 'devmajor'), minor: numberField(h.block, 337, 8, 'devminor') };
}

export function numberField(block: Buffer, at: number, len: number, what: string): number {
  const v = parseNumeric(block.subarray(at, at + len));
  if (v === undefined) throw new TarFormatError(`bad ${what} field ${JSON.stringify(block.toString('latin1', at, at + len))}`);
  return v;
}

/**
 * ASCII octal (trimmed of spaces and NULs) or, when the first byte has bit
 * 0x80 set, base-256 two's complement. undefined when malformed or beyond
 * what a JS number holds exactly.
 */
export function parseNumeric(field: Buffer): number | undefined {
  if (field.length > 0 && ((field[0] ?? 0) & 0x80) !== 0) {
    const negative = ((field[0] ?? 0) & 0x40) !== 0;
    let x = 0n;
    for (let i = 0; i < field.length; i++) {
      let c = field[i] ?? 0;
      if (negative) c ^= 0xff;
      if (i === 0) c &= 0x7f;
      x = (x << 8n) | BigInt(c);
    }
    const v = negative ? -x - 1n : x; // ^x in two's complement
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) return undefined;
    return Number(v);
  }
  let s = 0;
  let e = field.length;
  while (s < e && (field[s] === 0x20 || field[s] === 0)) s++;
  while (e > s && (field[e - 1] === 0x20 || field[e - 1] === 0)) e--;
  if (s === e) return 0;
  let v = 0;
  for (let i = s; i < e; i++) {
    const d = (field[i] ?? 0) - 0x30;
    if (d < 0 || d > 7) return undefined;
    v = v * 8 + d;
  }
  return Number.isSafeInteger(v) ? v : undefined;
}

function checkChecksum(block: Buffer): void {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : (block[i] ?? 0);
    unsigned += c;
    signed += c < 0x80 ? c : c - 0x100;
  }
  const stored = parseNumeric(block.subarray(148, 156));
  if (stored === undefined || (stored !== unsigned && stored !== signed)) {
    throw new TarFormatError('bad header checksum (not a tar stream, or corrupt)');
  }
}

function formatOf(block: Buffer): TarFormat {
  const magic = block.toString('latin1', 257, 263);
  if (magic === 'ustar\0') return block.toString('latin1', 508, 512) === 'tar\0' ? 'star' : 'ustar';
  if (magic === 'ustar ' && block.toString('latin1', 263, 265) === ' \0') return 'gnu';
  return 'v7';
}

/** The bytes of a NUL-terminated field (a copy: headers are not kept alive). */
export function cstring(block: Buffer, at: number, len: number): Buffer {
  const field = block.subarray(at, at + len);
  const nul = field.indexOf(0);
  return Buffer.from(nul < 0 ? field : field.subarray(0, nul));
}
