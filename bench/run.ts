/**
 * `npm run bench [-- [build] [big] [dedup] [convert] [eviction] [shared] [serve] [registry] [--runs N] [--no-naive]]`: runs
 * the named benchmarks (all by default), prints a summary on stdout (progress
 * goes to stderr) and merges the numbers into bench/results/build.json
 * (convert's into bench/results/convert.json, eviction's into bench/results/eviction.json,
 * shared's into bench/results/shared.json, serve's into bench/results/serve.json,
 * registry's into bench/results/registry.json).
 */
import { benchBig, memoryRow, printMemoryTable, type BigResult } from './big.js';
import { benchBuild, printBuildTable, type BuildRun } from './build.js';
import { benchConvert, printConvertTables, type ConvertBench } from './convert.js';
import { benchDedup, printDedupTable, type DedupPair } from './dedup.js';
import { benchEviction, printEvictionTables, type EvictionBench } from './eviction.js';
import { benchRegistry, printRegistryTable, type RegistryRun } from './registry.js';
import { benchServe, printServeTables, type ServeBench } from './serve.js';
import { benchSharedTier, printSharedTable, type SharedTierBench } from './shared-tier.js';
import { loadResults, log, resultsFile, saveResults, settings, timed } from './util.js';

const ALL = ['build', 'big', 'dedup', 'convert', 'eviction', 'shared', 'serve', 'registry'] as const;
type Name = (typeof ALL)[number];

function parseArgs(argv: readonly string[]): Name[] {
  const names: Name[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--runs') {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < 1) throw new Error(`--runs wants a positive integer, got ${argv[i]}`);
      settings.runs = n;
    } else if (a === '--no-naive') {
      settings.naive = false;
    } else if ((ALL as readonly string[]).includes(a)) {
      names.push(a as Name);
    } else {
      throw new Error(`unknown benchmark ${JSON.stringify(a)}: want any of ${ALL.join(', ')}, --runs N and --no-naive`);
    }
  }
  return names.length > 0 ? names : [...ALL];
}

async function main(): Promise<void> {
  const names = parseArgs(process.argv.slice(2));
  const previous = await loadResults();
  const previousConvert = await loadResults('convert');
  const previousEviction = await loadResults('eviction');
  const previousShared = await loadResults('shared');
  const previousServe = await loadResults('serve');
  const previousRegistry = await loadResults('registry');
  const sections: Record<string, unknown> = {};
  const convertSections: Record<string, unknown> = {};
  const evictionSections: Record<string, unknown> = {};
  const sharedSections: Record<string, unknown> = {};
  const serveSections: Record<string, unknown> = {};
  const registrySections: Record<string, unknown> = {};
  const { seconds } = await timed(async () => {
    if (names.includes('build')) sections['build'] = await benchBuild();
    if (names.includes('big')) sections['big'] = (await benchBig()) ?? null;
    if (names.includes('dedup')) sections['dedup'] = await benchDedup();
    if (names.includes('convert')) convertSections['convert'] = await benchConvert();
    if (names.includes('eviction')) evictionSections['eviction'] = await benchEviction();
    if (names.includes('shared')) {
      const shared = await benchSharedTier();
      if (shared) sharedSections['shared'] = shared;
    }
    if (names.includes('serve')) {
      const serve = await benchServe();
      if (serve) serveSections['serve'] = serve;
    }
    if (names.includes('registry')) {
      const registry = await benchRegistry();
      if (registry) registrySections['registry'] = registry;
    }
  });
  // Only a file whose benchmarks ran is rewritten (its `runs` and `updated` describe the numbers in it).
  const file = Object.keys(sections).length > 0 ? await saveResults(sections) : resultsFile();
  const convertFile = Object.keys(convertSections).length > 0 ? await saveResults(convertSections, 'convert') : resultsFile('convert');
  const evictionFile = Object.keys(evictionSections).length > 0 ? await saveResults(evictionSections, 'eviction') : resultsFile('eviction');
  const sharedFile = Object.keys(sharedSections).length > 0 ? await saveResults(sharedSections, 'shared') : resultsFile('shared');
  const serveFile = Object.keys(serveSections).length > 0 ? await saveResults(serveSections, 'serve') : resultsFile('serve');
  const registryFile = Object.keys(registrySections).length > 0 ? await saveResults(registrySections, 'registry') : resultsFile('registry');

  // The summary shows this run's numbers, and the last saved ones for benchmarks not run now.
  const build = (sections['build'] ?? previous['build'] ?? []) as BuildRun[];
  const big = (sections['big'] ?? previous['big'] ?? null) as BigResult | null;
  const dedup = (sections['dedup'] ?? previous['dedup'] ?? []) as DedupPair[];
  console.log(`\n=== chunkyard benchmarks (${settings.runs} runs each; ran ${names.join(', ')} in ${seconds.toFixed(0)}s; others from ${file}) ===`);
  const runs = [...build, ...(big ? [big] : [])];
  if (runs.length > 0) {
    printBuildTable('Build vs decompression floor (seconds are medians; "min" is the fastest build run)', runs);
    console.log('  floor = fastest single-threaded gunzip of the same blobs; naive = umoci unpack + mke2fs -d');
    printMemoryTable([...runs.map(memoryRow), ...(big?.parts ?? [])]);
  }
  if (dedup.length > 0) printDedupTable(dedup);
  const convert = (convertSections['convert'] ?? previousConvert['convert'] ?? null) as ConvertBench | null;
  if (convert) printConvertTables(convert);
  const eviction = (evictionSections['eviction'] ?? previousEviction['eviction'] ?? null) as EvictionBench | null;
  if (eviction) printEvictionTables(eviction);
  const shared = (sharedSections['shared'] ?? previousShared['shared'] ?? null) as SharedTierBench | null;
  if (shared) printSharedTable(shared);
  const serve = (serveSections['serve'] ?? previousServe['serve'] ?? null) as ServeBench | null;
  if (serve) printServeTables(serve);
  const registry = (registrySections['registry'] ?? previousRegistry['registry'] ?? null) as RegistryRun[] | null;
  if (registry) printRegistryTable(registry);
  log(`results in ${file}, ${convertFile}, ${evictionFile}, ${sharedFile}, ${serveFile} and ${registryFile}`);
}

try {
  await main();
} catch (e) {
  log(`failed: ${(e as Error).message}`);
  process.exitCode = 1;
}
