import { EXTRA_ISIZE, INODE_SIZE } from './constants.js';

/** An ext4 timestamp as seconds (signed, beyond 2038) and nanoseconds. */
export interface InodeTime {
  sec: number;
  nsec: number;
}

/** The fields of a 256-byte ext4 inode that chunkyard uses. */
export interface RawInode {
  /** Type and permission bits. */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  atime: InodeTime;
  ctime: InodeTime;
  mtime: InodeTime;
  crtime: InodeTime;
  linksCount: number;
  /** In 512-byte sectors. */
  blocks512: number;
  flags: number;
  /** The 60-byte i_block area: extent root, fast symlink text or device numbers. */
  iBlock: Buffer;
  fileAcl: number;
  /** In-inode xattr area (bytes 128+32 .. 256), all zero when unused. */
  inlineXattrs: Buffer;
}

export const INLINE_XATTR_OFFSET = 128 + EXTRA_ISIZE;
export const INLINE_XATTR_SIZE = INODE_SIZE - INLINE_XATTR_OFFSET;

/** Splits seconds into the 32-bit base field and the 2 epoch bits of *_extra (ext4.md §7). */
function encodeTime(t: InodeTime): { base: number; extra: number } {
  // 1901..2038, nearly every timestamp: epoch bits 0, no BigInt arithmetic (it showed in build profiles).
  if (t.sec >= -0x8000_0000 && t.sec <= 0x7fff_ffff) return { base: t.sec >>> 0, extra: (t.nsec << 2) >>> 0 };
  const base = Number(BigInt.asIntN(32, BigInt(t.sec)));
  const epoch = Number((BigInt(t.sec) - BigInt(base)) >> 32n) & 3;
  return { base: base >>> 0, extra: (epoch | (t.nsec << 2)) >>> 0 };
}

function decodeTime(base: number, extra: number): InodeTime {
  const signed = base | 0;
  return { sec: signed + (extra & 3) * 2 ** 32, nsec: extra >>> 2 };
}

export function encodeInode(ino: RawInode, out: Buffer, offset: number): void {
  const b = out.subarray(offset, offset + INODE_SIZE);
  b.fill(0);
  b.writeUInt16LE(ino.mode, 0x00);
  b.writeUInt16LE(ino.uid & 0xffff, 0x02);
  b.writeUInt32LE(ino.size % 2 ** 32, 0x04);
  const a = encodeTime(ino.atime);
  const c = encodeTime(ino.ctime);
  const m = encodeTime(ino.mtime);
  const cr = encodeTime(ino.crtime);
  b.writeUInt32LE(a.base, 0x08);
  b.writeUInt32LE(c.base, 0x0c);
  b.writeUInt32LE(m.base, 0x10);
  b.writeUInt16LE(ino.gid & 0xffff, 0x18);
  b.writeUInt16LE(ino.linksCount, 0x1a);
  b.writeUInt32LE(ino.blocks512 % 2 ** 32, 0x1c);
  b.writeUInt32LE(ino.flags, 0x20);
  ino.iBlock.copy(b, 0x28, 0, 60);
  b.writeUInt32LE(ino.fileAcl, 0x68);
  b.writeUInt32LE(Math.floor(ino.size / 2 ** 32), 0x6c);
  b.writeUInt16LE(Math.floor(ino.blocks512 / 2 ** 32), 0x74);
  b.writeUInt16LE(ino.uid >>> 16, 0x78);
  b.writeUInt16LE(ino.gid >>> 16, 0x7a);
  b.writeUInt16LE(EXTRA_ISIZE, 0x80);
  b.writeUInt32LE(c.extra, 0x84);
  b.writeUInt32LE(m.extra, 0x88);
  b.writeUInt32LE(a.extra, 0x8c);
  b.writeUInt32LE(cr.base, 0x90);
  b.writeUInt32LE(cr.extra, 0x94);
  ino.inlineXattrs.copy(b, INLINE_XATTR_OFFSET, 0, INLINE_XATTR_SIZE);
}

export function decodeInode(b: Buffer, offset: number, inodeSize = INODE_SIZE): RawInode {
  const v = b.subarray(offset, offset + inodeSize);
  const extraIsize = inodeSize > 128 ? v.readUInt16LE(0x80) : 0;
  const has = (field: number): boolean => extraIsize >= field + 4 - 128;
  const extra = (off: number): number => (has(off) ? v.readUInt32LE(off) : 0);
  const xattrStart = 128 + extraIsize;
  return {
    mode: v.readUInt16LE(0x00),
    uid: (v.readUInt16LE(0x02) | (v.readUInt16LE(0x78) << 16)) >>> 0,
    gid: (v.readUInt16LE(0x18) | (v.readUInt16LE(0x7a) << 16)) >>> 0,
    size: v.readUInt32LE(0x04) + v.readUInt32LE(0x6c) * 2 ** 32,
    atime: decodeTime(v.readUInt32LE(0x08), extra(0x8c)),
    ctime: decodeTime(v.readUInt32LE(0x0c), extra(0x84)),
    mtime: decodeTime(v.readUInt32LE(0x10), extra(0x88)),
    crtime: has(0x94) ? decodeTime(v.readUInt32LE(0x90), v.readUInt32LE(0x94)) : { sec: 0, nsec: 0 },
    linksCount: v.readUInt16LE(0x1a),
    blocks512: v.readUInt32LE(0x1c) + v.readUInt16LE(0x74) * 2 ** 32,
    flags: v.readUInt32LE(0x20),
    iBlock: Buffer.from(v.subarray(0x28, 0x28 + 60)),
    fileAcl: v.readUInt32LE(0x68) + v.readUInt16LE(0x76) * 2 ** 32,
    inlineXattrs: Buffer.from(v.subarray(Math.min(xattrStart, inodeSize), inodeSize)),
  };
}
