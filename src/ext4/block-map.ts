/**
 * Where an inode's blocks are: extent trees (any depth) and ext2/3 block
 * maps, walked lazily from a logical block on, with every entry checked
 * (order, overlap, bounds, depth, checksum) and every tree block visited at
 * most once, so a corrupt or hostile image can neither mislead nor loop.
 */
import { throwIfAborted, type InputError, type IntegrityError } from '../errors.js';
import { extentBlockChecksum } from './checksums.js';
import { EXT4_EXTENTS_FL } from './constants.js';
import { EXTENT_MAGIC, MAX_EXTENT_LEN, type Extent } from './extent.js';

const MAX_EXTENT_DEPTH = 5;

/** What the walkers need from the reader. */
export interface MapContext {
  readonly blockSize: number;
  /** Check metadata_csum extent block tails. */
  readonly verify: boolean;
  /** A metadata block (the reader caches these). */
  block(nr: number, signal?: AbortSignal): Promise<Buffer>;
  /** Throws unless blocks [start, start+count) lie inside the filesystem, past the superblock. */
  checkBlocks(ino: number, start: number, count: number, what: string): void;
  input(msg: string): InputError;
  integrity(msg: string): IntegrityError;
}

/** The parts of an inode that locate its blocks. */
export interface MappedInode {
  readonly ino: number;
  readonly flags: number;
  /** The 60-byte i_block: extent root or block pointers. */
  readonly iBlock: Buffer;
  readonly size: number;
  /** Per-inode checksum seed (extent block tails). */
  readonly csumSeed: number;
}

/**
 * Mapped runs of `node` from logical block `from` on, in logical order (a
 * run that starts before `from` but reaches past it is included): initialised
 * extents as stored (unwritten ones read as zeros and are left out), or runs
 * of contiguous blocks of a block map. Subtrees wholly before `from` are not read.
 */
export function inodeRuns(ctx: MapContext, node: MappedInode, from: number, signal?: AbortSignal): AsyncGenerator<Extent> {
  if ((node.flags & EXT4_EXTENTS_FL) !== 0) return extentNode(ctx, node, node.iBlock, 'root', undefined, 0, 2 ** 32, from, new Set(), signal);
  return blockMap(ctx, node, from, signal);
}

async function* extentNode(
  ctx: MapContext, node: MappedInode, buf: Buffer, where: string, expectDepth: number | undefined,
  lo: number, hi: number, from: number, visited: Set<number>, signal?: AbortSignal,
): AsyncGenerator<Extent> {
  const bad = (msg: string): InputError => ctx.input(`inode ${node.ino}: extent ${where}: ${msg}`);
  if (buf.readUInt16LE(0) !== EXTENT_MAGIC) throw bad(`bad magic 0x${buf.readUInt16LE(0).toString(16)}`);
  const entries = buf.readUInt16LE(2);
  const max = buf.readUInt16LE(4);
  const depth = buf.readUInt16LE(6);
  const room = Math.floor((buf.length - 12) / 12);
  if (max > room || entries > max) throw bad(`${entries} entries, max ${max}, room for ${room}`);
  if (expectDepth === undefined ? depth > MAX_EXTENT_DEPTH : depth !== expectDepth) {
    throw bad(`depth ${depth}${expectDepth === undefined ? ` exceeds ${MAX_EXTENT_DEPTH}` : `, expected ${expectDepth}`}`);
  }
  if (expectDepth !== undefined && ctx.verify) {
    if (12 + 12 * max + 4 > buf.length) throw bad('no room for the checksum tail');
    const want = extentBlockChecksum(node.csumSeed, buf, max);
    const got = buf.readUInt32LE(12 + 12 * max);
    if (want !== got) throw ctx.integrity(`inode ${node.ino}: extent ${where}: checksum mismatch (stored 0x${hex(got)}, computed 0x${hex(want)})`);
  }
  if (depth === 0) {
    let prevEnd = lo;
    for (let i = 0; i < entries; i++) {
      const off = 12 + 12 * i;
      const logical = buf.readUInt32LE(off);
      const rawLen = buf.readUInt16LE(off + 4);
      const physical = buf.readUInt16LE(off + 6) * 2 ** 32 + buf.readUInt32LE(off + 8);
      const unwritten = rawLen > MAX_EXTENT_LEN;
      const length = unwritten ? rawLen - MAX_EXTENT_LEN : rawLen;
      if (length === 0) throw bad(`entry ${i} has length 0`);
      if (logical < prevEnd) throw bad(`entry ${i} (logical block ${logical}) overlaps or is out of order`);
      if (logical + length > hi) throw bad(`entry ${i} (logical ${logical}+${length}) runs past its index range, which ends at ${hi}`);
      ctx.checkBlocks(node.ino, physical, length, `extent ${where} entry ${i}`);
      prevEnd = logical + length;
      if (unwritten || logical + length <= from) continue;
      yield { logical, physical, length };
    }
    return;
  }
  for (let i = 0; i < entries; i++) {
    const off = 12 + 12 * i;
    const logical = buf.readUInt32LE(off);
    const child = buf.readUInt16LE(off + 8) * 2 ** 32 + buf.readUInt32LE(off + 4);
    const next = i + 1 < entries ? buf.readUInt32LE(off + 12) : hi;
    if (logical < lo || logical >= next) throw bad(`index ${i} (logical block ${logical}) is out of order`);
    if (next <= from) continue; // the whole subtree lies before the asked-for range
    ctx.checkBlocks(node.ino, child, 1, `extent ${where} index ${i}`);
    if (visited.has(child)) throw bad(`index ${i} points to block ${child} a second time (cycle)`);
    visited.add(child);
    throwIfAborted(signal);
    const block = await ctx.block(child, signal);
    yield* extentNode(ctx, node, block, `block ${child}`, depth - 1, logical, next, from, visited, signal);
  }
}

