#!/usr/bin/env node
import v8 from 'node:v8';
// A smaller young generation: chunkyard's garbage is short-lived chunk-sized
// buffers, and V8's default semi-spaces (up to 16 MiB each, grown under that
// churn) cost ~30-40 MiB of peak RSS on large images for no measurable speed.
v8.setFlagsFromString('--max-semi-space-size=4');
// The AWS SDK warns about Node 20 once per process; it works, and the warning would break one-line output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= '1';
// `serve` allocates and frees a 512 KiB buffer or two per chunk read. With
// glibc's defaults each gets fresh mmap'd pages that are trimmed again on free
// (~1.7 ms per chunk here, against ~0.1 ms when the heap keeps them): 4 KiB
// random reads through NBD, p50 7.1 -> 2.1 ms from the disk cache
// (bench/serve.ts). glibc reads its tunables at process start, so serve runs
// itself once more with them (unless GLIBC_TUNABLES is set already), in its own
// process group so a terminal's Ctrl-C reaches it once, through us.
const SERVE_TUNABLES = 'glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=1073741824';
if (process.argv[2] === 'serve' && process.platform === 'linux' && process.env.GLIBC_TUNABLES === undefined) {
  const { spawn } = await import('node:child_process');
  const { constants } = await import('node:os');
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, GLIBC_TUNABLES: SERVE_TUNABLES },
    detached: true,
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGUSR1']) process.on(sig, () => child.kill(sig));
  const [code, signal] = await new Promise((resolve) => child.on('exit', (c, s) => resolve([c, s])));
  process.exit(code ?? 128 + (constants.signals[signal] ?? 0));
}
if (process.channel && process.argv[2] === 'serve') {
  // The re-run serve: if the parent dies (even by SIGKILL), stop as on SIGTERM.
  process.channel.unref();
  process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
}
// Commands that decode layers: boot the decoder thread (src/source/off-thread.ts) while the rest of the CLI loads.
if (process.argv[2] === 'build' || process.argv[2] === 'convert') (await import('../dist/src/source/off-thread.js')).prestartLayerWorker();
const { main } = await import('../dist/src/cli/main.js');
process.exitCode = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env });
