/** ext4 on-disk constants used by the writer and the reader. Facts: ../shared/reference/ext4.md. */

export const BLOCK_SIZE = 4096;
export const LOG_BLOCK_SIZE = 2; // 1024 << 2
export const BLOCKS_PER_GROUP = 32768; // 8 bits per byte of one bitmap block
export const INODE_SIZE = 256;
export const INODES_PER_BLOCK = BLOCK_SIZE / INODE_SIZE;
export const EXTRA_ISIZE = 32;
export const GROUP_DESC_SIZE = 32; // no 64bit feature
export const SUPERBLOCK_OFFSET = 1024;
export const EXT4_MAGIC = 0xef53;

export const ROOT_INO = 2;
export const LOST_FOUND_INO = 11;
export const FIRST_INO = 11;
export const MAX_LINKS = 65000;

export const COMPAT_EXT_ATTR = 0x0008;
export const COMPAT_SPARSE_SUPER2 = 0x0200;
export const INCOMPAT_FILETYPE = 0x0002;
export const INCOMPAT_EXTENTS = 0x0040;
export const INCOMPAT_FLEX_BG = 0x0200;
export const RO_COMPAT_LARGE_FILE = 0x0002;
export const RO_COMPAT_HUGE_FILE = 0x0008;
export const RO_COMPAT_DIR_NLINK = 0x0020;
export const RO_COMPAT_EXTRA_ISIZE = 0x0040;

export const FEATURE_COMPAT = COMPAT_EXT_ATTR | COMPAT_SPARSE_SUPER2;
export const FEATURE_INCOMPAT = INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_FLEX_BG;
export const FEATURE_RO_COMPAT =
  RO_COMPAT_LARGE_FILE | RO_COMPAT_HUGE_FILE | RO_COMPAT_DIR_NLINK | RO_COMPAT_EXTRA_ISIZE;

/** i_mode file-type bits. */
export const S_IFMT = 0o170000;
export const S_IFIFO = 0o010000;
export const S_IFCHR = 0o020000;
export const S_IFDIR = 0o040000;
export const S_IFBLK = 0o060000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFSOCK = 0o140000;

export const EXT4_EXTENTS_FL = 0x80000;

/** Directory entry file_type byte. */
export const FT_UNKNOWN = 0;
export const FT_REG = 1;
export const FT_DIR = 2;
export const FT_CHR = 3;
export const FT_BLK = 4;
export const FT_FIFO = 5;
export const FT_SOCK = 6;
export const FT_SYMLINK = 7;

/** Longest symlink target kept in i_block itself ("fast" symlink). */
export const FAST_SYMLINK_MAX = 59;
