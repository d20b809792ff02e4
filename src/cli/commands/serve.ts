/**
 * `chunkyard serve REF`: the published image as an NBD export until
 * SIGINT/SIGTERM. Prints the NBD URI on stdout once clients may connect (or
 * a JSON object with --json), metrics on stderr at exit and on SIGUSR1.
 */
import { Command } from 'commander';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UsageError } from '../../errors.js';
import { serveImage, type ServeHandle } from '../../serve/serve.js';
import type { NbdErrorEvent, NbdListen } from '../../serve/nbd/server.js';
import { addCacheOptions, printMetrics, readPathFrom, writeStatsJson, type CacheFlags } from '../cache-options.js';
import type { CliIO } from '../io.js';
import { formatBytes } from '../options.js';
import { addKeyOption, addStoreOptions, keysFrom, storeFrom, type KeyFlags, type StoreFlags } from '../store-options.js';

export const DEFAULT_LISTEN = 'tcp:127.0.0.1:10809';

interface ServeFlags extends StoreFlags, KeyFlags, CacheFlags {
  listen: string;
  exportName?: string;
  writable?: boolean;
  recordTrace?: string;
  prefetch?: string;
  json?: boolean;
}

/** `unix:PATH`, `tcp:HOST:PORT`, `tcp:[V6]:PORT` or `tcp:PORT` (loopback). */
export function parseListen(s: string): NbdListen {
  if (s.startsWith('unix:')) {
    const path = s.slice('unix:'.length);
    if (path === '') throw new UsageError(`invalid --listen ${JSON.stringify(s)}: want unix:PATH`);
    return { unix: path };
  }
  if (s.startsWith('tcp:')) {
    const rest = s.slice('tcp:'.length);
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d+)$/.exec(rest) ?? /^()()(\d+)$/.exec(rest);
    const port = m ? Number(m[3]) : NaN;
    if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
      throw new UsageError(`invalid --listen ${JSON.stringify(s)}: want tcp:HOST:PORT, tcp:[IPV6]:PORT or tcp:PORT`);
    }
    return { tcp: { host: m[1] || m[2] || '127.0.0.1', port } };
  }
  throw new UsageError(`invalid --listen ${JSON.stringify(s)}: want unix:PATH or tcp:HOST:PORT`);
}

export function serveCommand(io: CliIO): Command {
  return addCacheOptions(addKeyOption(addStoreOptions(new Command('serve'))))
    .description('serve a published image as an NBD block device, loading chunks on demand')
    .argument('<ref>', 'tag or sha256: manifest digest in the store')
    .option('--listen <addr>', `unix:PATH or tcp:HOST:PORT (default ${DEFAULT_LISTEN})`, DEFAULT_LISTEN)
    .option('--export-name <name>', 'NBD export name (default: the default export "")')
    .option('--writable', 'accept writes into a local copy-on-write overlay, discarded at exit')
    .option('--record-trace <file>', 'at exit, write the order in which chunks were first read')
    .option('--prefetch <file>', 'warm the chunks of a recorded trace, in order, behind demand reads')
    .option('--json', 'print {uri, digest, size, readOnly} as JSON once serving')
    .action(async (ref: string, flags: ServeFlags) => runServe(io, ref, flags));
}

async function runServe(io: CliIO, ref: string, flags: ServeFlags): Promise<void> {
  const listen = parseListen(flags.listen);
  const readPath = readPathFrom(flags, io);
  const keys = await keysFrom(flags, io);
  const store = await storeFrom(flags, io);
  let scratch: string | undefined;
  let handle: ServeHandle;
  try {
    if (flags.writable === true) scratch = await mkdtemp(join(tmpdir(), 'chunkyard-cow-'));
    handle = await serveImage({
      ...readPath,
      store,
      ownsStore: true,
      ref,
      keys,
      listen,
      signal: io.signal,
      ...(flags.exportName !== undefined ? { exportName: flags.exportName } : {}),
      ...(scratch !== undefined ? { writable: { dir: scratch } } : {}),
      ...(flags.recordTrace !== undefined ? { recordTrace: flags.recordTrace } : {}),
      ...(flags.prefetch !== undefined ? { prefetch: flags.prefetch } : {}),
      onError: (e) => io.stderr.write(`chunkyard: serve: ${describe(e)}\n`),
    });
  } catch (e) {
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
    throw e;
  }
  const report = async (): Promise<void> => {
    const snap = handle.snapshot();
    printMetrics(io, snap);
    if (flags.statsJson !== undefined) await writeStatsJson(flags.statsJson, snap);
  };
  const onUsr1 = (): void => void report().catch((e: unknown) => io.stderr.write(`chunkyard: serve: cannot write stats: ${(e as Error).message}\n`));
  process.on('SIGUSR1', onUsr1);
  try {
    const mode = handle.readOnly ? 'read-only' : 'writable (local overlay)';
    io.stderr.write(`serving ${ref} (${handle.image.digest}), ${formatBytes(handle.size)} ${mode}, at ${handle.uri}\n`);
    if (handle.prefetched) {
      void handle.prefetched.then((r) => io.stderr.write(`prefetch ${r.stopped ? 'stopped' : 'done'}: ${r.warmed} chunks warmed, ${r.skipped} skipped, ${r.failed} failed\n`));
    }
    io.stdout.write(
      flags.json === true
        ? JSON.stringify({ uri: handle.uri, digest: handle.image.digest, size: handle.size, readOnly: handle.readOnly, export: handle.exportName }) + '\n'
        : `${handle.uri}\n`,
    );
    await new Promise<void>((resolve) => {
      if (io.signal.aborted) resolve();
      else io.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    io.stderr.write('stopping: finishing in-flight requests\n');
  } finally {
    process.off('SIGUSR1', onUsr1);
    try {
      await handle.close();
    } finally {
      if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
    }
    await report();
  }
}

function describe(e: NbdErrorEvent): string {
  if (e.kind === 'protocol') return `connection ${e.connection}: ${e.reason}`;
  const why = e.error instanceof Error ? e.error.message : String(e.error);
  return `connection ${e.connection}: ${e.command} at ${e.offset}+${e.length} failed: ${why}`;
}
