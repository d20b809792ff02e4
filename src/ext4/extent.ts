import { BLOCK_SIZE } from './constants.js';

/** A run of file blocks: logical block `logical` .. +len maps to physical `physical` .. +len. */
export interface Extent {
  readonly logical: number;
  readonly physical: number;
  readonly length: number;
}

export const EXTENT_MAGIC = 0xf30a;
/** Initialised extents hold at most 32768 blocks; longer lengths mean "unwritten". */
export const MAX_EXTENT_LEN = 32768;
const ROOT_MAX = 4;
const NODE_MAX = Math.floor((BLOCK_SIZE - 12) / 12); // 340

/** How many tree blocks (outside the inode) an extent list needs. Pure; the layout plans with it. */
export function extentTreeBlocks(extentCount: number): number {
  let total = 0;
  let n = extentCount;
  while (n > ROOT_MAX) {
    n = Math.ceil(n / NODE_MAX);
    total += n;
  }
  return total;
}

function header(b: Buffer, off: number, entries: number, max: number, depth: number): void {
  b.writeUInt16LE(EXTENT_MAGIC, off);
  b.writeUInt16LE(entries, off + 2);
  b.writeUInt16LE(max, off + 4);
  b.writeUInt16LE(depth, off + 6);
  b.writeUInt32LE(0, off + 8);
}

function leafEntry(b: Buffer, off: number, e: Extent): void {
  b.writeUInt32LE(e.logical, off);
  b.writeUInt16LE(e.length, off + 4);
  b.writeUInt16LE(Math.floor(e.physical / 2 ** 32), off + 6);
  b.writeUInt32LE(e.physical % 2 ** 32, off + 8);
}

function indexEntry(b: Buffer, off: number, logical: number, child: number): void {
  b.writeUInt32LE(logical, off);
  b.writeUInt32LE(child % 2 ** 32, off + 4);
  b.writeUInt16LE(Math.floor(child / 2 ** 32), off + 8);
  b.writeUInt16LE(0, off + 10);
}

export interface EncodedExtentTree {
  /** The 60-byte i_block content. */
  readonly root: Buffer;
  /** Tree blocks to write, with the physical block each goes to. */
  readonly blocks: readonly { readonly at: number; readonly data: Buffer }[];
}

/**
 * Builds the extent tree for sorted, non-overlapping extents, each ≤ 32768
 * blocks. Non-root levels are packed full left to right, which is the shape
 * e2fsck accepts without "could be narrower/shorter" complaints (ext4.md §8).
 * `treeBlocks` must hold exactly extentTreeBlocks(extents.length) block numbers.
 */
export function encodeExtentTree(extents: readonly Extent[], treeBlocks: readonly number[]): EncodedExtentTree {
  if (treeBlocks.length !== extentTreeBlocks(extents.length)) {
    throw new RangeError(`Cannot encode extent tree: need ${extentTreeBlocks(extents.length)} tree blocks, got ${treeBlocks.length}`);
  }
  // Zeroed, but from node's buffer pool: one of these per inode, and a fresh ArrayBuffer each showed in build profiles.
  const root = Buffer.allocUnsafe(60).fill(0);
  if (extents.length <= ROOT_MAX) {
    // The usual case: the extents fit in the inode, no tree blocks.
    header(root, 0, extents.length, ROOT_MAX, 0);
    extents.forEach((e, j) => leafEntry(root, 12 + 12 * j, e));
    return { root, blocks: [] };
  }
  const out: { at: number; data: Buffer }[] = [];
  // Current level: entries as (first logical block, writer into a node).
  type Item = { logical: number; write: (b: Buffer, off: number) => void };
  let items: Item[] = extents.map((e) => ({ logical: e.logical, write: (b, off) => leafEntry(b, off, e) }));
  let depth = 0;
  let next = 0;
  while (items.length > ROOT_MAX) {
    const parents: Item[] = [];
    for (let i = 0; i < items.length; i += NODE_MAX) {
      const group = items.slice(i, i + NODE_MAX);
      const at = treeBlocks[next++]!;
      const data = Buffer.alloc(BLOCK_SIZE);
      header(data, 0, group.length, NODE_MAX, depth);
      group.forEach((it, j) => it.write(data, 12 + 12 * j));
      out.push({ at, data });
      const first = group[0]!.logical;
      parents.push({ logical: first, write: (b, off) => indexEntry(b, off, first, at) });
    }
    items = parents;
    depth++;
  }
  header(root, 0, items.length, ROOT_MAX, depth);
  items.forEach((it, j) => it.write(root, 12 + 12 * j));
  return { root, blocks: out };
}

export type ExtentNode =
  | { readonly depth: 0; readonly extents: readonly Extent[] }
  | { readonly depth: number; readonly children: readonly { readonly logical: number; readonly block: number }[] };

/** Decodes an extent node (the inode's i_block or a tree block). Throws RangeError if malformed. */
export function decodeExtentNode(b: Buffer): ExtentNode {
  if (b.length < 12 || b.readUInt16LE(0) !== EXTENT_MAGIC) throw new RangeError('Cannot decode extent node: bad magic');
  const entries = b.readUInt16LE(2);
  const max = b.readUInt16LE(4);
  const depth = b.readUInt16LE(6);
  if (entries > max || 12 + 12 * max > b.length) throw new RangeError('Cannot decode extent node: bad entry count');
  if (depth === 0) {
    const extents: Extent[] = [];
    for (let i = 0; i < entries; i++) {
      const off = 12 + 12 * i;
      let length = b.readUInt16LE(off + 4);
      // Unwritten extents (len > 32768) read as zeros; we treat them as holes by dropping them.
      if (length > MAX_EXTENT_LEN) continue;
      extents.push({
        logical: b.readUInt32LE(off),
        length,
        physical: b.readUInt16LE(off + 6) * 2 ** 32 + b.readUInt32LE(off + 8),
      });
    }
    return { depth: 0, extents };
  }
  const children: { logical: number; block: number }[] = [];
  for (let i = 0; i < entries; i++) {
    const off = 12 + 12 * i;
    children.push({ logical: b.readUInt32LE(off), block: b.readUInt16LE(off + 8) * 2 ** 32 + b.readUInt32LE(off + 4) });
  }
  return { depth, children };
}
