/**
 * A strict, read-only ext4 reader. It reads through a ByteSource in block or
 * extent-run sized ranges (never a whole image), so it works the same over a
 * local file and over a chunk fetcher that loads only the chunks asked for.
 *
 * Strict on purpose: chunkyard's own writer is tested through it, so
 * anything malformed (bad magic, extents out of order or outside the
 * filesystem, cycles, dirents to unused inodes, checksum mismatches) is an
 * error naming the inode or block, never a guess. Every loop is bounded by
 * on-disk sizes and every tree walk by depth and a visited set, so a hostile
 * image cannot make it spin.
 *
 * Handles what `mke2fs -t ext4` makes by default (64bit, metadata_csum,
 * flex_bg, htree directories — read by a linear scan, as htree interior
 * blocks look like empty dirent blocks), ext2/ext3 block maps, 1–64 KiB
 * blocks, meta_bg; refuses inline_data, encryption, casefold, ea_inode and
 * journals that need recovery, by name.
 */
import { Readable } from 'node:stream';
import { InputError, IntegrityError, NotFoundError, throwIfAborted } from '../errors.js';
import { bytesToByteString, byteStringToBytes, byteStringToDisplay, type ByteString } from '../layers/bytes.js';
import type { ByteSource } from './byte-source.js';
import {
  dirLeafChecksum, dxNodeChecksum, fsChecksumSeed, groupDescChecksum, inodeChecksum,
  inodeChecksumSeed, storedInodeChecksum, superblockChecksum, xattrBlockChecksum,
} from './checksums.js';
import {
  EXT4_EXTENTS_FL, EXT4_MAGIC, ROOT_INO, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK,
} from './constants.js';
import { coalesce, inodeRuns, type MapContext } from './block-map.js';
import { decodeDirBlock } from './dirent.js';
import type { Extent } from './extent.js';
import { COMPAT_SPARSE_SUPER2, featureNames, INCOMPAT, READER_INCOMPAT, RO_COMPAT } from './features.js';
import { decodeGroupDesc, type GroupDesc } from './group-desc.js';
import { decodeInode, type RawInode } from './inode.js';
import { decodeSuperblock, type Superblock } from './superblock.js';
import { decodeInlineXattrs, decodeXattrBlock } from './xattr.js';

export type { Extent } from './extent.js';

export type Ext4Kind = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

export interface Ext4Time {
  /** Seconds since the epoch (signed; ext4 extra epoch bits applied). */
  readonly sec: number;
  readonly nsec: number;
}

export interface Ext4Stat {
  readonly ino: number;
  readonly kind: Ext4Kind;
  /** Permission bits incl. setuid/setgid/sticky (i_mode & 0o7777). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** i_size: bytes for files and symlinks (target length), block-rounded for dirs, 0 for the rest. */
  readonly size: number;
  readonly nlink: number;
  readonly atime: Ext4Time;
  readonly mtime: Ext4Time;
  readonly ctime: Ext4Time;
  /** Creation time, when the inode's extra area holds it. */
  readonly crtime?: Ext4Time;
  /** Device numbers, for 'char' and 'block' only. */
  readonly rdev?: { readonly major: number; readonly minor: number };
  /** Allocated space in 512-byte units (data, extent tree and xattr blocks). */
  readonly blocks512: number;
  /** i_flags (EXTENTS 0x80000, INDEX 0x1000, …). */
  readonly flags: number;
  /** In-inode and xattr-block attributes by full name; POSIX ACLs in their VFS (getfattr) form. */
  readonly xattrs: ReadonlyMap<string, Buffer>;
}

export interface Ext4DirEntry {
  readonly name: ByteString;
  readonly ino: number;
  /** From the dirent's file_type byte ('unknown' when the filesystem lacks the filetype feature). */
  readonly fileType: Ext4Kind | 'unknown';
}

export interface Ext4WalkEntry {
  /** '/'-rooted path in the image, e.g. '/etc/passwd'; the start is '/' or the normalised start path. */
  readonly path: ByteString;
  readonly ino: number;
  readonly stat: Ext4Stat;
}

export interface Ext4OpenOptions {
  /** Check metadata_csum checksums where the filesystem has them (IntegrityError on mismatch). @default 'verify' */
  readonly checksums?: 'verify' | 'ignore';
  /** Metadata blocks (inode tables, directories, extent and xattr blocks) kept in memory. @default 256 */
  readonly cacheBlocks?: number;
  readonly signal?: AbortSignal;
}

export interface LookupOptions {
  /** Resolve a symlink in the last component too (like stat(2), not lstat(2)). @default false */
  readonly followFinalSymlink?: boolean;
  readonly signal?: AbortSignal;
}

export interface ReadRange {
  /** First byte (default 0). */
  readonly start?: number;
  /** One past the last byte, exclusive (default and maximum: the file size). */
  readonly end?: number;
  readonly signal?: AbortSignal;
}

export interface WalkOptions {
  /** Where to start (symlinks followed); default '/'. */
  readonly path?: ByteString;
  readonly signal?: AbortSignal;
}

const SUPERBLOCK_OFFSET = 1024;
const MAX_SYMLINKS = 40;
/** File data is read in runs of at most this many bytes (contiguous blocks coalesced). */
const READ_BYTES = 256 * 1024;

const INDEX_FL = 0x1000;
const ENCRYPT_FL = 0x800;
const HUGE_FILE_FL = 0x40000;
const EA_INODE_FL = 0x200000;
const INLINE_DATA_FL = 0x10000000;
const BG_INODE_UNINIT = 0x1;
const HURD_OS = 1;

