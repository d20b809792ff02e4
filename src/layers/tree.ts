import type { ByteString } from './bytes.js';
import type { Attrs } from './entry.js';

/**
 * The flattened image: what every layer applied in order leaves behind.
 * Metadata only; a regular file's bytes are referred to by `D` (where they sit
 * in the output image). One Inode object reached by several names is a hard
 * link set. Directories are never shared.
 */
export type Inode<D> = FileInode<D> | DirInode<D> | SymlinkInode | DeviceInode | FifoInode;

export interface FileInode<D> {
  readonly kind: 'file';
  attrs: Attrs;
  data: D;
}
export interface DirInode<D> {
  readonly kind: 'dir';
  attrs: Attrs;
  /** Insertion order is meaningless; writers sort by byte order. */
  readonly children: Map<ByteString, Inode<D>>;
}
export interface SymlinkInode {
  readonly kind: 'symlink';
  attrs: Attrs;
  readonly target: ByteString;
}
export interface DeviceInode {
  readonly kind: 'char' | 'block';
  attrs: Attrs;
  readonly major: number;
  readonly minor: number;
}
export interface FifoInode {
  readonly kind: 'fifo';
  attrs: Attrs;
}

export interface Tree<D> {
  readonly root: DirInode<D>;
}
