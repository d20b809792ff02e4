import { GROUP_DESC_SIZE } from './constants.js';

export interface GroupDesc {
  blockBitmap: number;
  inodeBitmap: number;
  inodeTable: number;
  freeBlocks: number;
  freeInodes: number;
  usedDirs: number;
  /** 0x4 ITABLE_ZEROED: every inode table is written in full. */
  flags: number;
}

export const BG_INODE_ZEROED = 0x4;

export function encodeGroupDesc(gd: GroupDesc, out: Buffer, offset: number): void {
  out.writeUInt32LE(gd.blockBitmap, offset + 0x00);
  out.writeUInt32LE(gd.inodeBitmap, offset + 0x04);
  out.writeUInt32LE(gd.inodeTable, offset + 0x08);
  out.writeUInt16LE(gd.freeBlocks, offset + 0x0c);
  out.writeUInt16LE(gd.freeInodes, offset + 0x0e);
  out.writeUInt16LE(gd.usedDirs, offset + 0x10);
  out.writeUInt16LE(gd.flags, offset + 0x12);
}

export function decodeGroupDesc(b: Buffer, offset: number, descSize = GROUP_DESC_SIZE): GroupDesc {
  const wide = descSize >= 64;
  const hi32 = (off: number): number => (wide ? b.readUInt32LE(offset + off) * 2 ** 32 : 0);
  const hi16 = (off: number): number => (wide ? b.readUInt16LE(offset + off) * 65536 : 0);
  return {
    blockBitmap: b.readUInt32LE(offset + 0x00) + hi32(0x20),
    inodeBitmap: b.readUInt32LE(offset + 0x04) + hi32(0x24),
    inodeTable: b.readUInt32LE(offset + 0x08) + hi32(0x28),
    freeBlocks: b.readUInt16LE(offset + 0x0c) + hi16(0x2c),
    freeInodes: b.readUInt16LE(offset + 0x0e) + hi16(0x2e),
    usedDirs: b.readUInt16LE(offset + 0x10) + hi16(0x30),
    flags: b.readUInt16LE(offset + 0x12),
  };
}
