/**
 * Child process of bench/registry.ts: `node dist/bench/registry-build.js REF
 * OUT PREFETCH` builds REF (a docker:// source) with `prefetchLayers` set,
 * as `chunkyard build` would (same V8 flag, worker started early), and prints
 * the summary as JSON. The CLI has no flag for it: this is how the benchmark
 * times the build without layers fetched ahead.
 */
import v8 from 'node:v8';

v8.setFlagsFromString('--max-semi-space-size=4');
const [ref, out, prefetch] = process.argv.slice(2);
if (ref === undefined || out === undefined || prefetch === undefined) throw new Error('usage: registry-build.js REF OUT PREFETCH');
(await import('../src/source/off-thread.js')).prestartLayerWorker();
const { buildImage } = await import('../src/index.js');
const t0 = process.hrtime.bigint();
const summary = await buildImage(ref, out, { registry: { prefetchLayers: Number(prefetch) } });
process.stdout.write(JSON.stringify({ ...summary, seconds: Number(process.hrtime.bigint() - t0) / 1e9 }) + '\n');
