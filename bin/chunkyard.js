#!/usr/bin/env node
import v8 from 'node:v8';
// A smaller young generation: chunkyard's garbage is short-lived chunk-sized
// buffers, and V8's default semi-spaces (up to 16 MiB each, grown under that
// churn) cost ~30-40 MiB of peak RSS on large images for no measurable speed.
v8.setFlagsFromString('--max-semi-space-size=4');
// The AWS SDK warns about Node 20 once per process; it works, and the warning would break one-line output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= '1';
// Commands that decode layers: boot the decoder thread (src/source/off-thread.ts) while the rest of the CLI loads.
if (process.argv[2] === 'build' || process.argv[2] === 'convert') (await import('../dist/src/source/off-thread.js')).prestartLayerWorker();
const { main } = await import('../dist/src/cli/main.js');
process.exitCode = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env });
