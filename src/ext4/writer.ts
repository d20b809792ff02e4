import { byteStringToBytes, compareByteStrings, type ByteString } from '../layers/bytes.js';
import type { Attrs } from '../layers/entry.js';
import type { DirInode, Inode, Tree } from '../layers/tree.js';
import { Bitmap } from './bitmap.js';
import {
  BLOCKS_PER_GROUP, BLOCK_SIZE, EXTRA_ISIZE, EXT4_EXTENTS_FL, FAST_SYMLINK_MAX, FEATURE_COMPAT, FEATURE_INCOMPAT,
  FEATURE_RO_COMPAT, FIRST_INO, FT_BLK, FT_CHR, FT_DIR, FT_FIFO, FT_REG, FT_SYMLINK, INODE_SIZE, LOG_BLOCK_SIZE,
  LOST_FOUND_INO, MAX_LINKS, ROOT_INO, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG,
} from './constants.js';
import type { StoredData } from './data-area.js';
import { dirBlockCount, encodeDirBlocks, type DirEntry } from './dirent.js';
import { encodeExtentTree, extentTreeBlocks, MAX_EXTENT_LEN, type Extent } from './extent.js';
import { BG_INODE_ZEROED, encodeGroupDesc } from './group-desc.js';
import { encodeInode, type RawInode } from './inode.js';
import { planGeometry, type Geometry } from './layout.js';
import type { BlockSink } from './sink.js';
import { encodeSuperblock } from './superblock.js';
import { placeXattrs, setXattrBlockRefcount } from './xattr.js';

export interface MetadataOptions {
  /** Chunk size in bytes (power of two, ≥ 64 KiB): metadata starts on a chunk boundary. */
  readonly chunkSize: number;
  /** 16 bytes, derived from the image (never random). */
  readonly uuid: Buffer;
  /** 16 bytes, derived from the image. */
  readonly hashSeed: Buffer;
  /** Free space to leave, as a fraction of the used blocks and inodes (0 = sized to fit). */
  readonly headroom: number;
}

export interface MetadataSummary {
  readonly totalBlocks: number;
  readonly inodes: number;
  readonly dataBlocks: number;
  readonly metadataStart: number;
}

/** An inode as laid out: its number, links and where each of its blocks goes. */
interface Placed {
  readonly ino: number;
  readonly node: Inode<StoredData> | LostFound;
  nlink: number;
  /** For dirs: parent inode number. */
  parent: number;
  extents: readonly Extent[];
  treeBlocks: readonly number[];
  /** Dir blocks, slow symlink block: first block of its contiguous run. */
  ownStart: number;
  ownBlocks: number;
  xattrInline: Buffer | undefined;
  xattrBlock: number;
}

/** The synthetic /lost+found that e2fsck expects when the image has none. */
interface LostFound {
  readonly kind: 'lost+found';
}

const LOST_FOUND_NAME = 'lost+found' as ByteString;
/** Shared by the many inodes that have no extents or tree blocks. */
const NONE: readonly never[] = Object.freeze([]);
const LOST_FOUND_BLOCKS = 4; // 16 KiB, as mke2fs makes it

/**
 * Writes everything but file data: directories, extent trees, xattr blocks,
 * slow symlinks, bitmaps and inode tables after the data (starting on a chunk
 * boundary, so data chunks never share bytes with metadata), then the
 * superblock and group descriptors into chunk 0. Deterministic: inode numbers
 * follow a depth-first walk in byte order of names; no clock, no randomness.
 */
