/**
 * Benchmark 3: dedup across related images, the layout's reason to exist.
 * For py-after-base and py-app-after-py: the chunks (and MiB) the derived
 * image adds to a store already holding its parent's, next to the
 * uncompressed size of the layers it adds. Variants: chunkyard with
 * --shadowed keep at 64K..4M chunks, --shadowed zero at 512K, and the naive
 * baseline (`umoci unpack` + `mke2fs -d`) cut at the same sizes.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { run, tmpDir } from '../src/testing/tools.js';
import { mke2fs } from './build.js';
import { CORPUS_TAGS, corpus, readImage, uncompressedBytes, type BenchImage } from './corpus.js';
import { MiB, chunkBytes, chunkyardCmd, hashChunks, have, log, newChunks, printTable, round, type ChunkSet } from './util.js';

const CHUNK_SIZES = [64 * 1024, 256 * 1024, 512 * 1024, 1024 * 1024, 4 * 1024 * 1024];
const DEFAULT_CHUNK = 512 * 1024;

interface Variant {
  readonly name: string;
  readonly chunkSize: number;
  /** Chunk sets by tag. */
  readonly sets: Map<string, ChunkSet>;
}

export interface DedupPair {
  readonly variant: string;
  readonly chunkSize: number;
  readonly parent: string;
  readonly child: string;
  /** Distinct non-zero chunks of the child image, and their MiB. */
  readonly childChunks: number;
  readonly childMiB: number;
  /** What the child adds to a store holding the parent. */
  readonly newChunks: number;
  readonly newMiB: number;
  /** Uncompressed tar MiB of the layers the child has and the parent lacks. */
  readonly addedLayersMiB: number;
  /** newMiB / addedLayersMiB: 1.0 would be "stores just its own layers". */
  readonly newPerAdded: number;
  /** Share of the child's distinct non-zero chunks already in the parent, %. */
  readonly sharedPct: number;
}

function sizeName(n: number): string {
  return n >= MiB ? `${n / MiB}M` : `${n / 1024}K`;
}

async function chunkyardSets(layout: string, tags: readonly string[], shadowed: 'keep' | 'zero', chunkSize: number, work: string): Promise<Variant> {
  const sets = new Map<string, ChunkSet>();
  for (const tag of tags) {
    const out = path.join(work, `${tag}.ext4`);
    const [cmd, args] = chunkyardCmd('build', `oci:${layout}:${tag}`, '-o', out, '--shadowed', shadowed, '--chunk-size', sizeName(chunkSize));
    await run(cmd, args);
    sets.set(tag, await hashChunks(out, chunkSize));
    await rm(out, { force: true });
  }
  return { name: `chunkyard ${shadowed}`, chunkSize, sets };
}

/** mke2fs -d images of the umoci trees, each cut at every chunk size. */
async function naiveSets(layout: string, tags: readonly string[], work: string): Promise<Variant[]> {
  const variants = CHUNK_SIZES.map((chunkSize) => ({ name: 'umoci+mke2fs -d', chunkSize, sets: new Map<string, ChunkSet>() }));
  for (const tag of tags) {
    const bundle = path.join(work, 'bundle');
    await run('umoci', ['unpack', '--image', `${layout}:${tag}`, bundle]);
    const rootfs = path.join(bundle, 'rootfs');
    const treeBytes = Number((await run('du', ['-sb', rootfs])).stdout.split(/\s/)[0]);
    const out = path.join(work, `${tag}.mke2fs.ext4`);
    await mke2fs(rootfs, out, treeBytes);
    await rm(bundle, { recursive: true, force: true });
    for (const v of variants) v.sets.set(tag, await hashChunks(out, v.chunkSize));
    await rm(out, { force: true });
  }
  return variants;
}

async function addedLayersBytes(parent: BenchImage, child: BenchImage): Promise<number> {
  const have = new Set(parent.layers.map((l) => l.diffId));
  return uncompressedBytes(child.layers.filter((l) => !have.has(l.diffId)));
}

export async function benchDedup(): Promise<DedupPair[]> {
  const c = corpus();
  if ('missing' in c) {
    log(`dedup: skipped, no corpus at ${c.missing}`);
    return [];
  }
  const images = new Map<string, BenchImage>();
  for (const tag of CORPUS_TAGS) {
    const img = await readImage(c.dir, tag);
    if (img === undefined) log(`dedup: no tag ${tag} in ${c.dir}`);
    else images.set(tag, img);
  }
  const tags = [...images.keys()];
  const pairs: [string, string][] = [
    ['base', 'py'],
    ['py', 'py-app'],
  ].filter(([p, ch]) => images.has(p!) && images.has(ch!)) as [string, string][];
  if (pairs.length === 0) {
    log('dedup: skipped, needs base+py or py+py-app in the corpus');
    return [];
  }
  const work = await tmpDir('bench-dedup');
  const variants: Variant[] = [];
  try {
    for (const size of CHUNK_SIZES) {
      log(`dedup: chunkyard keep, ${sizeName(size)} chunks`);
      variants.push(await chunkyardSets(c.dir, tags, 'keep', size, work.path));
    }
    log('dedup: chunkyard zero, 512K chunks');
    variants.push(await chunkyardSets(c.dir, tags, 'zero', DEFAULT_CHUNK, work.path));
    if (have('umoci') && have('mke2fs')) {
      log('dedup: umoci unpack + mke2fs -d');
      variants.push(...(await naiveSets(c.dir, tags, work.path)));
    } else {
      log('dedup: umoci or mke2fs missing, skipping the naive baseline');
    }
  } finally {
    await work.cleanup();
  }

  const results: DedupPair[] = [];
  for (const v of variants) {
    for (const [p, ch] of pairs) {
      const parent = v.sets.get(p)!;
      const child = v.sets.get(ch)!;
      const added = await addedLayersBytes(images.get(p)!, images.get(ch)!);
      const n = newChunks(parent, child);
      results.push({
        variant: v.name,
        chunkSize: v.chunkSize,
        parent: p,
        child: ch,
        childChunks: child.chunks.size,
        childMiB: round(chunkBytes(child) / MiB, 1),
        newChunks: n.chunks,
        newMiB: round(n.bytes / MiB, 1),
        addedLayersMiB: round(added / MiB, 1),
        newPerAdded: round(n.bytes / added, 2),
        sharedPct: round((100 * (child.chunks.size - n.chunks)) / child.chunks.size, 1),
      });
    }
  }
  return results;
}

export function printDedupTable(results: readonly DedupPair[]): void {
  const rows: (string | number)[][] = [['layout', 'chunk', 'derived', 'chunks', 'MiB', 'new chunks', 'new MiB', 'added layers MiB', 'new/added', 'shared %']];
  for (const r of results) {
    rows.push([
      r.variant,
      sizeName(r.chunkSize),
      `${r.child} after ${r.parent}`,
      r.childChunks,
      r.childMiB,
      r.newChunks,
      r.newMiB,
      r.addedLayersMiB,
      r.newPerAdded,
      r.sharedPct,
    ]);
  }
  printTable('Dedup: what a derived image adds to a store holding its parent (non-zero chunks, distinct)', rows);
}
