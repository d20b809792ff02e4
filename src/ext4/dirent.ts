import { BLOCK_SIZE } from './constants.js';

/** One directory entry: a name (bytes) that points at an inode. */
export interface DirEntry {
  readonly inode: number;
  readonly name: Buffer;
  /** FT_* from constants.ts */
  readonly fileType: number;
}

const HEADER = 8;
const recLenFor = (nameLen: number): number => (HEADER + nameLen + 3) & ~3;

/**
 * Packs entries into directory blocks in the given order ('.' and '..'
 * first). Each block's last entry stretches to the block end; an entry never
 * crosses a block. '.' gets rec_len 12 exactly, as e2fsck requires.
 */
export function encodeDirBlocks(entries: readonly DirEntry[]): Buffer[] {
  const blocks: Buffer[] = [];
  let block = Buffer.alloc(BLOCK_SIZE);
  let pos = 0;
  let lastOff = -1;
  const finish = (): void => {
    if (lastOff >= 0) block.writeUInt16LE(BLOCK_SIZE - lastOff, lastOff + 4);
    else encodeEmpty(block);
    blocks.push(block);
  };
  for (const e of entries) {
    if (e.name.length < 1 || e.name.length > 255) throw new RangeError(`Cannot encode dir entry: name length ${e.name.length}`);
    const len = recLenFor(e.name.length);
    if (pos + len > BLOCK_SIZE) {
      finish();
      block = Buffer.alloc(BLOCK_SIZE);
      pos = 0;
      lastOff = -1;
    }
    block.writeUInt32LE(e.inode, pos);
    block.writeUInt16LE(len, pos + 4);
    block.writeUInt8(e.name.length, pos + 6);
    block.writeUInt8(e.fileType, pos + 7);
    e.name.copy(block, pos + HEADER);
    lastOff = pos;
    pos += len;
  }
  finish();
  return blocks;
}

/** How many blocks encodeDirBlocks will produce, without building them (for layout planning). */
export function dirBlockCount(nameLengths: Iterable<number>): number {
  let blocks = 1;
  let pos = 0;
  for (const n of nameLengths) {
    const len = recLenFor(n);
    if (pos + len > BLOCK_SIZE) {
      blocks++;
      pos = 0;
    }
    pos += len;
  }
  return blocks;
}

/** An empty directory block: one unused entry spanning the block. */
export function encodeEmpty(block: Buffer): void {
  block.writeUInt32LE(0, 0);
  block.writeUInt16LE(BLOCK_SIZE, 4);
}

/** Decodes the live entries of one directory block. Throws RangeError on a corrupt block. */
export function decodeDirBlock(block: Buffer): DirEntry[] {
  const out: DirEntry[] = [];
  let pos = 0;
  while (pos < block.length) {
    if (pos + HEADER > block.length) throw new RangeError(`Cannot decode dir block: entry header at ${pos} runs past block`);
    const inode = block.readUInt32LE(pos);
    const recLen = block.readUInt16LE(pos + 4);
    const nameLen = block.readUInt8(pos + 6);
    const fileType = block.readUInt8(pos + 7);
    if (recLen < 12 || recLen % 4 !== 0 || pos + recLen > block.length || HEADER + nameLen > recLen) {
      throw new RangeError(`Cannot decode dir block: bad rec_len ${recLen} at ${pos}`);
    }
    // A checksum tail (inode 0, name_len 0, type 0xDE) and unused slots have inode 0.
    if (inode !== 0 && nameLen > 0) {
      out.push({ inode, fileType, name: Buffer.from(block.subarray(pos + HEADER, pos + HEADER + nameLen)) });
    }
    pos += recLen;
  }
  return out;
}