export async function writeMetadata(
  tree: Tree<StoredData>,
  dataEnd: number,
  sink: BlockSink,
  options: MetadataOptions,
): Promise<MetadataSummary> {
  const chunkBlocks = options.chunkSize / BLOCK_SIZE;
  const placed = numberInodes(tree);
  const byIno = new Map<number, Placed>(placed.map((p) => [p.ino, p]));
  // placed is sorted by inode number (no spread into Math.max: it overflows the stack on big trees).
  const inodesUsed = Math.max(FIRST_INO, placed[placed.length - 1]!.ino);

  // Allocate metadata blocks, in inode order: directory blocks and slow
  // symlinks, then extent-tree blocks, then (shared) xattr blocks.
  const metadataStart = Math.ceil(dataEnd / chunkBlocks) * chunkBlocks;
  let next = metadataStart;
  for (const p of placed) {
    const n = ownBlockCount(p);
    if (n > 0) {
      p.ownStart = next;
      p.ownBlocks = n;
      next += n;
      p.extents = splitRun(0, p.ownStart, n);
    } else if (p.node.kind === 'file') {
      p.extents = p.node.data.extents;
    }
  }
  for (const p of placed) {
    const n = extentTreeBlocks(p.extents.length);
    if (n > 0) {
      p.treeBlocks = Array.from({ length: n }, (_, i) => next + i);
      next += n;
    }
  }
  const xattrBlocks: { at: number; data: Buffer; refs: number }[] = [];
  const openXattrBlocks = new Map<string, { at: number; data: Buffer; refs: number }>();
  for (const p of placed) {
    if (p.node.kind === 'lost+found') continue;
    let placement;
    try {
      placement = placeXattrs(p.node.attrs.xattrs);
    } catch (e) {
      throw new RangeError(`inode ${p.ino}: ${(e as Error).message}`);
    }
    if (placement.where === 'inode') p.xattrInline = placement.area;
    if (placement.where === 'block') {
      const key = placement.block.toString('latin1');
      let shared = openXattrBlocks.get(key);
      // Identical xattr blocks are shared, as the kernel does, up to its cap of 1024 references.
      if (!shared || shared.refs >= 1024) {
        shared = { at: next++, data: placement.block, refs: 0 };
        openXattrBlocks.set(key, shared);
        xattrBlocks.push(shared);
      }
      shared.refs++;
      p.xattrBlock = shared.at;
    }
  }
  const usedBlocksSoFar = next;
  const geo = planGeometry({
    tablesStart: next,
    inodesUsed,
    spareInodes: Math.ceil(inodesUsed * options.headroom),
    spareBlocks: Math.ceil(usedBlocksSoFar * options.headroom),
    roundBlocks: chunkBlocks,
    maxGdtBlocks: chunkBlocks - 1,
  });

  // Write directory blocks and slow symlinks, extent blocks, xattr blocks — in block order.
  const inoOf = new Map<Inode<StoredData>, number>();
  for (const p of placed) if (p.node.kind !== 'lost+found') inoOf.set(p.node, p.ino);
  for (const p of placed) {
    if (p.ownBlocks === 0) continue;
    await sink.write(p.ownStart, Buffer.concat(ownBlocksOf(p, inoOf)));
  }
  for (const p of placed) {
    if (p.treeBlocks.length === 0) continue;
    const { blocks } = encodeExtentTree(p.extents, p.treeBlocks);
    for (const b of blocks) await sink.write(b.at, b.data);
  }
  for (const x of xattrBlocks) {
    setXattrBlockRefcount(x.data, x.refs);
    await sink.write(x.at, x.data);
  }

  // Bitmaps: every block that a live inode or the metadata owns.
  const blockBitmaps = Array.from({ length: geo.groups }, () => new Bitmap());
  const markBlocks = (from: number, count: number): void => {
    let b = from;
    const end = from + count;
    while (b < end) {
      const g = Math.floor(b / BLOCKS_PER_GROUP);
      const groupEnd = Math.min(end, (g + 1) * BLOCKS_PER_GROUP);
      blockBitmaps[g]!.setRange(b - g * BLOCKS_PER_GROUP, groupEnd - g * BLOCKS_PER_GROUP);
      b = groupEnd;
    }
  };
  markBlocks(0, 1 + geo.gdtBlocks);
  for (const p of placed) {
    if (p.node.kind === 'file') for (const e of p.extents) markBlocks(e.physical, e.length);
  }
  markBlocks(metadataStart, geo.inodeTablesAt + geo.groups * geo.inodeTableBlocks - metadataStart);
  const lastGroupBlocks = geo.totalBlocks - (geo.groups - 1) * BLOCKS_PER_GROUP;
  blockBitmaps[geo.groups - 1]!.setRange(lastGroupBlocks, BLOCKS_PER_GROUP); // blocks past the end are "in use"

  const inodeBitmaps = Array.from({ length: geo.groups }, () => new Bitmap());
  for (const bm of inodeBitmaps) bm.setRange(geo.inodesPerGroup, BLOCK_SIZE * 8); // padding past ipg
  const usedDirs = new Array<number>(geo.groups).fill(0);
  for (let ino = 1; ino < FIRST_INO; ino++) inodeBitmaps[0]!.set(ino - 1); // reserved inodes count as used
  for (const p of placed) {
    const g = Math.floor((p.ino - 1) / geo.inodesPerGroup);
    inodeBitmaps[g]!.set((p.ino - 1) % geo.inodesPerGroup);
    if (p.node.kind === 'dir' || p.node.kind === 'lost+found') usedDirs[g]!++;
  }

  for (let g = 0; g < geo.groups; g++) await sink.write(geo.blockBitmapsAt + g, blockBitmaps[g]!.bytes);
  for (let g = 0; g < geo.groups; g++) await sink.write(geo.inodeBitmapsAt + g, inodeBitmaps[g]!.bytes);

  // Inode tables, one group at a time.
  const table = Buffer.alloc(geo.inodeTableBlocks * BLOCK_SIZE);
  for (let g = 0; g < geo.groups; g++) {
    table.fill(0);
    const first = g * geo.inodesPerGroup + 1;
    for (let i = 0; i < geo.inodesPerGroup; i++) {
      const p = byIno.get(first + i);
      if (p) encodeInode(rawInodeOf(p), table, i * INODE_SIZE);
    }
    await sink.write(geo.inodeTablesAt + g * geo.inodeTableBlocks, table);
  }

  // Chunk 0: superblock and group descriptors, written last.
  let freeBlocksTotal = 0;
  let freeInodesTotal = 0;
  const gdt = Buffer.alloc(geo.gdtBlocks * BLOCK_SIZE);
  for (let g = 0; g < geo.groups; g++) {
    const groupBlocks = g === geo.groups - 1 ? lastGroupBlocks : BLOCKS_PER_GROUP;
    const freeBlocks = groupBlocks - countBits(blockBitmaps[g]!, groupBlocks);
    const freeInodes = geo.inodesPerGroup - countBits(inodeBitmaps[g]!, geo.inodesPerGroup);
    freeBlocksTotal += freeBlocks;
    freeInodesTotal += freeInodes;
    encodeGroupDesc(
      {
        blockBitmap: geo.blockBitmapsAt + g,
        inodeBitmap: geo.inodeBitmapsAt + g,
        inodeTable: geo.inodeTablesAt + g * geo.inodeTableBlocks,
        freeBlocks,
        freeInodes,
        usedDirs: usedDirs[g]!,
        flags: BG_INODE_ZEROED,
      },
      gdt,
      g * 32,
    );
  }
  const chunk0 = Buffer.alloc(BLOCK_SIZE + gdt.length);
  encodeSuperblock({
    inodesCount: geo.groups * geo.inodesPerGroup,
    blocksCount: geo.totalBlocks,
    freeBlocksCount: freeBlocksTotal,
    freeInodesCount: freeInodesTotal,
    firstDataBlock: 0,
    logBlockSize: LOG_BLOCK_SIZE,
    blocksPerGroup: BLOCKS_PER_GROUP,
    inodesPerGroup: geo.inodesPerGroup,
    time: 0,
    state: 1,
    revLevel: 1,
    firstIno: FIRST_INO,
    inodeSize: INODE_SIZE,
    featureCompat: FEATURE_COMPAT,
    featureIncompat: FEATURE_INCOMPAT,
    featureRoCompat: FEATURE_RO_COMPAT,
    uuid: options.uuid,
    volumeName: '',
    hashSeed: options.hashSeed,
    descSize: 0,
    minExtraIsize: EXTRA_ISIZE,
    wantExtraIsize: EXTRA_ISIZE,
    logGroupsPerFlex: 4,
  }).copy(chunk0, 1024);
  gdt.copy(chunk0, BLOCK_SIZE);
  await sink.write(0, chunk0);
  await sink.finish(geo.totalBlocks);
  return {
    totalBlocks: geo.totalBlocks,
    inodes: placed.length,
    dataBlocks: placed.reduce((n, p) => n + (p.node.kind === 'file' ? p.node.data.blocks : 0), 0),
    metadataStart,
  };
}

