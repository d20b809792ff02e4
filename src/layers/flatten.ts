/**
 * Applies layer entries, layer by layer, to an in-memory tree (oci.md §6).
 * Pure: no fs, no I/O. The rules are umoci 0.4.7's `UnpackEntry`
 * (oci/layer/tar_extract.go), so the result equals `umoci unpack`:
 *
 * - An entry's parent directory is resolved through symlinks, inside the
 *   tree (resolve.ts); missing parents are created with IMPLICIT_DIR_ATTRS;
 *   a parent that is not a directory is an InputError (umoci: "mkdir parent:
 *   not a directory").
 * - An entry over an existing path replaces it (a directory with its whole
 *   subtree), except directory over directory, which only takes the new
 *   attributes (xattrs included) and keeps the children.
 * - Whiteouts remove only what lower layers made: like umoci's
 *   `upperPaths`, we remember every (resolved) path this layer wrote and
 *   its ancestors, and a whiteout or opaque marker removes only paths not in
 *   that set, wherever it sits in the tar. Whiteouts of missing paths do nothing.
 * - A hardlink names the same Inode object as its target (an existing
 *   non-directory; its own header attributes are ignored, as umoci does). A
 *   later entry over one name replaces only that name.
 */
import { InputError } from '../errors.js';
import type { ByteString } from './bytes.js';
import type { Attrs, EntryPath, LayerEntry } from './entry.js';
import { displayPath, splitEntryPath } from './paths.js';
import { lookup, resolveInTree } from './resolve.js';
import type { DirInode, Inode, Tree } from './tree.js';

/**
 * Directories an entry needs but no entry made. umoci creates them with
 * MkdirAll(0777) under the process umask (0755 with the usual 022), owned by
 * root, and the mtime is the wall clock; we use the epoch instead, so that
 * the image depends on its layers alone. The root starts like this too
 * (umoci: mkdir 0755, chown 0:0, mtime = epoch) until a layer has a `./` entry.
 */
export const IMPLICIT_DIR_ATTRS: Attrs = Object.freeze({
  mode: 0o755,
  uid: 0,
  gid: 0,
  mtime: Object.freeze({ sec: 0, nsec: 0 }),
  xattrs: new Map<string, Buffer>(),
});

/**
 * xattrs umoci never applies from a layer (`ignoreXattrs`, tar_generate.go):
 * host-specific labels and overlayfs bookkeeping.
 */
export const IGNORED_XATTRS: ReadonlySet<string> = new Set([
  'security.selinux',
  'system.nfs4_acl',
  'trusted.overlay.opaque',
  'trusted.overlay.redirect',
  'trusted.overlay.origin',
  'trusted.overlay.impure',
  'trusted.overlay.nlink',
  'trusted.overlay.upper',
  'trusted.overlay.metacopy',
]);

export class Flattener<D> {
  readonly #root: DirInode<D> = { kind: 'dir', attrs: IMPLICIT_DIR_ATTRS, children: new Map() };
  #layer = 0;
  /** Resolved paths this layer wrote, and their ancestors ('a', 'a/b', …). */
  readonly #upper = new Set<string>();

  /** Starts the next layer (`index` only labels error messages). */
  beginLayer(index: number): void {
    this.#layer = index;
    this.#upper.clear();
  }

  apply(entry: LayerEntry<D>): void {
    switch (entry.type) {
      case 'opaque':
        this.#whiteout(resolveInTree(this.#root, entry.path), true);
        return;
      case 'whiteout': {
        const { parent, name } = splitEntryPath(entry.path);
        this.#whiteout([...resolveInTree(this.#root, parent), name], false);
        return;
      }
      default:
        this.#add(entry);
    }
  }

