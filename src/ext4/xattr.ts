import { BLOCK_SIZE } from './constants.js';
import { INLINE_XATTR_SIZE } from './inode.js';

/** ext4 stores a name as (prefix index, suffix); the longest matching prefix wins (ext4.md §12). */
const PREFIXES: readonly (readonly [number, string])[] = [
  [2, 'system.posix_acl_access'],
  [3, 'system.posix_acl_default'],
  [8, 'system.richacl'],
  [1, 'user.'],
  [4, 'trusted.'],
  [6, 'security.'],
  [7, 'system.'],
  [10, 'gnu.'],
];
const PREFIX_BY_INDEX = new Map<number, string>(PREFIXES.map(([i, p]) => [i, p]));

export const XATTR_MAGIC = 0xea020000;
const ENTRY_HEADER = 16;
const BLOCK_HEADER = 32;

interface Split {
  readonly index: number;
  readonly suffix: Buffer;
  readonly value: Buffer;
}

function split(name: string, value: Buffer): Split {
  for (const [index, prefix] of PREFIXES) {
    if (name.startsWith(prefix)) {
      return { index, suffix: Buffer.from(name.slice(prefix.length), 'utf8'), value: toDiskValue(index, value) };
    }
  }
  return { index: 0, suffix: Buffer.from(name, 'utf8'), value };
}

const pad4 = (n: number): number => (n + 3) & ~3;
const entrySize = (s: Split): number => pad4(ENTRY_HEADER + s.suffix.length);

/** e2fsprogs' entry hash (unsigned-char variant). */
function entryHash(s: Split): number {
  let h = 0;
  for (const c of s.suffix) h = ((h << 5) ^ (h >>> 27) ^ c) >>> 0;
  const padded = Buffer.alloc(pad4(s.value.length));
  s.value.copy(padded);
  for (let i = 0; i < padded.length; i += 4) h = ((h << 16) ^ (h >>> 16) ^ padded.readUInt32LE(i)) >>> 0;
  return h;
}

function sortSplits(list: Split[]): Split[] {
  return list.sort((a, b) => a.index - b.index || a.suffix.length - b.suffix.length || Buffer.compare(a.suffix, b.suffix));
}

/**
 * Lays out entries then values (values packed from `end` downward) into `area`.
 * Value offsets are relative to `base`. Returns false if they do not fit.
 */
function pack(area: Buffer, entriesAt: number, base: number, end: number, list: readonly Split[]): boolean {
  let pos = entriesAt;
  let valueEnd = end;
  for (const s of list) {
    const size = entrySize(s);
    valueEnd -= pad4(s.value.length);
    if (pos + size + 4 > valueEnd) return false; // +4: the terminating zero word
    area.writeUInt8(s.suffix.length, pos);
    area.writeUInt8(s.index, pos + 1);
    area.writeUInt16LE(s.value.length === 0 ? 0 : valueEnd - base, pos + 2);
    area.writeUInt32LE(0, pos + 4); // e_value_inum
    area.writeUInt32LE(s.value.length, pos + 8);
    area.writeUInt32LE(entryHash(s), pos + 12);
    s.suffix.copy(area, pos + ENTRY_HEADER);
    s.value.copy(area, valueEnd);
    pos += size;
  }
  return true;
}

export type XattrPlacement =
  | { readonly where: 'none' }
  | { readonly where: 'inode'; readonly area: Buffer }
  | { readonly where: 'block'; readonly block: Buffer };

/**
 * Decides where an inode's xattrs go: all inside the inode if they fit, else
 * all in one xattr block (refcount filled in by the caller). Throws RangeError
 * when they don't fit a block (ea_inode is not supported).
 */
export function placeXattrs(xattrs: ReadonlyMap<string, Buffer>): XattrPlacement {
  if (xattrs.size === 0) return { where: 'none' };
  const list = sortSplits([...xattrs].map(([n, v]) => split(n, v)));
  const area = Buffer.alloc(INLINE_XATTR_SIZE);
  area.writeUInt32LE(XATTR_MAGIC, 0);
  if (pack(area, 4, 4, INLINE_XATTR_SIZE, list)) return { where: 'inode', area };
  const block = Buffer.alloc(BLOCK_SIZE);
  if (!pack(block, BLOCK_HEADER, 0, BLOCK_SIZE, list)) {
    const total = list.reduce((n, s) => n + entrySize(s) + pad4(s.value.length), 0);
    throw new RangeError(`Cannot store extended attributes: ${total} bytes exceed one ${BLOCK_SIZE}-byte xattr block`);
  }
  block.writeUInt32LE(XATTR_MAGIC, 0);
  block.writeUInt32LE(1, 4); // refcount, set by setXattrBlockRefcount
  block.writeUInt32LE(1, 8); // h_blocks
  let h = 0;
  for (const s of list) {
    const eh = entryHash(s);
    if (eh === 0) {
      h = 0;
      break;
    }
    h = ((h << 16) ^ (h >>> 16) ^ eh) >>> 0;
  }
  block.writeUInt32LE(h, 12);
  return { where: 'block', block };
}

