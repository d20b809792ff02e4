/**
 * Benchmark 1: `chunkyard build` against the decompression floor and against
 * the naive pipeline (`umoci unpack` + `mke2fs -d`), per corpus tag.
 * Measurements are interleaved run by run so machine noise hits all alike.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { run, tmpDir } from '../src/testing/tools.js';
import { CORPUS_TAGS, cliDecompressors, cliGunzip, corpus, nodeGunzip, readImage, type BenchImage } from './corpus.js';
import { chunkyardCmd, have, log, printTable, round, settings, stat, timeChild, timed, type Stat } from './util.js';

export interface FloorResult {
  readonly uncompressedBytes: number;
  readonly compressedBytes: number;
  /** Seconds per decompressor; `floor` is the fastest median. */
  readonly methods: Record<string, Stat>;
  readonly floor: { readonly method: string; readonly seconds: number; readonly mbps: number };
}

export interface BuildRun {
  readonly image: string;
  readonly layers: number;
  readonly floor: FloorResult;
  readonly build: {
    readonly seconds: Stat;
    /** The build's own --json `seconds` (no node start-up). */
    readonly internalSeconds: Stat;
    readonly peakRssMiB: number;
    readonly imageBytes: number;
    /** Regular files in the image (from the build's --json summary). */
    readonly files: number;
    /** Uncompressed layer MB per wall second. */
    readonly mbps: number;
    /** build wall median / floor median; the target is ≤ 1.0. */
    readonly ratioToFloor: number;
  };
  readonly naive?: {
    readonly unpackSeconds: Stat;
    readonly mkfsSeconds: Stat;
    readonly seconds: Stat;
    readonly treeBytes: number;
    /** naive median / chunkyard build median. */
    readonly ratioToBuild: number;
  };
}

/** Times decompression floor, build and (if given a tmp dir and the tools) the naive pipeline for one image, `settings.runs` times. */
export async function measureImage(image: BenchImage, label: string, work: string, opts: { naive: boolean }): Promise<BuildRun> {
  const decompressors = cliDecompressors();
  const floorSamples: Record<string, number[]> = { 'node zlib': [] };
  for (const d of decompressors) floorSamples[d.name] = [];
  const buildS: number[] = [];
  const internalS: number[] = [];
  const unpackS: number[] = [];
  const mkfsS: number[] = [];
  let peakKiB = 0;
  let imageBytes = 0;
  let files = 0;
  let uncompressedBytes = 0;
  let treeBytes = 0;
  const ref = `oci:${image.layout}:${image.tag}`;
  const out = path.join(work, `${image.tag}.ext4`);
  for (let i = 0; i < settings.runs; i++) {
    log(`${label}: run ${i + 1}/${settings.runs}`);
    const g = await nodeGunzip(image.layers);
    floorSamples['node zlib']!.push(g.seconds);
    uncompressedBytes = g.bytes;
    for (const d of decompressors) floorSamples[d.name]!.push(await cliGunzip(d, image.layers));

    const [cmd, args] = chunkyardCmd('build', ref, '-o', out, '--json');
    const b = await timeChild(cmd, args);
    buildS.push(b.seconds);
    peakKiB = Math.max(peakKiB, b.peakKiB);
    const summary = JSON.parse(b.stdout) as { imageBytes: number; files: number; seconds: number };
    internalS.push(summary.seconds);
    imageBytes = summary.imageBytes;
    files = summary.files;
    await rm(out, { force: true });

    if (opts.naive) {
      const bundle = path.join(work, 'bundle');
      const u = await timed(() => run('umoci', ['unpack', '--image', `${image.layout}:${image.tag}`, bundle]));
      treeBytes = Number((await run('du', ['-sb', path.join(bundle, 'rootfs')])).stdout.split(/\s/)[0]);
      const naiveOut = path.join(work, `${image.tag}.mke2fs.ext4`);
      const m = await timed(() => mke2fs(path.join(bundle, 'rootfs'), naiveOut, treeBytes));
      unpackS.push(u.seconds);
      mkfsS.push(m.seconds);
      await rm(bundle, { recursive: true, force: true });
      await rm(naiveOut, { force: true });
    }
  }
  const methods: Record<string, Stat> = {};
  for (const [k, v] of Object.entries(floorSamples)) methods[k] = stat(v);
  const [method, best] = Object.entries(methods).sort((a, b) => a[1].median - b[1].median)[0]!;
  const floor = { method, seconds: best.median, mbps: round(uncompressedBytes / 1e6 / best.median, 1) };
  const seconds = stat(buildS);
  const result: BuildRun = {
    image: label,
    layers: image.layers.length,
    floor: { uncompressedBytes, compressedBytes: image.layers.reduce((s, l) => s + l.size, 0), methods, floor },
    build: {
      seconds,
      internalSeconds: stat(internalS),
      peakRssMiB: round(peakKiB / 1024, 1),
      imageBytes,
      files,
      mbps: round(uncompressedBytes / 1e6 / seconds.median, 1),
      ratioToFloor: round(seconds.median / floor.seconds, 2),
    },
  };
  if (!opts.naive) return result;
  const total = stat(unpackS.map((u, i) => u + (mkfsS[i] ?? 0)));
  return { ...result, naive: { unpackSeconds: stat(unpackS), mkfsSeconds: stat(mkfsS), seconds: total, treeBytes, ratioToBuild: round(total.median / seconds.median, 2) } };
}

/** `mke2fs -d` of a tree into an image 1.5× the tree's size (4 KiB blocks, like chunkyard's). */
export async function mke2fs(rootfs: string, out: string, treeBytes: number): Promise<void> {
  const kib = Math.ceil((treeBytes * 1.5) / 1024 / 4) * 4 + 16 * 1024;
  await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-d', rootfs, out, `${kib}k`]);
}

export async function benchBuild(): Promise<BuildRun[]> {
  const c = corpus();
  if ('missing' in c) {
    log(`build: skipped, no corpus at ${c.missing}`);
    return [];
  }
  const naive = settings.naive && have('umoci') && have('mke2fs');
  if (!settings.naive) log('build: --no-naive, skipping the naive pipeline');
  else if (!naive) log('build: umoci or mke2fs missing, skipping the naive pipeline');
  const work = await tmpDir('bench-build');
  const results: BuildRun[] = [];
  try {
    for (const tag of CORPUS_TAGS) {
      const image = await readImage(c.dir, tag);
      if (image === undefined) {
        log(`build: skipped ${tag}, no such tag in ${c.dir}`);
        continue;
      }
      results.push(await measureImage(image, tag, work.path, { naive }));
    }
  } finally {
    await work.cleanup();
  }
  return results;
}

export function printBuildTable(title: string, results: readonly BuildRun[]): void {
  const rows: (string | number)[][] = [
    ['image', 'layers', 'tar MB', 'floor s', 'floor by', 'floor MB/s', 'build s', 'min', 'build/floor', 'build MB/s', 'peak RSS MiB', 'naive s', 'naive/build'],
  ];
  for (const r of results) {
    rows.push([
      r.image,
      r.layers,
      round(r.floor.uncompressedBytes / 1e6, 1),
      r.floor.floor.seconds,
      r.floor.floor.method,
      r.floor.floor.mbps,
      r.build.seconds.median,
      r.build.seconds.min,
      r.build.ratioToFloor,
      r.build.mbps,
      r.build.peakRssMiB,
      r.naive?.seconds.median ?? NaN,
      r.naive?.ratioToBuild ?? NaN,
    ]);
  }
  printTable(title, rows);
}
