import type { ByteString } from './bytes.js';

/**
 * What a layer's tar says, one entry at a time, after the tar reader has
 * applied PAX/GNU headers and normalised the path. The flattener consumes
 * these; it never sees tar headers or file bytes.
 */

export interface Timestamp {
  /** Seconds since the epoch (may be negative). */
  readonly sec: number;
  /** 0..999_999_999 */
  readonly nsec: number;
}

export interface Attrs {
  /** Permission bits incl. setuid/setgid/sticky (mode & 0o7777). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtime: Timestamp;
  /** Extended attributes from `SCHILY.xattr.*`, by full name (e.g. `security.capability`). */
  readonly xattrs: ReadonlyMap<string, Buffer>;
}

/**
 * A path relative to the image root: components joined by '/', no leading
 * '/', no '.', '..' or empty components. The root itself is ''.
 */
export type EntryPath = ByteString;

/** `D` is whatever stands for a regular file's bytes once they are stored (see build/place.ts). */
export type LayerEntry<D> =
  | { readonly type: 'file'; readonly path: EntryPath; readonly attrs: Attrs; readonly data: D }
  | { readonly type: 'dir'; readonly path: EntryPath; readonly attrs: Attrs }
  | { readonly type: 'symlink'; readonly path: EntryPath; readonly attrs: Attrs; readonly target: ByteString }
  /** `target` is a normalised EntryPath of an existing non-directory. */
  | { readonly type: 'hardlink'; readonly path: EntryPath; readonly attrs: Attrs; readonly target: EntryPath }
  | { readonly type: 'char' | 'block'; readonly path: EntryPath; readonly attrs: Attrs; readonly major: number; readonly minor: number }
  | { readonly type: 'fifo'; readonly path: EntryPath; readonly attrs: Attrs }
  /** `dir/.wh.NAME`: removes `path` (= dir/NAME) as lower layers left it. */
  | { readonly type: 'whiteout'; readonly path: EntryPath }
  /** `dir/.wh..wh..opq`: hides every child of `path` (= dir) that lower layers made. */
  | { readonly type: 'opaque'; readonly path: EntryPath };

export type EntryType = LayerEntry<unknown>['type'];