export function setXattrBlockRefcount(block: Buffer, refcount: number): void {
  block.writeUInt32LE(refcount, 4);
}

function unpack(area: Buffer, entriesAt: number, base: number): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let pos = entriesAt;
  while (pos + 4 <= area.length && area.readUInt32LE(pos) !== 0) {
    if (pos + ENTRY_HEADER > area.length) throw new RangeError('Cannot decode xattrs: entry runs past area');
    const nameLen = area.readUInt8(pos);
    const index = area.readUInt8(pos + 1);
    const valueOff = area.readUInt16LE(pos + 2);
    const valueSize = area.readUInt32LE(pos + 8);
    if (pos + ENTRY_HEADER + nameLen > area.length) throw new RangeError('Cannot decode xattrs: name runs past area');
    // A value kept in a separate inode (ea_inode) is not in this area; reading it here would return garbage.
    if (area.readUInt32LE(pos + 4) !== 0) throw new RangeError('Cannot decode xattrs: value stored in an EA inode (ea_inode) is not supported');
    const suffix = area.subarray(pos + ENTRY_HEADER, pos + ENTRY_HEADER + nameLen).toString('utf8');
    const start = base + valueOff;
    if (start + valueSize > area.length) throw new RangeError('Cannot decode xattrs: value runs past area');
    const prefix = index === 0 ? '' : PREFIX_BY_INDEX.get(index);
    if (prefix !== undefined) {
      out.set(prefix + suffix, fromDiskValue(index, Buffer.from(area.subarray(start, start + valueSize))));
    }
    pos += pad4(ENTRY_HEADER + nameLen);
  }
  return out;
}

/** Decodes the in-inode xattr area (bytes after i_extra_isize). */
export function decodeInlineXattrs(area: Buffer): Map<string, Buffer> {
  if (area.length < 4 || area.readUInt32LE(0) !== XATTR_MAGIC) return new Map();
  return unpack(area, 4, 4);
}

export function decodeXattrBlock(block: Buffer): Map<string, Buffer> {
  if (block.readUInt32LE(0) !== XATTR_MAGIC) throw new RangeError('Cannot decode xattr block: bad magic');
  return unpack(block, BLOCK_HEADER, 0);
}

// POSIX ACLs: the VFS/tar form is {u32 version 2, {u16 tag, u16 perm, u32 id}...};
// ext4 stores {u32 version 1, then 4-byte {tag, perm} for the *_OBJ/MASK/OTHER
// tags and 8-byte {tag, perm, id} for named USER/GROUP}.
const ACL_USER = 0x02;
const ACL_GROUP = 0x08;
const isAcl = (index: number): boolean => index === 2 || index === 3;

function toDiskValue(index: number, v: Buffer): Buffer {
  if (!isAcl(index) || v.length < 4 || (v.length - 4) % 8 !== 0 || v.readUInt32LE(0) !== 2) return v;
  const parts: Buffer[] = [Buffer.from([1, 0, 0, 0])];
  for (let off = 4; off < v.length; off += 8) {
    const tag = v.readUInt16LE(off);
    const named = tag === ACL_USER || tag === ACL_GROUP;
    const e = Buffer.alloc(named ? 8 : 4);
    e.writeUInt16LE(tag, 0);
    e.writeUInt16LE(v.readUInt16LE(off + 2), 2);
    if (named) e.writeUInt32LE(v.readUInt32LE(off + 4), 4);
    parts.push(e);
  }
  return Buffer.concat(parts);
}

function fromDiskValue(index: number, v: Buffer): Buffer {
  if (!isAcl(index) || v.length < 4 || v.readUInt32LE(0) !== 1) return v;
  const parts: Buffer[] = [Buffer.from([2, 0, 0, 0])];
  for (let off = 4; off + 4 <= v.length; ) {
    const tag = v.readUInt16LE(off);
    const named = tag === ACL_USER || tag === ACL_GROUP;
    const e = Buffer.alloc(8);
    e.writeUInt16LE(tag, 0);
    e.writeUInt16LE(v.readUInt16LE(off + 2), 2);
    e.writeUInt32LE(named ? v.readUInt32LE(off + 4) : 0xffffffff, 4);
    parts.push(e);
    off += named ? 8 : 4;
  }
  return Buffer.concat(parts);
}
