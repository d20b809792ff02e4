/**
 * Benchmark 2: memory stays flat as images grow. Builds the generated
 * >2 GiB image (bench/gen-big.ts) and sets its peak RSS beside the corpus
 * images'. Same measurements as benchmark 1 minus the naive pipeline (umoci
 * + mke2fs of 2.4 GB would take minutes per run and say nothing new). The
 * two part images (many small files; few huge files) are built once each,
 * for peak RSS only, to show which of the two memory grows with.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { tmpDir } from '../src/testing/tools.js';
import { measureImage, type BuildRun } from './build.js';
import { readImage, uncompressedBytes } from './corpus.js';
import { BIG_PARTS, ensureBigImage } from './gen-big.js';
import { chunkyardCmd, log, printTable, round, timeChild } from './util.js';

export interface MemoryRow {
  readonly image: string;
  readonly tarBytes: number;
  readonly imageBytes: number;
  readonly files: number;
  readonly peakRssMiB: number;
}

export interface BigResult extends BuildRun {
  readonly generateSeconds?: number;
  /** One build each of the part images. */
  readonly parts: readonly MemoryRow[];
}

export async function benchBig(): Promise<BigResult | undefined> {
  const info = await ensureBigImage();
  const image = await readImage(info.dir, info.tag);
  if (image === undefined) {
    log(`big: no tag ${info.tag} in ${info.dir}; delete the directory to regenerate`);
    return undefined;
  }
  const work = await tmpDir('bench-big');
  try {
    const r = await measureImage(image, 'big (generated)', work.path, { naive: false });
    const parts: MemoryRow[] = [];
    for (const part of BIG_PARTS) {
      const img = await readImage(info.dir, part.tag);
      if (img === undefined) continue;
      log(`big: ${part.tag} (${part.what}), one build for peak RSS`);
      const out = path.join(work.path, `${part.tag}.ext4`);
      const [cmd, args] = chunkyardCmd('build', `oci:${info.dir}:${part.tag}`, '-o', out, '--json');
      const b = await timeChild(cmd, args);
      await rm(out, { force: true });
      const summary = JSON.parse(b.stdout) as { imageBytes: number; files: number };
      parts.push({ image: `${part.tag} (${part.what})`, tarBytes: await uncompressedBytes(img.layers), imageBytes: summary.imageBytes, files: summary.files, peakRssMiB: round(b.peakKiB / 1024, 1) });
    }
    return { ...r, parts, ...(info.generateSeconds !== undefined ? { generateSeconds: info.generateSeconds } : {}) };
  } finally {
    await work.cleanup();
  }
}

export function memoryRow(r: BuildRun): MemoryRow {
  return { image: r.image, tarBytes: r.floor.uncompressedBytes, imageBytes: r.build.imageBytes, files: r.build.files, peakRssMiB: r.build.peakRssMiB };
}

/** Peak RSS against image size and file count, corpus and big side by side. */
export function printMemoryTable(rows: readonly MemoryRow[]): void {
  const table: (string | number)[][] = [['image', 'tar MB', 'image MB', 'files', 'peak RSS MiB']];
  for (const r of [...rows].sort((a, b) => a.tarBytes - b.tarBytes)) {
    table.push([r.image, round(r.tarBytes / 1e6, 0), round(r.imageBytes / 1e6, 0), r.files ?? NaN, r.peakRssMiB]);
  }
  printTable('Memory: peak RSS of `chunkyard build` as the image grows (target < 200 MiB, flat)', table);
}
