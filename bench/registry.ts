/**
 * Benchmark `registry`: pulling from a registry on loopback (Debian's
 * docker-registry, filled by skopeo from the corpus), per corpus tag:
 *
 *   docker://      `chunkyard build docker://127.0.0.1:PORT/TAG` (layers fetched 3 ahead)
 *   no prefetch    the same with each layer fetched only when opened (bench/registry-build.ts)
 *   skopeo+build   `skopeo copy docker://… oci:DIR:TAG` then `chunkyard build oci:DIR:TAG`
 *   oci:           `chunkyard build oci:CORPUS:TAG` alone (no network)
 *
 * Every command is a child process timed from outside (node start-up
 * included), interleaved run by run; seconds are medians. Peak RSS from GNU
 * time (or polled). Reports numbers, asserts nothing.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { repoRoot, tmpDir } from '../src/testing/tools.js';
import { startRegistry } from '../src/testing/registry-server.js';
import { CORPUS_TAGS, corpus, readImage } from './corpus.js';
import { chunkyardCmd, have, log, printTable, round, settings, stat, timeChild, type Stat } from './util.js';

export interface RegistryRun {
  readonly image: string;
  readonly layers: number;
  /** Compressed layer bytes, MB (10^6). */
  readonly blobMB: number;
  readonly docker: { readonly seconds: Stat; readonly peakRssMiB: number };
  readonly noPrefetch: { readonly seconds: Stat; readonly peakRssMiB: number };
  readonly skopeo: { readonly copySeconds: Stat; readonly buildSeconds: Stat; readonly seconds: Stat };
  readonly oci: { readonly seconds: Stat; readonly peakRssMiB: number };
  /** docker:// median / (skopeo copy + build oci:) median. */
  readonly ratioToSkopeoBuild: number;
  /** docker:// median / build oci: median: the cost of the network path. */
  readonly ratioToOci: number;
  /** no-prefetch median / docker:// median. */
  readonly prefetchSpeedup: number;
}

export async function benchRegistry(): Promise<RegistryRun[] | undefined> {
  const c = corpus();
  if ('missing' in c) {
    log(`registry: skipped, no corpus at ${c.missing}`);
    return undefined;
  }
  for (const tool of ['docker-registry', 'skopeo']) {
    if (!have(tool)) {
      log(`registry: skipped, needs ${tool}`);
      return undefined;
    }
  }
  const reg = await startRegistry();
  const work = await tmpDir('bench-registry');
  try {
    for (const tag of CORPUS_TAGS) {
      log(`registry: pushing ${tag}`);
      await timeChild('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${c.dir}:${tag}`, `docker://${reg.host}/${tag}:latest`]);
    }
    const results: RegistryRun[] = [];
    for (const tag of CORPUS_TAGS) {
      const image = await readImage(c.dir, tag);
      if (image === undefined) continue;
      const remote = `docker://${reg.host}/${tag}:latest`;
      const out = path.join(work.path, `${tag}.ext4`);
      const copied = path.join(work.path, 'copied');
      const s = { docker: [] as number[], noPrefetch: [] as number[], copy: [] as number[], copiedBuild: [] as number[], skopeo: [] as number[], oci: [] as number[] };
      const rss = { docker: 0, noPrefetch: 0, oci: 0 };
      for (let i = 0; i < settings.runs; i++) {
        log(`registry ${tag}: run ${i + 1}/${settings.runs}`);
        const [cmd, args] = chunkyardCmd('build', remote, '-o', out, '--json');
        const d = await timeChild(cmd, args);
        s.docker.push(d.seconds);
        rss.docker = Math.max(rss.docker, d.peakKiB);
        await rm(out, { force: true });

        const n = await timeChild(process.execPath, [path.join(repoRoot(), 'dist', 'bench', 'registry-build.js'), remote, out, '0']);
        s.noPrefetch.push(n.seconds);
        rss.noPrefetch = Math.max(rss.noPrefetch, n.peakKiB);
        await rm(out, { force: true });

        await rm(copied, { recursive: true, force: true });
        const cp = await timeChild('skopeo', ['copy', '-q', '--src-tls-verify=false', remote, `oci:${copied}:${tag}`]);
        const [bcmd, bargs] = chunkyardCmd('build', `oci:${copied}:${tag}`, '-o', out, '--json');
        const b = await timeChild(bcmd, bargs);
        s.copy.push(cp.seconds);
        s.copiedBuild.push(b.seconds);
        s.skopeo.push(cp.seconds + b.seconds);
        await rm(out, { force: true });

        const [ocmd, oargs] = chunkyardCmd('build', `oci:${c.dir}:${tag}`, '-o', out, '--json');
        const o = await timeChild(ocmd, oargs);
        s.oci.push(o.seconds);
        rss.oci = Math.max(rss.oci, o.peakKiB);
        await rm(out, { force: true });
      }
      const docker = stat(s.docker);
      const noPrefetch = stat(s.noPrefetch);
      const skopeo = stat(s.skopeo);
      const oci = stat(s.oci);
      results.push({
        image: tag,
        layers: image.layers.length,
        blobMB: round(image.layers.reduce((a, l) => a + l.size, 0) / 1e6, 1),
        docker: { seconds: docker, peakRssMiB: round(rss.docker / 1024, 0) },
        noPrefetch: { seconds: noPrefetch, peakRssMiB: round(rss.noPrefetch / 1024, 0) },
        skopeo: { copySeconds: stat(s.copy), buildSeconds: stat(s.copiedBuild), seconds: skopeo },
        oci: { seconds: oci, peakRssMiB: round(rss.oci / 1024, 0) },
        ratioToSkopeoBuild: round(docker.median / skopeo.median, 2),
        ratioToOci: round(docker.median / oci.median, 2),
        prefetchSpeedup: round(noPrefetch.median / docker.median, 2),
      });
    }
    return results;
  } finally {
    await reg.stop();
    await work.cleanup();
  }
}

export function printRegistryTable(runs: readonly RegistryRun[]): void {
  printTable('Registry pull on loopback (seconds are medians of whole CLI runs)', [
    ['image', 'layers', 'blob MB', 'docker:// s', 'no prefetch s', 'skopeo copy s', '+ build s', 'skopeo+build s', 'oci: s', 'docker/(skopeo+build)', 'docker/oci', 'RSS docker MiB', 'RSS oci MiB'],
    ...runs.map((r) => [
      r.image,
      r.layers,
      r.blobMB,
      r.docker.seconds.median,
      r.noPrefetch.seconds.median,
      r.skopeo.copySeconds.median,
      r.skopeo.buildSeconds.median,
      r.skopeo.seconds.median,
      r.oci.seconds.median,
      r.ratioToSkopeoBuild,
      r.ratioToOci,
      r.docker.peakRssMiB,
      r.oci.peakRssMiB,
    ]),
  ]);
  console.log('  docker:// fetches up to 3 layers ahead into temp files; "no prefetch" fetches each layer when the build opens it');
}