function countBits(bm: Bitmap, n: number): number {
  let c = 0;
  for (let i = 0; i < n; i++) if (bm.isSet(i)) c++;
  return c;
}

function splitRun(logical: number, physical: number, length: number): Extent[] {
  const out: Extent[] = [];
  for (let i = 0; i < length; i += MAX_EXTENT_LEN) {
    out.push({ logical: logical + i, physical: physical + i, length: Math.min(MAX_EXTENT_LEN, length - i) });
  }
  return out;
}

const sortedChildren = <D>(dir: DirInode<D>): [ByteString, Inode<D>][] =>
  [...dir.children].sort((a, b) => compareByteStrings(a[0], b[0]));

/** Numbers inodes: root 2, lost+found 11, the rest from 12 depth-first in name order. */
function numberInodes(tree: Tree<StoredData>): Placed[] {
  const out: Placed[] = [];
  const seen = new Map<Inode<StoredData>, Placed>();
  const make = (ino: number, node: Inode<StoredData> | LostFound, parent: number): Placed => {
    const p: Placed = { ino, node, nlink: node.kind === 'dir' || node.kind === 'lost+found' ? 2 : 0, parent, extents: NONE, treeBlocks: NONE, ownStart: 0, ownBlocks: 0, xattrInline: undefined, xattrBlock: 0 };
    out.push(p);
    return p;
  };
  const root = make(ROOT_INO, tree.root, ROOT_INO);
  seen.set(tree.root, root);
  const existingLf = tree.root.children.get(LOST_FOUND_NAME);
  // An image's own /lost+found directory becomes inode 11; without one we add
  // an empty one (e2fsck -fp would create it); a non-directory of that name is left alone.
  if (existingLf?.kind === 'dir') seen.set(existingLf, make(LOST_FOUND_INO, existingLf, ROOT_INO));
  if (existingLf === undefined) {
    make(LOST_FOUND_INO, { kind: 'lost+found' }, ROOT_INO);
    root.nlink++;
  }
  let nextIno = FIRST_INO + 1;
  const visit = (dir: DirInode<StoredData>, self: Placed, path: string): void => {
    for (const [name, child] of sortedChildren(dir)) {
      let p = seen.get(child);
      if (child.kind === 'dir') {
        if (!p) {
          p = make(nextIno++, child, self.ino);
          seen.set(child, p);
        }
        self.nlink++;
        visit(child, p, `${path}/${name}`);
      } else {
        if (!p) {
          p = make(nextIno++, child, self.ino);
          seen.set(child, p);
        }
        p.nlink++;
        if (p.nlink > MAX_LINKS) throw new RangeError(`Cannot write ${path}/${name}: more than ${MAX_LINKS} hard links`);
      }
    }
  };
  visit(tree.root, root, '');
  for (const p of out) if (p.node.kind !== 'file' && p.nlink > MAX_LINKS) p.nlink = 1; // dir_nlink: "many"
  out.sort((a, b) => a.ino - b.ino);
  return out;
}

