/**
 * Feature flags by name, for messages and for deciding what a reader can
 * handle (linux fs/ext4/ext4.h, e2fsprogs lib/e2p/feature.c names).
 */

export const COMPAT_SPARSE_SUPER2 = 0x0200;

export const INCOMPAT = {
  compression: 0x0001,
  filetype: 0x0002,
  needs_recovery: 0x0004,
  journal_dev: 0x0008,
  meta_bg: 0x0010,
  extent: 0x0040,
  '64bit': 0x0080,
  mmp: 0x0100,
  flex_bg: 0x0200,
  ea_inode: 0x0400,
  dirdata: 0x1000,
  metadata_csum_seed: 0x2000,
  large_dir: 0x4000,
  inline_data: 0x8000,
  encrypt: 0x10000,
  casefold: 0x20000,
} as const;

export const RO_COMPAT = {
  sparse_super: 0x0001,
  large_file: 0x0002,
  btree_dir: 0x0004,
  huge_file: 0x0008,
  uninit_bg: 0x0010, // a.k.a. gdt_csum
  dir_nlink: 0x0020,
  extra_isize: 0x0040,
  quota: 0x0100,
  bigalloc: 0x0200,
  metadata_csum: 0x0400,
  replica: 0x0800,
  read_only: 0x1000,
  project: 0x2000,
  shared_blocks: 0x4000,
  verity: 0x8000,
  orphan_present: 0x10000,
} as const;

/**
 * Incompat features a read-only reader handles: they change where things are
 * (64bit, meta_bg, flex_bg), add nothing to read (mmp, checksum seed), or
 * allow bigger directories that a linear scan reads anyway (large_dir).
 */
export const READER_INCOMPAT =
  INCOMPAT.filetype | INCOMPAT.meta_bg | INCOMPAT.extent | INCOMPAT['64bit'] | INCOMPAT.mmp | INCOMPAT.flex_bg |
  INCOMPAT.metadata_csum_seed | INCOMPAT.large_dir;

/** Names of the bits set in `flags` per `table`; unknown bits as hex. */
export function featureNames(flags: number, table: Readonly<Record<string, number>>): string[] {
  const names: string[] = [];
  let rest = flags >>> 0;
  for (const [name, bit] of Object.entries(table)) {
    if ((rest & bit) !== 0) {
      names.push(name);
      rest = (rest & ~bit) >>> 0;
    }
  }
  for (let bit = 1; rest !== 0 && bit <= 0x80000000; bit = bit * 2) {
    if ((rest & bit) !== 0) {
      names.push(`0x${bit.toString(16)}`);
      rest = (rest & ~bit) >>> 0;
    }
  }
  return names;
}
