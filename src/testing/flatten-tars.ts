/**
 * The layers stage end to end, for tests: tar streams → readLayerEntries →
 * Flattener, with each file's content reduced to its sha256 while it streams.
 * Test-only code.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { Flattener, IMPLICIT_DIR_ATTRS } from '../layers/flatten.js';
import { readLayerEntries } from '../layers/tar.js';
import type { Tree } from '../layers/tree.js';

export interface Content {
  readonly sha256: string;
  readonly size: number;
}

/** `layers` open each layer's uncompressed tar, base first. */
export async function flattenTars(layers: ReadonlyArray<() => Readable>): Promise<Tree<Content>> {
  const f = new Flattener<Content>();
  for (const [i, open] of layers.entries()) {
    f.beginLayer(i);
    for await (const e of readLayerEntries(open(), { label: `layer ${i}` })) {
      if (e.type !== 'file') {
        f.apply(e);
        continue;
      }
      const h = createHash('sha256');
      let size = 0;
      for await (const c of e.data.chunks) {
        h.update(c);
        size += c.length;
      }
      f.apply({ ...e, data: { sha256: h.digest('hex'), size } });
    }
  }
  return f.tree();
}

/**
 * Directories whose mtime umoci sets from the wall clock: those it creates
 * implicitly and those it creates them in (their mtime changes and is not
 * restored). Keys as in tree-snapshot.ts.
 */
export function wallClockDirs<D>(tree: Tree<D>): Set<string> {
  const out = new Set<string>();
  const visit = (key: string, dir: Tree<D>['root']): void => {
    for (const [name, child] of dir.children) {
      if (child.kind !== 'dir') continue;
      const k = key === '' ? name : `${key}/${name}`;
      if (child.attrs === IMPLICIT_DIR_ATTRS) out.add(k).add(key);
      visit(k, child);
    }
  };
  visit('', tree.root);
  return out;
}