const KIND_BY_FMT = new Map<number, Ext4Kind>([
  [S_IFREG, 'file'], [S_IFDIR, 'dir'], [S_IFLNK, 'symlink'], [S_IFCHR, 'char'], [S_IFBLK, 'block'], [S_IFIFO, 'fifo'], [S_IFSOCK, 'socket'],
]);
const KIND_BY_FT: readonly (Ext4Kind | 'unknown')[] = ['unknown', 'file', 'dir', 'char', 'block', 'fifo', 'socket', 'symlink'];

/** One decoded, validated, in-use inode. */
interface Node {
  readonly ino: number;
  readonly inode: RawInode;
  readonly kind: Ext4Kind;
  readonly extraIsize: number;
  readonly blocks512: number;
  /** Seed for checksums of structures this inode owns (0 without metadata_csum). */
  readonly csumSeed: number;
}

interface Group extends GroupDesc {
  readonly itableUnused: number;
}

interface Geometry {
  readonly blockSize: number;
  readonly clusterSize: number;
  readonly groups: number;
  readonly inodeSize: number;
  readonly firstIno: number;
  readonly descSize: number;
  readonly itableBlocks: number;
  /** Block holding the superblock (1 with 1 KiB blocks, else 0); data lies beyond it. */
  readonly sbBlock: number;
  readonly gdtBlocks: number;
  readonly firstMetaBg: number;
  readonly metaBg: boolean;
  readonly sparseSuper: boolean;
  readonly sparseSuper2: boolean;
  readonly backupBgs: readonly [number, number];
  readonly filetype: boolean;
  readonly hugeFile: boolean;
  /** gdt_csum or metadata_csum: INODE_UNINIT and itable_unused mean something. */
  readonly uninitBg: boolean;
  /** Verify metadata_csum checksums. */
  readonly verify: boolean;
  readonly seed: number;
}

export class Ext4Reader {
  readonly superblock: Superblock;
  readonly blockSize: number;
  readonly groupCount: number;
  readonly #src: ByteSource;
  readonly #name: string;
  readonly #g: Geometry;
  readonly #cache = new Map<number, Promise<Buffer>>();
  readonly #cacheMax: number;
  readonly #groups = new Map<number, Group>();
  readonly #mapContext: MapContext;