function ownBlockCount(p: Placed): number {
  const n = p.node;
  if (n.kind === 'lost+found') return LOST_FOUND_BLOCKS;
  if (n.kind === 'dir') {
    const names = [1, 2, ...[...n.children.keys()].map((k) => k.length)];
    const count = dirBlockCount(names);
    return p.ino === LOST_FOUND_INO ? Math.max(count, LOST_FOUND_BLOCKS) : count;
  }
  if (n.kind === 'symlink' && n.target.length > FAST_SYMLINK_MAX) return 1;
  return 0;
}

function fileType(n: Inode<unknown>): number {
  switch (n.kind) {
    case 'file': return FT_REG;
    case 'dir': return FT_DIR;
    case 'symlink': return FT_SYMLINK;
    case 'char': return FT_CHR;
    case 'block': return FT_BLK;
    case 'fifo': return FT_FIFO;
  }
}

function ownBlocksOf(p: Placed, inoOf: ReadonlyMap<Inode<StoredData>, number>): Buffer[] {
  const n = p.node;
  if (n.kind === 'symlink') {
    const b = Buffer.alloc(BLOCK_SIZE);
    byteStringToBytes(n.target).copy(b);
    return [b];
  }
  const entries: DirEntry[] = [
    { inode: p.ino, name: Buffer.from('.'), fileType: FT_DIR },
    { inode: p.parent, name: Buffer.from('..'), fileType: FT_DIR },
  ];
  if (n.kind === 'dir') {
    for (const [name, child] of sortedChildren(n)) {
      entries.push({ inode: inoOf.get(child)!, name: byteStringToBytes(name), fileType: fileType(child) });
    }
    if (p.ino === ROOT_INO && !n.children.has(LOST_FOUND_NAME)) {
      entries.push({ inode: LOST_FOUND_INO, name: Buffer.from('lost+found'), fileType: FT_DIR });
    }
  }
  const blocks = encodeDirBlocks(entries);
  while (blocks.length < p.ownBlocks) {
    const b = Buffer.alloc(BLOCK_SIZE);
    b.writeUInt16LE(BLOCK_SIZE, 4);
    blocks.push(b);
  }
  return blocks;
}

