/**
 * Symlink-aware path resolution inside the in-memory tree, the way umoci
 * 0.4.7 resolves an entry's parent directory on disk: with
 * filepath-securejoin's `SecureJoinVFS(root, dir)`. Every component is
 * looked up; a symlink is replaced by its target (an absolute target restarts
 * at the root), `..` is lexical over what is resolved so far, and components
 * that do not exist (or sit under a non-directory) are kept as they are. So a
 * symlink can redirect an entry only to somewhere else inside the tree. Where
 * securejoin would clamp a `..` above the root, we refuse the entry: a layer
 * that writes through `up -> ../../..` is trying to escape. Pure: no I/O.
 */
import { InputError } from '../errors.js';
import type { ByteString } from './bytes.js';
import type { EntryPath } from './entry.js';
import { displayPath, entryPathParts } from './paths.js';
import type { DirInode, Inode } from './tree.js';

/** securejoin's limit on symlinks followed while resolving one path (ELOOP beyond it). */
export const MAX_SYMLINKS = 255;

/**
 * The real location of `path` (all components resolved, the last one too),
 * as components from the root. Throws InputError when following more than
 * MAX_SYMLINKS links (a loop).
 */
export function resolveInTree<D>(root: DirInode<D>, path: EntryPath): ByteString[] {
  const resolved: ByteString[] = [];
  const nodes: Array<Inode<D> | undefined> = []; // nodes[i] is what resolved[0..i] names, if anything
  let pending = entryPathParts(path).reverse(); // a stack: next component last
  let links = 0;
  while (pending.length > 0) {
    const part = pending.pop() as ByteString;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (resolved.length === 0) {
        throw new InputError(`"${displayPath(path)}" resolves through a symbolic link above the image root`);
      }
      resolved.pop();
      nodes.pop();
      continue;
    }
    const parent = nodes.length === 0 ? root : nodes[nodes.length - 1];
    const node = parent?.kind === 'dir' ? parent.children.get(part) : undefined;
    if (node?.kind === 'symlink') {
      if (++links > MAX_SYMLINKS) {
        throw new InputError(`too many levels of symbolic links resolving "${displayPath(path)}" (more than ${MAX_SYMLINKS})`);
      }
      if (node.target.startsWith('/')) {
        resolved.length = 0;
        nodes.length = 0;
      }
      const target = (node.target.split('/') as ByteString[]).reverse();
      pending = pending.concat(target);
      continue;
    }
    resolved.push(part);
    nodes.push(node);
  }
  return resolved;
}

/** The node at resolved components `parts` (no symlinks are followed), or undefined. */
export function lookup<D>(root: DirInode<D>, parts: readonly ByteString[]): Inode<D> | undefined {
  let node: Inode<D> | undefined = root;
  for (const p of parts) {
    if (node?.kind !== 'dir') return undefined;
    node = node.children.get(p);
  }
  return node;
}