  private constructor(src: ByteSource, sb: Superblock, g: Geometry, cacheMax: number) {
    this.#src = src;
    this.#name = src.name ?? 'ext4 image';
    this.superblock = sb;
    this.#g = g;
    this.blockSize = g.blockSize;
    this.groupCount = g.groups;
    this.#cacheMax = cacheMax;
    this.#mapContext = {
      blockSize: g.blockSize,
      verify: g.verify,
      block: (nr, signal) => this.#block(nr, signal),
      checkBlocks: (ino, start, count, what) => this.#checkBlocks(ino, start, count, what),
      input: (msg) => this.#input(msg),
      integrity: (msg) => this.#integrity(msg),
    };
  }

  /**
   * Reads and checks the superblock. InputError when `src` is not ext4, is
   * truncated, or uses an incompat feature this reader does not handle
   * (named); IntegrityError when the superblock checksum is wrong. On
   * success the reader owns `src` (close() closes it); on failure the caller does.
   */
  static async open(src: ByteSource, options: Ext4OpenOptions = {}): Promise<Ext4Reader> {
    const name = src.name ?? 'ext4 image';
    const fail = (msg: string): InputError => new InputError(`${name}: ${msg}`);
    if (src.size < SUPERBLOCK_OFFSET + 1024) throw fail(`not an ext4 filesystem (only ${src.size} bytes)`);
    const raw = await src.read(SUPERBLOCK_OFFSET, 1024, options.signal);
    const magic = raw.readUInt16LE(0x38);
    if (magic !== EXT4_MAGIC) throw fail(`not an ext4 filesystem (superblock magic is 0x${magic.toString(16)}, want 0xef53)`);
    const sb = decodeSuperblock(raw);
    if (sb.revLevel > 1) throw fail(`unsupported ext4 revision level ${sb.revLevel}`);
    if (raw.readUInt32LE(0x48) === HURD_OS) throw fail('filesystems created by GNU Hurd are not supported');
    const dynamic = sb.revLevel === 1;
    const incompat = dynamic ? sb.featureIncompat : 0;
    const roCompat = dynamic ? sb.featureRoCompat : 0;
    const compat = dynamic ? sb.featureCompat : 0;
    const unsupported = (incompat & ~READER_INCOMPAT) >>> 0;
    if (unsupported !== 0) throw fail(`unsupported ext4 features: ${featureNames(unsupported, INCOMPAT).join(', ')}`);
    const has = (flags: number, bit: number): boolean => (flags & bit) !== 0;
    const metadataCsum = has(roCompat, RO_COMPAT.metadata_csum);
    if (metadataCsum && has(roCompat, RO_COMPAT.uninit_bg)) throw fail('both uninit_bg and metadata_csum features are set');
    const verify = metadataCsum && (options.checksums ?? 'verify') === 'verify';
    if (metadataCsum && raw.readUInt8(0x175) !== 1) throw fail(`unknown checksum type ${raw.readUInt8(0x175)}`);
    if (verify) {
      const want = superblockChecksum(raw);
      const got = raw.readUInt32LE(0x3fc);
      if (want !== got) throw new IntegrityError(`${name}: superblock checksum mismatch (stored 0x${hex(got)}, computed 0x${hex(want)})`);
    }

    if (sb.logBlockSize > 6) throw fail(`unsupported block size 1024 << ${sb.logBlockSize}`);
    const blockSize = 1024 << sb.logBlockSize;
    const bigalloc = has(roCompat, RO_COMPAT.bigalloc);
    const logCluster = raw.readUInt32LE(0x1c);
    if (bigalloc ? logCluster < sb.logBlockSize || logCluster > 30 : logCluster !== sb.logBlockSize) {
      throw fail(`bad cluster size 1024 << ${logCluster} for block size ${blockSize}`);
    }
    const clusterSize = 1024 * 2 ** logCluster;
    if (sb.blocksPerGroup < 8 || (!bigalloc && sb.blocksPerGroup > 8 * blockSize)) throw fail(`bad blocks per group ${sb.blocksPerGroup}`);
    if (sb.inodesPerGroup < 1 || sb.inodesPerGroup > 8 * blockSize) throw fail(`bad inodes per group ${sb.inodesPerGroup}`);
    const inodeSize = dynamic ? sb.inodeSize : 128;
    if (inodeSize < 128 || inodeSize > blockSize || (inodeSize & (inodeSize - 1)) !== 0) throw fail(`bad inode size ${inodeSize}`);
    const firstIno = dynamic ? sb.firstIno : 11;
    const expectFirstData = blockSize === 1024 && !bigalloc ? 1 : 0;
    if (sb.firstDataBlock !== expectFirstData) throw fail(`bad first data block ${sb.firstDataBlock} for block size ${blockSize}`);
    if (sb.blocksCount <= sb.firstDataBlock + 1) throw fail(`bad block count ${sb.blocksCount}`);
    if (src.size < sb.blocksCount * blockSize) {
      throw fail(`image is truncated: ${src.size} bytes, but the filesystem has ${sb.blocksCount} blocks of ${blockSize} (${sb.blocksCount * blockSize} bytes)`);
    }
    const groups = Math.ceil((sb.blocksCount - sb.firstDataBlock) / sb.blocksPerGroup);
    if (sb.inodesCount !== groups * sb.inodesPerGroup) {
      throw fail(`inode count ${sb.inodesCount} is not ${groups} groups × ${sb.inodesPerGroup} inodes per group`);
    }
    if (firstIno < 11 || firstIno > sb.inodesCount) throw fail(`bad first inode ${firstIno}`);
    const is64 = has(incompat, INCOMPAT['64bit']);
    const descSize = is64 ? sb.descSize : 32;
    if (is64 && (descSize < 64 || descSize > 1024 || descSize > blockSize || (descSize & (descSize - 1)) !== 0)) {
      throw fail(`bad group descriptor size ${descSize}`);
    }
    const sbBlock = Math.floor(SUPERBLOCK_OFFSET / blockSize);
    const gdtBlocks = Math.ceil((groups * descSize) / blockSize);
    const metaBg = has(incompat, INCOMPAT.meta_bg);
    const firstMetaBg = metaBg ? raw.readUInt32LE(0x104) : gdtBlocks;
    if (Math.min(firstMetaBg, gdtBlocks) + sbBlock + 1 > sb.blocksCount) throw fail(`group descriptors (${gdtBlocks} blocks) do not fit`);
    const seed = metadataCsum
      ? fsChecksumSeed(sb.uuid, has(incompat, INCOMPAT.metadata_csum_seed) ? raw.readUInt32LE(0x270) : undefined)
      : 0;
    const g: Geometry = {
      blockSize,
      clusterSize,
      groups,
      inodeSize,
      firstIno,
      descSize,
      itableBlocks: Math.ceil((sb.inodesPerGroup * inodeSize) / blockSize),
      sbBlock,
      gdtBlocks,
      firstMetaBg,
      metaBg,
      sparseSuper: has(roCompat, RO_COMPAT.sparse_super),
      sparseSuper2: has(compat, COMPAT_SPARSE_SUPER2),
      backupBgs: [raw.readUInt32LE(0x24c), raw.readUInt32LE(0x250)],
      filetype: has(incompat, INCOMPAT.filetype),
      hugeFile: has(roCompat, RO_COMPAT.huge_file),
      uninitBg: metadataCsum || has(roCompat, RO_COMPAT.uninit_bg),
      verify,
      seed,
    };
    const cacheMax = Math.max(8, options.cacheBlocks ?? 256);
    return new Ext4Reader(src, { ...sb, inodeSize, firstIno }, g, cacheMax);
  }

  /** Closes the underlying ByteSource. */
  close(): Promise<void> {
    this.#cache.clear();
    return this.#src.close();
  }

  /**
   * The inode `path` names, resolved from the root ('/a/b', 'a/b' and
   * 'a//b/' alike). '..' and symlinks in intermediate components are
   * resolved inside the image (absolute targets from the image root, at most
   * 40 links); the final symlink only with `followFinalSymlink`. A trailing
   * '/' requires a directory. NotFoundError naming the path when a component
   * is missing or not a directory.
   */
  async lookup(path: ByteString, options: LookupOptions = {}): Promise<number> {
    const { signal } = options;
    const display = (): string => byteStringToDisplay(path);
    const pending = splitPath(path).reverse(); // next component last
    let cur = await this.#node(ROOT_INO, signal);
    let links = 0;
    while (pending.length > 0) {
      throwIfAborted(signal);
      const c = pending.pop()!;
      if (cur.kind !== 'dir') throw new NotFoundError(`${this.#name}: ${display()}: not a directory`);
      if (c === '.') continue;
      if (c === '..') {
        cur = await this.#node((await this.#dotdot(cur, signal)), signal);
        continue;
      }
      const childIno = await this.#find(cur, c, signal);
      if (childIno === undefined) throw new NotFoundError(`${this.#name}: ${display()}: no such file or directory`);
      const child = await this.#node(childIno, signal);
      const last = pending.length === 0;
      if (child.kind === 'symlink' && (!last || options.followFinalSymlink === true)) {
        if (++links > MAX_SYMLINKS) throw new InputError(`${this.#name}: ${display()}: too many levels of symbolic links`);
        const target = await this.#symlinkTarget(child, signal);
        if (target.startsWith('/')) cur = await this.#node(ROOT_INO, signal);
        pending.push(...splitPath(target).reverse());
        continue;
      }
      cur = child;
    }
    return cur.ino;
  }

  /** Everything about one inode, xattrs included. */
  async stat(ino: number, signal?: AbortSignal): Promise<Ext4Stat> {
    return this.#statOf(await this.#node(ino, signal), signal);
  }

  /** A directory's entries in on-disk order, without '.' and '..'. */
  async readdir(ino: number, signal?: AbortSignal): Promise<Ext4DirEntry[]> {
    const node = await this.#node(ino, signal);
    if (node.kind !== 'dir') throw this.#input(`inode ${ino} is not a directory (${node.kind})`);
    return (await this.#listDir(node, signal)).entries;
  }

  /** A symlink's target bytes (fast symlinks from i_block, slow ones from their data block). */
  async readlink(ino: number, signal?: AbortSignal): Promise<ByteString> {
    const node = await this.#node(ino, signal);
    if (node.kind !== 'symlink') throw this.#input(`inode ${ino} is not a symbolic link (${node.kind})`);
    return this.#symlinkTarget(node, signal);
  }

  /**
   * Streams a regular file's bytes [start, end) — holes as zeros — reading
   * at most READ_BYTES at a time, physically contiguous extents coalesced.
   * Memory stays bounded whatever the file size. Errors (not a file, corrupt
   * extents) arrive as stream errors.
   */
  openFile(ino: number, range: ReadRange = {}): Readable {
    return Readable.from(this.#fileBytes(ino, range), { objectMode: false });
  }

  /**
   * A file's (or directory's, or slow symlink's) block mapping: initialised
   * extents as stored, in logical order (unwritten extents, which read as
   * zeros, are left out); for block-mapped (ext2/3) inodes, runs of
   * contiguous blocks. Empty for fast symlinks, devices, fifos and sockets.
   */
  async fileExtents(ino: number, signal?: AbortSignal): Promise<Extent[]> {
    const node = await this.#node(ino, signal);
    const out: Extent[] = [];
    if (!this.#hasBlocks(node)) return out;
    for await (const e of this.#runs(node, 0, signal)) out.push(e);
    return out;
  }

  /**
   * Depth-first walk from `options.path` (default '/'), the start first, each
   * directory's children in byte order of names, symlinks not followed.
   * Checks that dirent file types match inodes, that each directory's '..'
   * is its parent, and that no directory is reached twice.
   */
  async *walk(options: WalkOptions = {}): AsyncGenerator<Ext4WalkEntry> {
    const { signal } = options;
    const startPath = options.path ?? ('/' as ByteString);
    const startIno = await this.lookup(startPath, { followFinalSymlink: true, ...(signal ? { signal } : {}) });
    const start = await this.#node(startIno, signal);
    const rootPath = normalisePath(startPath);
    yield { path: rootPath, ino: startIno, stat: await this.#statOf(start, signal) };
    if (start.kind !== 'dir') return;
    const seen = new Set<number>([startIno]);
    interface Frame {
      readonly path: ByteString;
      readonly ino: number;
      readonly entries: readonly Ext4DirEntry[];
      next: number;
    }
    const sorted = async (n: Node): Promise<{ parent: number; entries: Ext4DirEntry[] }> => {
      const d = await this.#listDir(n, signal);
      d.entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      return d;
    };
    const stack: Frame[] = [{ path: rootPath, ino: startIno, entries: (await sorted(start)).entries, next: 0 }];
    while (stack.length > 0) {
      throwIfAborted(signal);
      const top = stack[stack.length - 1]!;
      const e = top.entries[top.next++];
      if (e === undefined) {
        stack.pop();
        continue;
      }
      const path = joinPath(top.path, e.name);
      const child = await this.#node(e.ino, signal);
      if (e.fileType !== 'unknown' && e.fileType !== child.kind) {
        throw this.#input(`${byteStringToDisplay(path)}: directory entry says ${e.fileType} but inode ${e.ino} is a ${child.kind}`);
      }
      yield { path, ino: e.ino, stat: await this.#statOf(child, signal) };
      if (child.kind === 'dir') {
        if (seen.has(e.ino)) throw this.#input(`${byteStringToDisplay(path)}: directory inode ${e.ino} is reached twice (hard-linked directory or cycle)`);
        seen.add(e.ino);
        const d = await sorted(child);
        if (d.parent !== top.ino) throw this.#input(`${byteStringToDisplay(path)}: '..' is inode ${d.parent}, not the parent ${top.ino}`);
        stack.push({ path, ino: e.ino, entries: d.entries, next: 0 });
      }
    }
  }

  // --- inodes ---------------------------------------------------------------

  #input(msg: string): InputError {
    return new InputError(`${this.#name}: ${msg}`);
  }

  #integrity(msg: string): IntegrityError {
    return new IntegrityError(`${this.#name}: ${msg}`);
  }

  /** Reads, checks and decodes an in-use inode. */
  async #node(ino: number, signal?: AbortSignal): Promise<Node> {
    const g = this.#g;
    const sb = this.superblock;
    if (!Number.isInteger(ino) || ino < 1 || ino > sb.inodesCount) throw this.#input(`inode ${ino} is out of range 1..${sb.inodesCount}`);
    const group = Math.floor((ino - 1) / sb.inodesPerGroup);
    const index = (ino - 1) % sb.inodesPerGroup;
    const gd = await this.#group(group, signal);
    if (g.uninitBg && ((gd.flags & BG_INODE_UNINIT) !== 0 || index >= sb.inodesPerGroup - gd.itableUnused)) {
      throw this.#input(`inode ${ino} is not in use (group ${group} marks it uninitialised)`);
    }
    const byte = index * g.inodeSize;
    const blockNr = gd.inodeTable + Math.floor(byte / g.blockSize);
    const block = await this.#block(blockNr, signal);
    const off = byte % g.blockSize;
    const raw = block.subarray(off, off + g.inodeSize);
    const mode = raw.readUInt16LE(0);
    const links = raw.readUInt16LE(0x1a);
    if (mode === 0 || links === 0) throw this.#input(`inode ${ino} is not in use (mode 0o${mode.toString(8)}, ${links} links)`);
    const extraIsize = g.inodeSize > 128 ? raw.readUInt16LE(0x80) : 0;
    if (128 + extraIsize > g.inodeSize || extraIsize % 4 !== 0) throw this.#input(`inode ${ino} has bad i_extra_isize ${extraIsize}`);
    let csumSeed = 0;
    if (g.verify) {
      csumSeed = inodeChecksumSeed(g.seed, ino, raw.readUInt32LE(0x64));
      const want = inodeChecksum(csumSeed, raw);
      const got = storedInodeChecksum(raw) & (want.bits === 16 ? 0xffff : 0xffffffff);
      if (got >>> 0 !== want.value) throw this.#integrity(`inode ${ino} checksum mismatch (stored 0x${hex(got)}, computed 0x${hex(want.value)})`);
    }
    const inode = decodeInode(raw, 0, g.inodeSize);
    const kind = KIND_BY_FMT.get(mode & S_IFMT);
    if (kind === undefined) throw this.#input(`inode ${ino} has unknown file type in mode 0o${mode.toString(8)}`);
    if ((inode.flags & INLINE_DATA_FL) !== 0) throw this.#input(`inode ${ino} stores inline data (not supported)`);
    if ((inode.flags & ENCRYPT_FL) !== 0) throw this.#input(`inode ${ino} is encrypted (not supported)`);
    if ((inode.flags & EA_INODE_FL) !== 0) throw this.#input(`inode ${ino} is an xattr value inode, not a file`);
    let blocks512 = raw.readUInt32LE(0x1c) + (g.hugeFile ? raw.readUInt16LE(0x74) * 2 ** 32 : 0);
    if (g.hugeFile && (inode.flags & HUGE_FILE_FL) !== 0) blocks512 *= g.blockSize / 512;
    return { ino, inode, kind, extraIsize, blocks512, csumSeed };
  }

  async #statOf(node: Node, signal?: AbortSignal): Promise<Ext4Stat> {
    const i = node.inode;
    const hasCrtime = node.extraIsize >= 0x98 - 128;
    return {
      ino: node.ino,
      kind: node.kind,
      mode: i.mode & 0o7777,
      uid: i.uid,
      gid: i.gid,
      size: i.size,
      nlink: i.linksCount,
      atime: i.atime,
      mtime: i.mtime,
      ctime: i.ctime,
      ...(hasCrtime ? { crtime: i.crtime } : {}),
      ...(node.kind === 'char' || node.kind === 'block' ? { rdev: decodeDevice(i.iBlock) } : {}),
      blocks512: node.blocks512,
      flags: i.flags,
      xattrs: await this.#xattrs(node, signal),
    };
  }

  async #xattrs(node: Node, signal?: AbortSignal): Promise<Map<string, Buffer>> {
    let out: Map<string, Buffer>;
    try {
      out = decodeInlineXattrs(node.inode.inlineXattrs);
    } catch (e) {
      throw this.#input(`inode ${node.ino}: in-inode xattrs: ${errorText(e)}`);
    }
    const acl = node.inode.fileAcl;
    if (acl === 0) return out;
    this.#checkBlocks(node.ino, acl, 1, 'xattr block');
    const block = await this.#block(acl, signal);
    if (block.readUInt32LE(8) !== 1) throw this.#input(`inode ${node.ino}: xattr block ${acl} claims ${block.readUInt32LE(8)} blocks, not 1`);
    if (this.#g.verify) {
      const want = xattrBlockChecksum(this.#g.seed, acl, block);
      const got = block.readUInt32LE(0x10);
      if (want !== got) throw this.#integrity(`inode ${node.ino}: xattr block ${acl} checksum mismatch (stored 0x${hex(got)}, computed 0x${hex(want)})`);
    }
    let fromBlock: Map<string, Buffer>;
    try {
      fromBlock = decodeXattrBlock(block);
    } catch (e) {
      throw this.#input(`inode ${node.ino}: xattr block ${acl}: ${errorText(e)}`);
    }
    for (const [k, v] of fromBlock) {
      if (out.has(k)) throw this.#input(`inode ${node.ino}: xattr ${k} is stored both in the inode and in block ${acl}`);
      out.set(k, v);
    }
    return out;
  }

  /** Whether the inode maps data blocks (files, dirs, slow symlinks). */
  #hasBlocks(node: Node): boolean {
    if (node.kind === 'file' || node.kind === 'dir') return true;
    return node.kind === 'symlink' && !this.#isFastSymlink(node);
  }

  /** As the kernel decides: no extents flag and no blocks besides an xattr block. */
  #isFastSymlink(node: Node): boolean {
    const eaBlocks = node.inode.fileAcl !== 0 ? this.#g.clusterSize / 512 : 0;
    return (node.inode.flags & EXT4_EXTENTS_FL) === 0 && node.blocks512 - eaBlocks === 0;
  }

  async #symlinkTarget(node: Node, signal?: AbortSignal): Promise<ByteString> {
    const size = node.inode.size;
    if (size === 0 || size >= this.#g.blockSize) throw this.#input(`symlink inode ${node.ino} has bad size ${size}`);
    let bytes: Buffer;
    if (this.#isFastSymlink(node)) {
      if (size >= 60) throw this.#input(`fast symlink inode ${node.ino} has size ${size}, more than its 59-byte i_block can hold`);
      bytes = node.inode.iBlock.subarray(0, size);
    } else {
      const parts: Buffer[] = [];
      for await (const b of this.#dataBytes(node, 0, size, signal)) parts.push(b);
      bytes = Buffer.concat(parts);
    }
    if (bytes.includes(0)) throw this.#input(`symlink inode ${node.ino} has a NUL byte in its target`);
    return bytesToByteString(bytes);
  }

  // --- directories ------------------------------------------------------------

  /** All live entries of a directory, validated: '.' and '..' first in block 0, names legal and unique. */
  async #listDir(node: Node, signal?: AbortSignal): Promise<{ parent: number; entries: Ext4DirEntry[] }> {
    const entries: Ext4DirEntry[] = [];
    const names = new Set<string>();
    let parent: number | undefined;
    for await (const e of this.#dirents(node, signal)) {
      const name = bytesToByteString(e.name);
      const where = `directory inode ${node.ino} block ${e.lblk}`;
      if (e.lblk === 0 && e.index === 0) {
        if (name !== '.' || e.inode !== node.ino) throw this.#input(`${where}: first entry is not '.' for itself`);
        continue;
      }
      if (e.lblk === 0 && e.index === 1) {
        if (name !== '..') throw this.#input(`${where}: second entry is not '..'`);
        this.#checkDirentIno(node, e.inode, name);
        parent = e.inode;
        continue;
      }
      if (name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
        throw this.#input(`${where}: illegal name ${JSON.stringify(byteStringToDisplay(name))}`);
      }
      if (names.has(name)) throw this.#input(`${where}: duplicate name ${JSON.stringify(byteStringToDisplay(name))}`);
      names.add(name);
      this.#checkDirentIno(node, e.inode, name);
      entries.push({ name, ino: e.inode, fileType: this.#fileType(node, e.fileType, name) });
    }
    if (parent === undefined) throw this.#input(`directory inode ${node.ino} has no '.' and '..' entries`);
    return { parent, entries };
  }

  /** The '..' entry of a directory (the second entry of block 0). */
  async #dotdot(node: Node, signal?: AbortSignal): Promise<number> {
    for await (const e of this.#dirents(node, signal)) {
      if (e.lblk !== 0 || e.index > 1) break;
      if (e.index === 1 && e.name.length === 2 && e.name[0] === 0x2e && e.name[1] === 0x2e) {
        this.#checkDirentIno(node, e.inode, '..');
        return e.inode;
      }
    }
    throw this.#input(`directory inode ${node.ino} has no '..' entry`);
  }

  /** Linear search for one name (htree dirs included: index blocks read as empty). */
  async #find(node: Node, name: string, signal?: AbortSignal): Promise<number | undefined> {
    const want = byteStringToBytes(name as ByteString);
    for await (const e of this.#dirents(node, signal)) {
      if (e.lblk === 0 && e.index < 2) continue;
      if (e.name.equals(want)) {
        this.#checkDirentIno(node, e.inode, name);
        return e.inode;
      }
    }
    return undefined;
  }

  #checkDirentIno(dir: Node, ino: number, name: string): void {
    if (ino > this.superblock.inodesCount || (ino < this.#g.firstIno && ino !== ROOT_INO)) {
      throw this.#input(`directory inode ${dir.ino}: entry ${JSON.stringify(byteStringToDisplay(name as ByteString))} points to ${ino < this.#g.firstIno ? 'reserved' : 'nonexistent'} inode ${ino}`);
    }
  }

  #fileType(dir: Node, ft: number, name: string): Ext4Kind | 'unknown' {
    if (!this.#g.filetype) return 'unknown';
    const kind = KIND_BY_FT[ft];
    if (kind === undefined || kind === 'unknown') {
      throw this.#input(`directory inode ${dir.ino}: entry ${JSON.stringify(byteStringToDisplay(name as ByteString))} has bad file type ${ft}`);
    }
    return kind;
  }

  /** Raw live dirents of every block, in logical order; checksums checked; holes refused. */
  async *#dirents(node: Node, signal?: AbortSignal): AsyncGenerator<{ lblk: number; index: number; inode: number; name: Buffer; fileType: number }> {
    if (node.kind !== 'dir') throw this.#input(`inode ${node.ino} is not a directory (${node.kind})`);
    const bs = this.#g.blockSize;
    const size = node.inode.size;
    if (size === 0 || size % bs !== 0) throw this.#input(`directory inode ${node.ino} has size ${size}, not a positive multiple of ${bs}`);
    const nblocks = size / bs;
    const indexed = (node.inode.flags & INDEX_FL) !== 0;
    let next = 0;
    for await (const run of this.#runs(node, 0, signal)) {
      if (run.logical >= nblocks) break;
      if (run.logical !== next) throw this.#input(`directory inode ${node.ino} has a hole at block ${next}`);
      for (let k = 0; k < run.length && next < nblocks; k++, next++) {
        throwIfAborted(signal);
        const data = await this.#block(run.physical + k, signal);
        if (this.#g.verify) this.#checkDirBlock(node, next, run.physical + k, data, indexed);
        let entries;
        try {
          entries = decodeDirBlock(data);
        } catch (e) {
          throw this.#input(`directory inode ${node.ino} block ${next} (physical ${run.physical + k}): ${errorText(e)}`);
        }
        for (let index = 0; index < entries.length; index++) {
          const d = entries[index]!;
          yield { lblk: next, index, inode: d.inode, name: d.name, fileType: d.fileType };
        }
      }
    }
    if (next < nblocks) throw this.#input(`directory inode ${node.ino} has a hole at block ${next}`);
  }

  /** metadata_csum: leaves end in a checksum dirent; htree root/nodes carry a dx_tail. */
  #checkDirBlock(node: Node, lblk: number, phys: number, data: Buffer, indexed: boolean): void {
    const bs = data.length;
    const where = `directory inode ${node.ino} block ${lblk} (physical ${phys})`;
    const isDxRoot = indexed && lblk === 0;
    const isDxNode = indexed && lblk > 0 && data.readUInt32LE(0) === 0 && data.readUInt16LE(4) === bs && data.readUInt8(6) === 0;
    if (isDxRoot || isDxNode) {
      const countOffset = isDxRoot ? 24 + data.readUInt8(24 + 5) : 8;
      if (countOffset + 4 > bs) throw this.#input(`${where}: bad htree header`);
      const limit = data.readUInt16LE(countOffset);
      const count = data.readUInt16LE(countOffset + 2);
      const tail = countOffset + 8 * limit;
      if (count > limit || tail + 8 > bs) throw this.#input(`${where}: htree node has no room for its checksum (limit ${limit}, count ${count})`);
      const want = dxNodeChecksum(node.csumSeed, data, countOffset, count, tail);
      const got = data.readUInt32LE(tail + 4);
      if (want !== got) throw this.#integrity(`${where}: htree checksum mismatch (stored 0x${hex(got)}, computed 0x${hex(want)})`);
      return;
    }
    const t = bs - 12;
    if (data.readUInt32LE(t) !== 0 || data.readUInt16LE(t + 4) !== 12 || data.readUInt8(t + 6) !== 0 || data.readUInt8(t + 7) !== 0xde) {
      throw this.#input(`${where}: missing directory block checksum tail`);
    }
    const want = dirLeafChecksum(node.csumSeed, data);
    const got = data.readUInt32LE(t + 8);
    if (want !== got) throw this.#integrity(`${where}: checksum mismatch (stored 0x${hex(got)}, computed 0x${hex(want)})`);
  }

  // --- block mapping ------------------------------------------------------------

  #checkBlocks(ino: number, start: number, count: number, what: string): void {
    if (start <= this.#g.sbBlock || start + count > this.superblock.blocksCount) {
      throw this.#input(`inode ${ino}: ${what} points outside the filesystem (blocks ${start}..${start + count - 1}, filesystem has ${this.superblock.blocksCount})`);
    }
  }

  /** Mapped runs from logical block `from` on (runs that start earlier but reach past it included). */
  #runs(node: Node, from: number, signal?: AbortSignal): AsyncGenerator<Extent> {
    const i = node.inode;
    return inodeRuns(this.#mapContext, { ino: node.ino, flags: i.flags, iBlock: i.iBlock, size: i.size, csumSeed: node.csumSeed }, from, signal);
  }

  // --- file data ------------------------------------------------------------------

  async *#fileBytes(ino: number, range: ReadRange): AsyncGenerator<Buffer> {
    const { signal } = range;
    const start = range.start ?? 0;
    if (!Number.isSafeInteger(start) || start < 0) throw new RangeError(`Cannot read inode ${ino}: bad start ${start}`);
    if (range.end !== undefined && (!Number.isSafeInteger(range.end) || range.end < start)) {
      throw new RangeError(`Cannot read inode ${ino}: bad end ${range.end}`);
    }
    const node = await this.#node(ino, signal);
    if (node.kind !== 'file') throw this.#input(`inode ${ino} is not a regular file (${node.kind})`);
    const stop = Math.min(range.end ?? node.inode.size, node.inode.size);
    yield* this.#dataBytes(node, start, stop, signal);
  }

  /** Bytes [start, stop) of a mapped inode; holes and unwritten extents as zeros. */
  async *#dataBytes(node: Node, start: number, stop: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
    const bs = this.#g.blockSize;
    let pos = start;
    if (pos >= stop) return;
    for await (const run of coalesce(this.#runs(node, Math.floor(pos / bs), signal))) {
      throwIfAborted(signal);
      const runStart = run.logical * bs;
      if (runStart >= stop) break;
      const runEnd = Math.min((run.logical + run.length) * bs, stop);
      if (runEnd <= pos) continue;
      if (runStart > pos) {
        yield* zeros(runStart - pos);
        pos = runStart;
      }
      while (pos < runEnd) {
        const n = Math.min(READ_BYTES, runEnd - pos);
        yield await this.#src.read(run.physical * bs + (pos - runStart), n, signal);
        pos += n;
      }
    }
    if (pos < stop) yield* zeros(stop - pos);
  }

  // --- low level ----------------------------------------------------------------------

  /** Group descriptor `group`, checksum verified, inode table range checked. */
  async #group(group: number, signal?: AbortSignal): Promise<Group> {
    const cached = this.#groups.get(group);
    if (cached !== undefined) return cached;
    const g = this.#g;
    const perBlock = g.blockSize / g.descSize;
    const blockNr = this.#gdtBlock(Math.floor(group / perBlock));
    const buf = await this.#block(blockNr, signal);
    const off = (group % perBlock) * g.descSize;
    const desc = buf.subarray(off, off + g.descSize);
    if (g.verify) {
      const want = groupDescChecksum(g.seed, group, desc);
      const got = desc.readUInt16LE(0x1e);
      if (want !== got) throw this.#integrity(`group ${group} descriptor checksum mismatch (stored 0x${hex(got)}, computed 0x${hex(want)})`);
    }
    const gd = decodeGroupDesc(buf, off, g.descSize);
    const itableUnused = desc.readUInt16LE(0x1c) + (g.descSize >= 64 ? desc.readUInt16LE(0x32) * 65536 : 0);
    if (gd.inodeTable <= g.sbBlock || gd.inodeTable + g.itableBlocks > this.superblock.blocksCount) {
      throw this.#input(`group ${group}: inode table at block ${gd.inodeTable} lies outside the filesystem`);
    }
    if (itableUnused > this.superblock.inodesPerGroup) throw this.#input(`group ${group}: itable_unused ${itableUnused} exceeds inodes per group`);
    const out: Group = { ...gd, itableUnused };
    if (this.#groups.size >= 4096) this.#groups.clear();
    this.#groups.set(group, out);
    return out;
  }

  /** Where GDT block `index` lives: after the superblock, or (meta_bg) in its meta group's first group. */
  #gdtBlock(index: number): number {
    const g = this.#g;
    if (!g.metaBg || index < g.firstMetaBg) return g.sbBlock + 1 + index;
    const group = index * (g.blockSize / g.descSize);
    const first = this.superblock.firstDataBlock + group * this.superblock.blocksPerGroup;
    const adjust = group === 0 && g.blockSize === 1024 && this.superblock.firstDataBlock === 0 ? 1 : 0;
    return first + (this.#hasSuper(group) ? 1 : 0) + adjust;
  }

  #hasSuper(group: number): boolean {
    const g = this.#g;
    if (group === 0) return true;
    if (g.sparseSuper2) return group === g.backupBgs[0] || group === g.backupBgs[1];
    if (group <= 1 || !g.sparseSuper) return true;
    if (group % 2 === 0) return false;
    return isPowerOf(group, 3) || isPowerOf(group, 5) || isPowerOf(group, 7);
  }

  /** One metadata block through a small LRU cache (shared by concurrent readers of the same block). */
  #block(nr: number, signal?: AbortSignal): Promise<Buffer> {
    if (nr >= this.superblock.blocksCount) return Promise.reject(this.#input(`block ${nr} is past the end of the filesystem`));
    let p = this.#cache.get(nr);
    if (p !== undefined) {
      this.#cache.delete(nr);
      this.#cache.set(nr, p);
      return p;
    }
    const bs = this.#g.blockSize;
    p = this.#src.read(nr * bs, bs, signal);
    const mine = p;
    this.#cache.set(nr, mine);
    mine.catch(() => {
      if (this.#cache.get(nr) === mine) this.#cache.delete(nr);
    });
    if (this.#cache.size > this.#cacheMax) {
      const oldest = this.#cache.keys().next();
      if (oldest.done !== true) this.#cache.delete(oldest.value);
    }
    return mine;
  }
}

