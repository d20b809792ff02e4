/**
 * Benchmark 4 (issue #3): `chunkyard convert` into a store, per corpus tag,
 * converted in order base → py → py-app into one fresh file store per run
 * (so py dedupes against base and py-app against py).
 *
 *  - wall time and peak RSS of `convert` (child process, as `build` is timed
 *    in build.ts) against the same decompression floor and against `build`
 *    alone: what chunking, sealing and storing add on top;
 *  - per-stage throughput, in process: build to a file; chunkFile +
 *    sealChunk on one thread; the sealing pool; the file store's put;
 *  - dedup: the bytes each image adds to the store next to the tar bytes of
 *    its own layers, and manifest bytes per image byte;
 *  - `stats` (the dry run) over [base, py, py-app] on a fresh store: its
 *    time, and whether its per-image `chunks.new` is what convert uploads;
 *  - the same convert against s3rver on loopback (skipped if it can't start).
 *
 * Timings are repeated `settings.runs` times, interleaved run by run (floor,
 * build, convert, stages; per image), like build.ts. Benchmarks report; they
 * never assert.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { chunkFile } from '../src/chunks/chunker.js';
import { createSealer, defaultThreads } from '../src/chunks/pool.js';
import { sealChunk } from '../src/chunks/seal.js';
import {
  DEFAULT_CHUNK_SIZE,
  buildImage,
  convertImage,
  generateKeys,
  openImage,
  openStore,
  writeKeyFile,
  type ConvertResult,
  type Keys,
  type Store,
} from '../src/index.js';
import { s3rverProblem, startS3Server, type S3TestServer } from '../src/testing/s3-server.js';
import { run, tmpDir } from '../src/testing/tools.js';
import { CORPUS_TAGS, cliDecompressors, cliGunzip, corpus, nodeGunzip, readImage, uncompressedBytes, type BenchImage } from './corpus.js';
import { MiB, chunkyardCmd, log, printTable, round, settings, stat, timeChild, timed, type Stat } from './util.js';

const CHUNK = DEFAULT_CHUNK_SIZE;
/** Chunks in flight, as convert's default (`concurrency`). */
const CONCURRENCY = 8;
/** Tags converted into s3rver, in order (py shows the listing that answers presence). */
const S3_TAGS = ['base', 'py'] as const;

type Counts = ConvertResult['chunks'];
type Requests = ConvertResult['requests'];

/** `convert --json`: the result without its build summary, plus files and layers. */
type ConvertJson = Omit<ConvertResult, 'build'> & { readonly files: number; readonly layers: number };

/** `stats --json`. */
interface StatsJson {
  readonly images: readonly { readonly source: string; readonly imageBytes: number; readonly chunks: Counts; readonly requests: Requests }[];
}

export interface StageResult {
  readonly seconds: Stat;
  /** Image MB (10^6 bytes) per median second. */
  readonly mbps: number;
}

export interface ConvertImageRun {
  readonly image: string;
  readonly layers: number;
  /** Uncompressed bytes of all the image's layers. */
  readonly tarBytes: number;
  readonly imageBytes: number;
  readonly floor: { readonly method: string; readonly seconds: number; readonly methods: Record<string, Stat> };
  readonly build: { readonly seconds: Stat; readonly peakRssMiB: number };
  readonly convert: {
    readonly seconds: Stat;
    readonly peakRssMiB: number;
    /** convert median / floor median. */
    readonly ratioToFloor: number;
    /** convert median / build median. */
    readonly ratioToBuild: number;
    /** convert median − build median: chunk + seal + store on top of the build. */
    readonly extraSeconds: number;
    /** Tar MB per convert second. */
    readonly mbps: number;
  };
  /**
   * In process, MB/s of image bytes. `filePut`: only the puts, one at a time into a fresh file store, plus
   * the final sync. `sealPut8`: wall time of chunkFile + sealChunk inline + put with CONCURRENCY in flight, + sync.
   */
  readonly stages: {
    readonly build: StageResult;
    readonly chunkSealInline: StageResult;
    readonly sealPool: StageResult;
    readonly filePut: StageResult;
    readonly sealPut8: StageResult;
  };
  readonly dedup: {
    /** The image converted before this one into the same store, or null (the first). */
    readonly after: string | null;
    readonly chunks: Counts;
    readonly newBytes: number;
    /** Tar bytes of the layers this image has and `after` lacks (by diff_id); all its layers for the first. */
    readonly ownLayersBytes: number;
    /** newBytes / ownLayersBytes. */
    readonly newPerOwn: number;
    readonly manifestBytes: number;
    readonly manifestPerImageByte: number;
    readonly requests: Requests;
    /** Whether every run's convert reported the same chunk counts. */
    readonly sameEveryRun: boolean;
  };
}