/** i_block of inodes that leave it empty (fifos); never written to. */
const NO_IBLOCK = Buffer.alloc(60);

const LOST_FOUND_ATTRS: Attrs = { mode: 0o700, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, xattrs: new Map() };

function rawInodeOf(p: Placed): RawInode {
  const n = p.node;
  const attrs = n.kind === 'lost+found' ? LOST_FOUND_ATTRS : n.attrs;
  const t = { sec: attrs.mtime.sec, nsec: attrs.mtime.nsec };
  let iBlock: Buffer = NO_IBLOCK; // replaced below by those that fill it
  let flags = 0;
  let size = 0;
  let dataBlocks = 0;
  let type: number;
  const extentRoot = (): void => {
    iBlock = encodeExtentTree(p.extents, p.treeBlocks).root;
    flags |= EXT4_EXTENTS_FL;
  };
  switch (n.kind) {
    case 'file':
      type = S_IFREG;
      size = n.data.size;
      dataBlocks = n.data.blocks;
      extentRoot();
      break;
    case 'dir':
    case 'lost+found':
      type = S_IFDIR;
      size = p.ownBlocks * BLOCK_SIZE;
      dataBlocks = p.ownBlocks;
      extentRoot();
      break;
    case 'symlink':
      type = S_IFLNK;
      size = n.target.length;
      if (p.ownBlocks > 0) {
        dataBlocks = 1;
        extentRoot();
      } else {
        iBlock = Buffer.alloc(60);
        byteStringToBytes(n.target).copy(iBlock);
      }
      break;
    case 'char':
    case 'block':
      type = n.kind === 'char' ? S_IFCHR : S_IFBLK;
      iBlock = Buffer.alloc(60);
      encodeDevice(iBlock, n.major, n.minor);
      break;
    case 'fifo':
      type = S_IFIFO;
      break;
  }
  const blocks = dataBlocks + p.treeBlocks.length + (p.xattrBlock ? 1 : 0);
  return {
    mode: type | (attrs.mode & 0o7777),
    uid: attrs.uid,
    gid: attrs.gid,
    size,
    atime: t,
    ctime: t,
    mtime: t,
    crtime: t,
    linksCount: p.nlink,
    blocks512: blocks * (BLOCK_SIZE / 512),
    flags,
    iBlock,
    fileAcl: p.xattrBlock,
    inlineXattrs: p.xattrInline ?? Buffer.alloc(0),
  };
}

function encodeDevice(iBlock: Buffer, major: number, minor: number): void {
  if (major < 256 && minor < 256) {
    iBlock.writeUInt32LE((major << 8) | minor, 0);
  } else {
    iBlock.writeUInt32LE(0, 0);
    iBlock.writeUInt32LE(((minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)) >>> 0, 4);
  }
}