// --- helpers ----------------------------------------------------------------------------

function hex(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function isPowerOf(n: number, base: number): boolean {
  let x = base;
  while (x < n) x *= base;
  return x === n;
}

/** Kernel rule: a non-zero i_block[0] is the old 8:8 encoding, else i_block[1] holds the new 12:20 one. */
function decodeDevice(iBlock: Buffer): { major: number; minor: number } {
  const old = iBlock.readUInt32LE(0);
  if (old !== 0) return { major: (old >>> 8) & 0xff, minor: old & 0xff };
  const v = iBlock.readUInt32LE(4);
  return { major: (v & 0xfff00) >>> 8, minor: (v & 0xff) | ((v >>> 12) & 0xfff00) };
}

/** Components of a path; a trailing '/' adds '.' so that the last name must be (or lead to) a directory. */
function splitPath(path: string): string[] {
  const parts = path.split('/').filter((c) => c !== '');
  if (parts.length > 0 && path.endsWith('/')) parts.push('.');
  return parts;
}

function normalisePath(path: ByteString): ByteString {
  return ('/' + path.split('/').filter((c) => c !== '' && c !== '.').join('/')) as ByteString;
}

function joinPath(dir: ByteString, name: ByteString): ByteString {
  return (dir === '/' ? `/${name}` : `${dir}/${name}`) as ByteString;
}

function* zeros(n: number): Generator<Buffer> {
  for (let left = n; left > 0; left -= READ_BYTES) yield Buffer.alloc(Math.min(READ_BYTES, left));
}
