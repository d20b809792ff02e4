import { BLOCKS_PER_GROUP, BLOCK_SIZE, GROUP_DESC_SIZE, INODES_PER_BLOCK } from './constants.js';

/** Filesystem geometry: how many groups, inodes per group, and where the group metadata sits. */
export interface Geometry {
  readonly totalBlocks: number;
  readonly groups: number;
  readonly inodesPerGroup: number;
  readonly gdtBlocks: number;
  /** First block of the block bitmaps (one per group), then inode bitmaps, then inode tables. */
  readonly blockBitmapsAt: number;
  readonly inodeBitmapsAt: number;
  readonly inodeTablesAt: number;
  readonly inodeTableBlocks: number; // per group
}

export interface GeometryInput {
  /** Block where group bitmaps and inode tables may start (after all other metadata). */
  readonly tablesStart: number;
  /** Highest inode number in use. */
  readonly inodesUsed: number;
  /** Extra free inodes to provide. */
  readonly spareInodes: number;
  /** Extra free blocks to provide after the metadata. */
  readonly spareBlocks: number;
  /** The image size is rounded up to this many blocks (a chunk). */
  readonly roundBlocks: number;
  /** GDT must fit in chunk 0 after the superblock block. */
  readonly maxGdtBlocks: number;
}

const roundUp = (n: number, m: number): number => Math.ceil(n / m) * m;

/**
 * Pure: the geometry for a given amount of metadata. Groups, inode table
 * size and total size depend on each other, so iterate until stable (it
 * converges in two or three rounds).
 */
export function planGeometry(input: GeometryInput): Geometry {
  const inodes = input.inodesUsed + input.spareInodes;
  let groups = Math.max(1, Math.ceil(inodes / BLOCKS_PER_GROUP));
  for (let round = 0; round < 64; round++) {
    // ipg: multiple of 16 so the table fills whole blocks, ≤ 8 × block size (bitmap width).
    const inodesPerGroup = Math.max(16, roundUp(Math.ceil(inodes / groups), 16));
    if (inodesPerGroup > BLOCKS_PER_GROUP) {
      groups = Math.ceil(inodes / BLOCKS_PER_GROUP);
      continue;
    }
    const inodeTableBlocks = inodesPerGroup / INODES_PER_BLOCK;
    const blockBitmapsAt = input.tablesStart;
    const inodeBitmapsAt = blockBitmapsAt + groups;
    const inodeTablesAt = inodeBitmapsAt + groups;
    const end = inodeTablesAt + groups * inodeTableBlocks + input.spareBlocks;
    // Every group must contain at least one block: pad the image if the inode count needs more groups.
    const totalBlocks = roundUp(Math.max(end, (groups - 1) * BLOCKS_PER_GROUP + 1), input.roundBlocks);
    const needGroups = Math.ceil(totalBlocks / BLOCKS_PER_GROUP);
    if (needGroups === groups) {
      const gdtBlocks = Math.ceil((groups * GROUP_DESC_SIZE) / BLOCK_SIZE);
      if (gdtBlocks > input.maxGdtBlocks) {
        throw new RangeError(`Cannot lay out ${groups} block groups: descriptors need ${gdtBlocks} blocks, chunk 0 holds ${input.maxGdtBlocks}; use a larger chunk size`);
      }
      return { totalBlocks, groups, inodesPerGroup, gdtBlocks, blockBitmapsAt, inodeBitmapsAt, inodeTablesAt, inodeTableBlocks };
    }
    groups = needGroups;
  }
  throw new Error('planGeometry did not converge');
}