export interface StatsCheck {
  readonly image: string;
  readonly statsNew: number;
  readonly convertNew: number;
  readonly equal: boolean;
  readonly statsRequests: Requests;
  readonly convertRequests: Requests;
}

export type S3Result =
  | { readonly kind: 'skipped'; readonly reason: string }
  | {
      readonly kind: 'ran';
      readonly rows: readonly {
        readonly image: string;
        readonly store: 's3 (s3rver)' | 'file';
        readonly seconds: number;
        readonly chunks: Counts;
        readonly newBytes: number;
        readonly requests: Requests;
        readonly presence: string;
      }[];
    };

export interface ConvertBench {
  readonly chunkSize: number;
  readonly sealThreads: number;
  readonly images: readonly ConvertImageRun[];
  readonly stats: { readonly seconds: Stat; readonly peakRssMiB: number; readonly images: readonly StatsCheck[]; readonly allEqual: boolean } | null;
  readonly s3: S3Result;
  /** Filesystem type of the temp dir the stores live in (fsync cost differs). */
  readonly storeFs: string;
}

function stage(samples: readonly number[], bytes: number): StageResult {
  const seconds = stat(samples);
  return { seconds, mbps: round(bytes / 1e6 / seconds.median, 1) };
}

/** Times each pipeline stage once over `ref`, in process. */
async function stageOnce(ref: string, file: string, keys: Keys, work: string): Promise<{ build: number; inline: number; pool: number; put: number; put8: number; imageBytes: number }> {
  const b = await timed(() => buildImage(ref, file));
  const inline = await timed(() =>
    chunkFile(
      file,
      CHUNK,
      async (_i, data) => {
        if (data) sealChunk(data, keys.salt);
      },
      { maxInFlight: 1 },
    ),
  );
  // Workers are started before the clock (convert starts them once per image too, ~tens of ms).
  const sealer = createSealer(keys.salt);
  let pool: number;
  try {
    const sealAll = (): ReturnType<typeof chunkFile> =>
      chunkFile(
        file,
        CHUNK,
        async (i, data) => {
          if (data) await sealer.seal(i, data);
        },
        { maxInFlight: CONCURRENCY },
      );
    pool = (await timed(sealAll)).seconds;
  } finally {
    await sealer.close();
  }
  // Only the puts are timed: seal inline (untimed), then put; one at a time, then sync().
  const dir = path.join(work, 'put-store');
  const store = await openStore(dir);
  let put = 0;
  try {
    await chunkFile(
      file,
      CHUNK,
      async (_i, data) => {
        if (!data) return;
        const s = sealChunk(data, keys.salt);
        put += (await timed(() => store.put(s.id, s.ciphertext, { check: 'none' }))).seconds;
      },
      { maxInFlight: 1 },
    );
    put += (await timed(() => store.sync())).seconds;
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
  // As convert overlaps them: seal inline and keep CONCURRENCY puts in flight; wall time, then sync().
  const dir8 = path.join(work, 'put8-store');
  const store8 = await openStore(dir8);
  let put8: number;
  try {
    const sealAndPut = async (): Promise<void> => {
      await chunkFile(
        file,
        CHUNK,
        async (_i, data) => {
          if (!data) return;
          const s = sealChunk(data, keys.salt);
          await store8.put(s.id, s.ciphertext, { check: 'none' });
        },
        { maxInFlight: CONCURRENCY },
      );
      await store8.sync();
    };
    put8 = (await timed(sealAndPut)).seconds;
  } finally {
    await store8.close();
    await rm(dir8, { recursive: true, force: true });
  }
  await rm(file, { force: true });
  return { build: b.seconds, inline: inline.seconds, pool, put, put8, imageBytes: b.value.imageBytes };
}

async function ownLayersBytes(image: BenchImage, parent: BenchImage | undefined): Promise<number> {
  const have = new Set(parent?.layers.map((l) => l.diffId) ?? []);
  return uncompressedBytes(image.layers.filter((l) => !have.has(l.diffId)));
}

function sameCounts(a: Counts, b: Counts): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

async function storeFs(dir: string): Promise<string> {
  const r = await run('df', ['-T', dir], { allowFail: true });
  return r.stdout.trim().split('\n').pop()?.split(/\s+/)[1] ?? '?';
}

export async function benchConvert(): Promise<ConvertBench | null> {
  const c = corpus();
  if ('missing' in c) {
    log(`convert: skipped, no corpus at ${c.missing}`);
    return null;
  }
  const images: BenchImage[] = [];
  for (const tag of CORPUS_TAGS) {
    const img = await readImage(c.dir, tag);
    if (img === undefined) log(`convert: skipped ${tag}, no such tag in ${c.dir}`);
    else images.push(img);
  }
  if (images.length === 0) return null;
  const ref = (img: BenchImage): string => `oci:${img.layout}:${img.tag}`;

  const work = await tmpDir('bench-convert');
  try {
    const keys = generateKeys();
    const keyFile = path.join(work.path, 'key.json');
    await writeKeyFile(keyFile, keys);
    const decompressors = cliDecompressors();

    interface Acc {
      floor: Record<string, number[]>;
      tarBytes: number;
      build: number[];
      buildKiB: number;
      convert: number[];
      convertKiB: number;
      results: ConvertJson[];
      st: { build: number[]; inline: number[]; pool: number[]; put: number[]; put8: number[] };
      imageBytes: number;
    }
    const acc = new Map<string, Acc>();
    for (const img of images) {
      const floor: Record<string, number[]> = { 'node zlib': [] };
      for (const d of decompressors) floor[d.name] = [];
      acc.set(img.tag, { floor, tarBytes: 0, build: [], buildKiB: 0, convert: [], convertKiB: 0, results: [], st: { build: [], inline: [], pool: [], put: [], put8: [] }, imageBytes: 0 });
    }
    const statsS: number[] = [];
    let statsKiB = 0;
    const statsRuns: StatsJson[] = [];

    for (let i = 0; i < settings.runs; i++) {
      // The dry run first, on a store that does not exist yet (stats writes nothing).
      log(`convert: run ${i + 1}/${settings.runs}: stats ${images.map((m) => m.tag).join(' ')}`);
      const [scmd, sargs] = chunkyardCmd('stats', ...images.map(ref), '--store', path.join(work.path, `stats-store-${i}`), '--key-file', keyFile, '--json');
      const s = await timeChild(scmd, sargs);
      statsS.push(s.seconds);
      statsKiB = Math.max(statsKiB, s.peakKiB);
      statsRuns.push(JSON.parse(s.stdout) as StatsJson);

      const storeDir = path.join(work.path, `store-${i}`);
      for (const img of images) {
        const a = acc.get(img.tag)!;
        log(`convert: run ${i + 1}/${settings.runs}: ${img.tag}`);
        const g = await nodeGunzip(img.layers);
        a.floor['node zlib']!.push(g.seconds);
        a.tarBytes = g.bytes;
        for (const d of decompressors) a.floor[d.name]!.push(await cliGunzip(d, img.layers));

        const out = path.join(work.path, `${img.tag}.ext4`);
        const [bcmd, bargs] = chunkyardCmd('build', ref(img), '-o', out, '--json');
        const b = await timeChild(bcmd, bargs);
        a.build.push(b.seconds);
        a.buildKiB = Math.max(a.buildKiB, b.peakKiB);
        await rm(out, { force: true });

        const [ccmd, cargs] = chunkyardCmd('convert', ref(img), '--store', storeDir, '--key-file', keyFile, '--tag', img.tag, '--json');
        const cv = await timeChild(ccmd, cargs);
        a.convert.push(cv.seconds);
        a.convertKiB = Math.max(a.convertKiB, cv.peakKiB);
        a.results.push(JSON.parse(cv.stdout) as ConvertJson);

        const st = await stageOnce(ref(img), out, keys, work.path);
        a.st.build.push(st.build);
        a.st.inline.push(st.inline);
        a.st.pool.push(st.pool);
        a.st.put.push(st.put);
        a.st.put8.push(st.put8);
        a.imageBytes = st.imageBytes;
      }
      await rm(storeDir, { recursive: true, force: true });
    }

    const runs: ConvertImageRun[] = [];
    for (const [k, img] of images.entries()) {
      const a = acc.get(img.tag)!;
      const methods: Record<string, Stat> = {};
      for (const [name, v] of Object.entries(a.floor)) methods[name] = stat(v);
      const [method, best] = Object.entries(methods).sort((x, y) => x[1].median - y[1].median)[0]!;
      const build = stat(a.build);
      const convert = stat(a.convert);
      const first = a.results[0]!;
      const parent = k > 0 ? images[k - 1] : undefined;
      const own = await ownLayersBytes(img, parent);
      const sameEveryRun = a.results.every((r) => sameCounts(r.chunks, first.chunks));
      if (!sameEveryRun) log(`convert: ${img.tag}: chunk counts differ between runs: ${a.results.map((r) => JSON.stringify(r.chunks)).join(' ')}`);
      runs.push({
        image: img.tag,
        layers: img.layers.length,
        tarBytes: a.tarBytes,
        imageBytes: first.imageBytes,
        floor: { method, seconds: best.median, methods },
        build: { seconds: build, peakRssMiB: round(a.buildKiB / 1024, 1) },
        convert: {
          seconds: convert,
          peakRssMiB: round(a.convertKiB / 1024, 1),
          ratioToFloor: round(convert.median / best.median, 2),
          ratioToBuild: round(convert.median / build.median, 2),
          extraSeconds: round(convert.median - build.median, 3),
          mbps: round(a.tarBytes / 1e6 / convert.median, 1),
        },
        stages: {
          build: stage(a.st.build, a.imageBytes),
          chunkSealInline: stage(a.st.inline, a.imageBytes),
          sealPool: stage(a.st.pool, a.imageBytes),
          filePut: stage(a.st.put, a.imageBytes),
          sealPut8: stage(a.st.put8, a.imageBytes),
        },
        dedup: {
          after: parent?.tag ?? null,
          chunks: first.chunks,
          newBytes: first.bytes.new,
          ownLayersBytes: own,
          newPerOwn: round(first.bytes.new / own, 2),
          manifestBytes: first.manifestBytes,
          manifestPerImageByte: first.manifestBytes / first.imageBytes,
          requests: first.requests,
          sameEveryRun,
        },
      });
    }

    // stats vs convert, run by run: both start from an empty store and go in the same order.
    const checks: StatsCheck[] = [];
    for (const [k, img] of images.entries()) {
      const a = acc.get(img.tag)!;
      for (let i = 0; i < statsRuns.length; i++) {
        const si = statsRuns[i]!.images[k];
        const ci = a.results[i];
        if (si === undefined || ci === undefined) continue;
        const equal = si.chunks.new === ci.chunks.new;
        if (!equal || i === 0) {
          checks.push({ image: img.tag, statsNew: si.chunks.new, convertNew: ci.chunks.new, equal, statsRequests: si.requests, convertRequests: ci.requests });
        }
      }
    }
    const stats = {
      seconds: stat(statsS),
      peakRssMiB: round(statsKiB / 1024, 1),
      images: checks,
      allEqual: checks.every((x) => x.equal),
    };

    const s3 = await benchS3(images.filter((m) => (S3_TAGS as readonly string[]).includes(m.tag)).map(ref), keys, work.path);
    return { chunkSize: CHUNK, sealThreads: defaultThreads(), images: runs, stats, s3, storeFs: await storeFs(work.path) };
  } finally {
    await work.cleanup();
  }
}

async function convertInto(store: Store, source: string, keys: Keys): Promise<{ seconds: number; result: ConvertResult }> {
  const image = await openImage(source);
  try {
    const { seconds, value } = await timed(() => convertImage(image, { store, keys }));
    return { seconds, result: value };
  } finally {
    await image.close();
  }
}

/** In process: `refs` in order into s3rver on loopback, then into a fresh file store for comparison. Once (not repeated). */
async function benchS3(refs: readonly string[], keys: Keys, work: string): Promise<S3Result> {
  const problem = s3rverProblem();
  if (problem !== undefined) {
    log(`convert: s3 skipped: ${problem}`);
    return { kind: 'skipped', reason: problem };
  }
  let server: S3TestServer;
  try {
    server = await startS3Server({ bucket: 'chunkyard-bench' });
  } catch (e) {
    const reason = `s3rver did not start: ${(e as Error).message.split('\n')[0]}`;
    log(`convert: s3 skipped: ${reason}`);
    return { kind: 'skipped', reason };
  }
  const rows: Extract<S3Result, { kind: 'ran' }>['rows'][number][] = [];
  const row = (store: 's3 (s3rver)' | 'file', seconds: number, r: ConvertResult): (typeof rows)[number] => ({
    image: r.source.split(':').pop() ?? r.source,
    store,
    seconds: round(seconds, 3),
    chunks: r.chunks,
    newBytes: r.bytes.new,
    requests: r.requests,
    presence: r.presence,
  });
  try {
    const s3 = await openStore(`s3://${server.bucket}/bench`, { endpoint: server.endpoint, s3ClientConfig: server.clientConfig });
    try {
      for (const source of refs) {
        log(`convert: s3: ${source}`);
        const { seconds, result } = await convertInto(s3, source, keys);
        rows.push(row('s3 (s3rver)', seconds, result));
      }
    } finally {
      await s3.close();
    }
  } finally {
    await server.stop();
  }
  const dir = path.join(work, 'file-store-s3-twin');
  const file = await openStore(dir);
  try {
    for (const source of refs) {
      log(`convert: file (in process): ${source}`);
      const { seconds, result } = await convertInto(file, source, keys);
      rows.push(row('file', seconds, result));
    }
  } finally {
    await file.close();
    await rm(dir, { recursive: true, force: true });
  }
  return { kind: 'ran', rows };
}

// --- output ---------------------------------------------------------------------

const mb = (n: number): number => round(n / 1e6, 1);
const mib = (n: number): number => round(n / MiB, 1);
const req = (r: Requests): string => `${r.put}/${r.head}/${r.list}/${r.get}`;

export function printConvertTables(r: ConvertBench): void {
  const t1: (string | number)[][] = [
    ['image', 'tar MB', 'image MB', 'floor s', 'floor by', 'build s', 'convert s', 'min', 'convert/floor', 'convert/build', '+chunk,seal,put s', 'convert MB/s', 'build RSS MiB', 'convert RSS MiB'],
  ];
  for (const i of r.images) {
    t1.push([
      i.image,
      mb(i.tarBytes),
      mb(i.imageBytes),
      i.floor.seconds,
      i.floor.method,
      i.build.seconds.median,
      i.convert.seconds.median,
      i.convert.seconds.min,
      i.convert.ratioToFloor,
      i.convert.ratioToBuild,
      i.convert.extraSeconds,
      i.convert.mbps,
      i.build.peakRssMiB,
      i.convert.peakRssMiB,
    ]);
  }
  printTable(`Convert into a fresh file store (${r.storeFs}), base → py → py-app; child processes, seconds are medians`, t1);
  console.log('  floor = fastest single-threaded gunzip of the layer blobs; convert MB/s = tar MB / convert s');

  const t2: (string | number)[][] = [['image', 'image MB', 'build s', 'build MB/s', 'chunk+seal 1 thread MB/s', `seal pool (${r.sealThreads} thr) MB/s`, 'file put MB/s', `seal+put ×${CONCURRENCY} MB/s`]];
  for (const i of r.images) {
    t2.push([i.image, mb(i.imageBytes), i.stages.build.seconds.median, i.stages.build.mbps, i.stages.chunkSealInline.mbps, i.stages.sealPool.mbps, i.stages.filePut.mbps, i.stages.sealPut8?.mbps ?? NaN]);
  }
  printTable('Per-stage throughput, in process (MB/s of image bytes, medians)', t2);
  console.log('  build = buildImage to a file; chunk+seal = chunkFile + sealChunk inline over that file (page cache);');
  console.log(`  seal pool = chunkFile + createSealer, ${CONCURRENCY} chunks in flight; file put = only the puts, one at a time (write, fsync, rename) + sync(),`);
  console.log(`  into a fresh store; seal+put = chunkFile + sealChunk inline + put, ${CONCURRENCY} in flight, + sync() (wall)`);

  const t3: (string | number)[][] = [
    ['image', 'after', 'chunks', 'zero', 'dup', 'existing', 'new', 'new MiB', 'own layers MiB', 'new/own', 'manifest B', 'manifest B/chunk', 'manifest/image', 'PUT/HEAD/LIST/GET'],
  ];
  for (const i of r.images) {
    const d = i.dedup;
    t3.push([
      i.image,
      d.after ?? '(empty)',
      d.chunks.total,
      d.chunks.zero,
      d.chunks.duplicate,
      d.chunks.existing,
      d.chunks.new,
      mib(d.newBytes),
      mib(d.ownLayersBytes),
      d.newPerOwn,
      d.manifestBytes,
      round(d.manifestBytes / d.chunks.total, 1),
      d.manifestPerImageByte.toExponential(2),
      req(d.requests),
    ]);
  }
  printTable(`Dedup in the store (convert --json, ${CHUNK / 1024}K chunks, one store per run)`, t3);
  console.log('  own layers = tar bytes of the layers the image has and the one before lacks (by diff_id); new = bytes.new (whole chunks)');

  if (r.stats) {
    const t4: (string | number)[][] = [['image', 'stats new', 'convert new', 'equal', 'stats PUT/HEAD/LIST/GET', 'convert PUT/HEAD/LIST/GET']];
    for (const c of r.stats.images) t4.push([c.image, c.statsNew, c.convertNew, c.equal ? 'yes' : 'NO', req(c.statsRequests), req(c.convertRequests)]);
    printTable(
      `stats (dry run) of [${r.images.map((i) => i.image).join(', ')}] on a fresh store: ${r.stats.seconds.median} s median (min ${r.stats.seconds.min}), peak RSS ${r.stats.peakRssMiB} MiB; ` +
        `sum of the converts ${round(r.images.reduce((s, i) => s + i.convert.seconds.median, 0), 2)} s`,
      t4,
    );
    console.log(`  chunks.new of stats ${r.stats.allEqual ? 'equals' : 'DIFFERS FROM'} what convert uploaded, every image, every run (rows: run 1, and any run that differs)`);
  }

  if (r.s3.kind === 'skipped') {
    console.log(`\nS3: skipped (${r.s3.reason})`);
  } else {
    const t5: (string | number)[][] = [['image', 'store', 'seconds', 'MB/s (image)', 'new chunks', 'existing', 'new MiB', 'presence', 'PUT', 'HEAD', 'LIST', 'GET']];
    for (const x of r.s3.rows) {
      const imageBytes = r.images.find((i) => i.image === x.image)?.imageBytes ?? NaN;
      t5.push([x.image, x.store, x.seconds, round(imageBytes / 1e6 / x.seconds, 1), x.chunks.new, x.chunks.existing, mib(x.newBytes), x.presence, x.requests.put, x.requests.head, x.requests.list, x.requests.get]);
    }
    printTable('Convert into s3rver on loopback vs a file store (in process, one run each, in order)', t5);
  }
}
