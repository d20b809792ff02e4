/**
 * metadata_csum checksums (ext4.md §11; linux fs/ext4/{super,inode,extents,
 * namei,xattr}.c). Each function computes the value that belongs in the
 * structure; the reader compares, a writer could store. `seed` is the
 * filesystem seed from `fsChecksumSeed`; inode-owned structures chain it
 * through `inodeChecksumSeed`.
 */
import { crc32cU32, crc32cUpdate } from './crc32c.js';

const ZERO4 = Buffer.alloc(4);

/** raw(~0, uuid), or s_checksum_seed when the metadata_csum_seed feature is set. */
export function fsChecksumSeed(uuid: Buffer, explicitSeed: number | undefined): number {
  return explicitSeed ?? crc32cUpdate(0xffffffff, uuid);
}

/** s_checksum: over the first 0x3FC bytes of the superblock, unseeded. */
export function superblockChecksum(sb: Buffer): number {
  return crc32cUpdate(0xffffffff, sb.subarray(0, 0x3fc));
}

/** bg_checksum (16 bits) of one descriptor of `descSize` bytes, with its checksum field taken as zero. */
export function groupDescChecksum(seed: number, group: number, desc: Buffer): number {
  let c = crc32cU32(seed, group);
  c = crc32cUpdate(c, desc.subarray(0, 0x1e));
  c = crc32cUpdate(c, ZERO4.subarray(0, 2));
  if (desc.length > 0x20) c = crc32cUpdate(c, desc.subarray(0x20));
  return c & 0xffff;
}

/** Per-inode seed: the fs seed chained through the inode number and i_generation. */
export function inodeChecksumSeed(seed: number, ino: number, generation: number): number {
  return crc32cU32(crc32cU32(seed, ino), generation);
}

/**
 * Inode checksum over the whole on-disk inode with i_checksum_lo (0x7C) and,
 * when the extra area holds it, i_checksum_hi (0x82) taken as zero. Returns
 * the full 32 bits when the hi half is stored, else the low 16 bits.
 */
export function inodeChecksum(inodeSeed: number, raw: Buffer): { value: number; bits: 16 | 32 } {
  const copy = Buffer.from(raw);
  copy.writeUInt16LE(0, 0x7c);
  const hasHi = raw.length > 128 && raw.readUInt16LE(0x80) >= 4;
  if (hasHi) copy.writeUInt16LE(0, 0x82);
  const c = crc32cUpdate(inodeSeed, copy);
  return hasHi ? { value: c >>> 0, bits: 32 } : { value: c & 0xffff, bits: 16 };
}

/** The checksum stored in an inode (lo, plus hi when present). */
export function storedInodeChecksum(raw: Buffer): number {
  const hasHi = raw.length > 128 && raw.readUInt16LE(0x80) >= 4;
  return (raw.readUInt16LE(0x7c) | (hasHi ? raw.readUInt16LE(0x82) << 16 : 0)) >>> 0;
}

/** Extent tree block tail: over the header and eh_max entry slots. */
export function extentBlockChecksum(inodeSeed: number, block: Buffer, ehMax: number): number {
  return crc32cUpdate(inodeSeed, block.subarray(0, 12 + 12 * ehMax));
}

/** Directory leaf tail (the fake entry in the last 12 bytes): over everything before it. */
export function dirLeafChecksum(inodeSeed: number, block: Buffer): number {
  return crc32cUpdate(inodeSeed, block.subarray(0, block.length - 12));
}

/**
 * htree node (dx_root or dx_node) checksum: over the block up to the used
 * dx_entries, then dx_tail.dt_reserved, then a zero checksum field.
 */
export function dxNodeChecksum(inodeSeed: number, block: Buffer, countOffset: number, count: number, tailOffset: number): number {
  let c = crc32cUpdate(inodeSeed, block.subarray(0, countOffset + 8 * count));
  c = crc32cUpdate(c, block.subarray(tailOffset, tailOffset + 4));
  return crc32cUpdate(c, ZERO4);
}

/** xattr block: seed chained through the u64 block number, then the block with h_checksum (0x10) zero. */
export function xattrBlockChecksum(seed: number, blockNr: number, block: Buffer): number {
  const nr = Buffer.alloc(8);
  nr.writeBigUInt64LE(BigInt(blockNr));
  const copy = Buffer.from(block);
  copy.writeUInt32LE(0, 0x10);
  return crc32cUpdate(crc32cUpdate(seed, nr), copy);
}