  tree(): Tree<D> {
    return { root: this.#root };
  }

  #add(entry: Exclude<LayerEntry<D>, { type: 'whiteout' | 'opaque' }>): void {
    const { parent, name } = splitEntryPath(entry.path);
    if (name === '') {
      // A root entry may only set the root's attributes (umoci refuses to change its type).
      if (entry.type !== 'dir') throw this.#error(`the entry for the root directory is a ${entry.type}, not a directory`);
      this.#root.attrs = keptAttrs(entry.attrs);
      return;
    }
    const dirParts = resolveInTree(this.#root, parent);
    const dir = this.#mkdirAll(dirParts, entry.path);
    const existing = dir.children.get(name);
    if (!(existing?.kind === 'dir' && entry.type === 'dir')) dir.children.delete(name);

    let node: Inode<D>;
    switch (entry.type) {
      case 'dir':
        if (existing?.kind === 'dir') {
          existing.attrs = keptAttrs(entry.attrs);
          node = existing;
        } else {
          node = { kind: 'dir', attrs: keptAttrs(entry.attrs), children: new Map() };
        }
        break;
      case 'file':
        node = { kind: 'file', attrs: keptAttrs(entry.attrs), data: entry.data };
        break;
      case 'symlink':
        // Linux gives every symlink mode 0777 (umoci does not chmod them).
        node = { kind: 'symlink', attrs: { ...keptAttrs(entry.attrs), mode: 0o777 }, target: entry.target };
        break;
      case 'hardlink':
        node = this.#linkTarget(entry.path, entry.target); // after the clobber, as umoci does
        break;
      case 'char':
      case 'block':
        node = { kind: entry.type, attrs: keptAttrs(entry.attrs), major: entry.major, minor: entry.minor };
        break;
      case 'fifo':
        node = { kind: 'fifo', attrs: keptAttrs(entry.attrs) };
        break;
    }
    dir.children.set(name, node);

    let key = '';
    for (const p of dirParts) {
      key = key === '' ? p : `${key}/${p}`;
      this.#upper.add(key);
    }
    this.#upper.add(key === '' ? name : `${key}/${name}`);
  }

  /** umoci's MkdirAll of the resolved parent: creates what is missing, refuses non-directories. */
  #mkdirAll(parts: readonly ByteString[], entryPath: EntryPath): DirInode<D> {
    let dir = this.#root;
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i] as ByteString;
      const child = dir.children.get(p);
      if (child === undefined) {
        const made: DirInode<D> = { kind: 'dir', attrs: IMPLICIT_DIR_ATTRS, children: new Map() };
        dir.children.set(p, made);
        dir = made;
      } else if (child.kind === 'dir') {
        dir = child;
      } else {
        const at = parts.slice(0, i + 1).join('/') as ByteString;
        throw this.#error(`"${displayPath(entryPath)}": its parent "${displayPath(at)}" is a ${child.kind}, not a directory`);
      }
    }
    return dir;
  }

  #linkTarget(path: EntryPath, target: EntryPath): Inode<D> {
    const { parent, name } = splitEntryPath(target);
    const node = name === '' ? this.#root : lookup(this.#root, [...resolveInTree(this.#root, parent), name]);
    const what = `hardlink "${displayPath(path)}" → "${displayPath(target)}"`;
    if (node === undefined) throw this.#error(`${what}: the target does not exist`);
    if (node.kind === 'dir') throw this.#error(`${what}: the target is a directory`);
    return node;
  }

  /**
   * umoci's ociWhiteout: walk the path; remove what this layer did not write;
   * descend into what it did. An opaque marker keeps the directory itself.
   */
  #whiteout(parts: readonly ByteString[], opaque: boolean): void {
    const node = lookup(this.#root, parts);
    if (node === undefined) return;
    const parent = parts.length === 0 ? undefined : lookup(this.#root, parts.slice(0, -1));
    this.#walk(node, parts.join('/'), parent?.kind === 'dir' ? parent : undefined, parts[parts.length - 1], opaque);
  }

  #walk(node: Inode<D>, key: string, parent: DirInode<D> | undefined, name: ByteString | undefined, keep: boolean): void {
    if (!keep && !this.#upper.has(key)) {
      if (parent !== undefined && name !== undefined) parent.children.delete(name);
      return;
    }
    if (node.kind !== 'dir') return;
    for (const [childName, child] of [...node.children]) {
      this.#walk(child, key === '' ? childName : `${key}/${childName}`, node, childName, false);
    }
  }

  #error(msg: string): InputError {
    return new InputError(`layer ${this.#layer}: ${msg}`);
  }
}

function keptAttrs(a: Attrs): Attrs {
  let drop = false;
  for (const k of a.xattrs.keys()) if (IGNORED_XATTRS.has(k)) drop = true;
  if (!drop) return a;
  return { ...a, xattrs: new Map([...a.xattrs].filter(([k]) => !IGNORED_XATTRS.has(k))) };
}