/** ext2/3 block maps: 12 direct pointers, then single, double and triple indirect blocks. */
async function* blockMap(ctx: MapContext, node: MappedInode, from: number, signal?: AbortSignal): AsyncGenerator<Extent> {
  const bs = ctx.blockSize;
  const per = bs / 4;
  const nblocks = Math.ceil(node.size / bs);
  if (nblocks > 12 + per + per ** 2 + per ** 3) throw ctx.input(`inode ${node.ino}: size ${node.size} is too big for a block map`);
  const visited = new Set<number>();
  let run: { logical: number; physical: number; length: number } | undefined;
  for await (const [l, p] of mapped(ctx, node, nblocks, from, visited, signal)) {
    if (run !== undefined && l === run.logical + run.length && p === run.physical + run.length) {
      run.length++;
      continue;
    }
    if (run !== undefined) yield run;
    run = { logical: l, physical: p, length: 1 };
  }
  if (run !== undefined) yield run;
}

/** Mapped [logical, physical] blocks of a block map, one at a time. */
async function* mapped(
  ctx: MapContext, node: MappedInode, nblocks: number, from: number, visited: Set<number>, signal?: AbortSignal,
): AsyncGenerator<[number, number]> {
  const iBlock = node.iBlock;
  for (let i = 0; i < 12 && i < nblocks; i++) {
    const p = iBlock.readUInt32LE(4 * i);
    if (p === 0 || i < from) continue;
    ctx.checkBlocks(node.ino, p, 1, `block pointer ${i}`);
    yield [i, p];
  }
  const per = ctx.blockSize / 4;
  let base = 12;
  for (let level = 1; level <= 3 && base < nblocks; level++) {
    const span = per ** level;
    const p = iBlock.readUInt32LE(4 * (11 + level));
    if (p !== 0 && base + span > from) yield* indirect(ctx, node, p, level, base, nblocks, from, visited, signal);
    base += span;
  }
}

async function* indirect(
  ctx: MapContext, node: MappedInode, blockNr: number, level: number, base: number, nblocks: number, from: number,
  visited: Set<number>, signal?: AbortSignal,
): AsyncGenerator<[number, number]> {
  ctx.checkBlocks(node.ino, blockNr, 1, `level-${level} indirect block`);
  if (visited.has(blockNr)) throw ctx.input(`inode ${node.ino}: indirect block ${blockNr} is used twice (cycle)`);
  visited.add(blockNr);
  throwIfAborted(signal);
  const buf = await ctx.block(blockNr, signal);
  const per = ctx.blockSize / 4;
  const childSpan = per ** (level - 1);
  for (let i = 0; i < per; i++) {
    const l = base + i * childSpan;
    if (l >= nblocks) break;
    const p = buf.readUInt32LE(4 * i);
    if (p === 0 || l + childSpan <= from) continue;
    if (level === 1) {
      ctx.checkBlocks(node.ino, p, 1, `block pointer in indirect block ${blockNr}`);
      yield [l, p];
    } else {
      yield* indirect(ctx, node, p, level - 1, l, nblocks, from, visited, signal);
    }
  }
}

/** Merges runs that continue each other both logically and physically (e.g. extents split at 32768 blocks). */
export async function* coalesce(runs: AsyncIterable<Extent>): AsyncGenerator<Extent> {
  let cur: { logical: number; physical: number; length: number } | undefined;
  for await (const r of runs) {
    if (cur !== undefined && r.logical === cur.logical + cur.length && r.physical === cur.physical + cur.length) {
      cur.length += r.length;
      continue;
    }
    if (cur !== undefined) yield cur;
    cur = { logical: r.logical, physical: r.physical, length: r.length };
  }
  if (cur !== undefined) yield cur;
}

function hex(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}
