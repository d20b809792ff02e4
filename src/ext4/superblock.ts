import { BLOCK_SIZE, EXT4_MAGIC } from './constants.js';

/** The superblock fields chunkyard writes or reads; everything else is zero. */
export interface Superblock {
  inodesCount: number;
  blocksCount: number;
  freeBlocksCount: number;
  freeInodesCount: number;
  firstDataBlock: number;
  logBlockSize: number;
  blocksPerGroup: number;
  inodesPerGroup: number;
  /** s_wtime, s_mkfs_time and s_lastcheck: deterministic, never the wall clock. */
  time: number;
  state: number;
  revLevel: number;
  firstIno: number;
  inodeSize: number;
  featureCompat: number;
  featureIncompat: number;
  featureRoCompat: number;
  uuid: Buffer; // 16 bytes
  volumeName: string;
  hashSeed: Buffer; // 16 bytes
  descSize: number;
  minExtraIsize: number;
  wantExtraIsize: number;
  logGroupsPerFlex: number;
}

export function encodeSuperblock(sb: Superblock): Buffer {
  const b = Buffer.alloc(1024);
  b.writeUInt32LE(sb.inodesCount, 0x00);
  b.writeUInt32LE(sb.blocksCount, 0x04);
  b.writeUInt32LE(0, 0x08); // reserved blocks
  b.writeUInt32LE(sb.freeBlocksCount, 0x0c);
  b.writeUInt32LE(sb.freeInodesCount, 0x10);
  b.writeUInt32LE(sb.firstDataBlock, 0x14);
  b.writeUInt32LE(sb.logBlockSize, 0x18);
  b.writeUInt32LE(sb.logBlockSize, 0x1c); // cluster size = block size (no bigalloc)
  b.writeUInt32LE(sb.blocksPerGroup, 0x20);
  b.writeUInt32LE(sb.blocksPerGroup, 0x24);
  b.writeUInt32LE(sb.inodesPerGroup, 0x28);
  b.writeUInt32LE(0, 0x2c); // s_mtime: never mounted
  b.writeUInt32LE(sb.time >>> 0, 0x30);
  b.writeUInt16LE(0, 0x34);
  b.writeUInt16LE(0xffff, 0x36); // s_max_mnt_count = -1: no count-based fsck
  b.writeUInt16LE(EXT4_MAGIC, 0x38);
  b.writeUInt16LE(sb.state, 0x3a);
  b.writeUInt16LE(1, 0x3c); // errors: continue
  b.writeUInt32LE(sb.time >>> 0, 0x40); // lastcheck
  b.writeUInt32LE(0, 0x48); // creator os: Linux
  b.writeUInt32LE(sb.revLevel, 0x4c);
  b.writeUInt32LE(sb.firstIno, 0x54);
  b.writeUInt16LE(sb.inodeSize, 0x58);
  b.writeUInt32LE(sb.featureCompat, 0x5c);
  b.writeUInt32LE(sb.featureIncompat, 0x60);
  b.writeUInt32LE(sb.featureRoCompat, 0x64);
  sb.uuid.copy(b, 0x68, 0, 16);
  b.write(sb.volumeName, 0x78, 16, 'utf8');
  sb.hashSeed.copy(b, 0xec, 0, 16);
  b.writeUInt8(1, 0xfc); // default hash: half_md4 (as mke2fs)
  b.writeUInt16LE(sb.descSize, 0xfe);
  b.writeUInt32LE(sb.time >>> 0, 0x108); // mkfs time
  b.writeUInt16LE(sb.minExtraIsize, 0x15c);
  b.writeUInt16LE(sb.wantExtraIsize, 0x15e);
  b.writeUInt8(sb.logGroupsPerFlex, 0x174);
  return b;
}

export function decodeSuperblock(b: Buffer): Superblock {
  if (b.length < 1024) throw new RangeError('Cannot decode superblock: need 1024 bytes');
  return {
    inodesCount: b.readUInt32LE(0x00),
    blocksCount: b.readUInt32LE(0x04) + (b.readUInt16LE(0xfe) >= 64 ? b.readUInt32LE(0x150) * 2 ** 32 : 0),
    freeBlocksCount: b.readUInt32LE(0x0c),
    freeInodesCount: b.readUInt32LE(0x10),
    firstDataBlock: b.readUInt32LE(0x14),
    logBlockSize: b.readUInt32LE(0x18),
    blocksPerGroup: b.readUInt32LE(0x20),
    inodesPerGroup: b.readUInt32LE(0x28),
    time: b.readUInt32LE(0x30),
    state: b.readUInt16LE(0x3a),
    revLevel: b.readUInt32LE(0x4c),
    firstIno: b.readUInt32LE(0x54),
    inodeSize: b.readUInt16LE(0x58),
    featureCompat: b.readUInt32LE(0x5c),
    featureIncompat: b.readUInt32LE(0x60),
    featureRoCompat: b.readUInt32LE(0x64),
    uuid: Buffer.from(b.subarray(0x68, 0x78)),
    volumeName: b.subarray(0x78, 0x88).toString('utf8').replace(/\0+$/, ''),
    hashSeed: Buffer.from(b.subarray(0xec, 0xfc)),
    descSize: b.readUInt16LE(0xfe),
    minExtraIsize: b.readUInt16LE(0x15c),
    wantExtraIsize: b.readUInt16LE(0x15e),
    logGroupsPerFlex: b.readUInt8(0x174),
  };
}

export function isExt4Magic(b: Buffer): boolean {
  return b.length >= 0x3a && b.readUInt16LE(0x38) === EXT4_MAGIC;
}

export const blockSizeOf = (sb: Superblock): number => 1024 << sb.logBlockSize;
export { BLOCK_SIZE };
