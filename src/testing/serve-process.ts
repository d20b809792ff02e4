/**
 * `chunkyard serve` as a child process, for end-to-end tests with real NBD
 * clients. A separate process matters: a FUSE or loop-device read that comes
 * back to a server inside the test process could tie up the libuv threads
 * the server itself needs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { MetricsSnapshot } from '../cache/metrics.js';
import { repoRoot } from './tools.js';

export interface ServeInfo {
  readonly uri: string;
  readonly digest: string;
  readonly size: number;
  readonly readOnly: boolean;
}

export interface ServeProcess {
  readonly info: ServeInfo;
  readonly child: ChildProcess;
  stderr(): string;
  /** SIGUSR1, then the stats file once it has been rewritten (needs --stats-json). */
  stats(): Promise<MetricsSnapshot & { prefetch?: { done: number; total: number; warmed: number } }>;
  /** SIGTERM; resolves with the exit code once the process is gone. */
  stop(): Promise<number | null>;
}

export async function startServe(args: readonly string[], options: { env?: NodeJS.ProcessEnv; statsJson?: string } = {}): Promise<ServeProcess> {
  const bin = path.join(repoRoot(), 'bin', 'chunkyard.js');
  const child = spawn(process.execPath, [bin, 'serve', ...args, '--json', ...(options.statsJson ? ['--stats-json', options.statsJson] : [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...options.env },
  });
  let out = '';
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const info = await new Promise<ServeInfo>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start within 60 s: ${err}`)), 60_000);
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(out.slice(0, nl)) as ServeInfo);
        } catch (e) {
          reject(new Error(`serve printed ${JSON.stringify(out)}: ${(e as Error).message}`));
        }
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code} before serving: ${err.trim()}`));
    });
  });
  let stopping: Promise<number | null> | undefined;
  return {
    info,
    child,
    stderr: () => err,
    async stats() {
      const file = options.statsJson;
      if (file === undefined) throw new Error('startServe: stats() needs statsJson');
      const before = await readFile(file, 'utf8').catch(() => '');
      child.kill('SIGUSR1');
      for (let i = 0; i < 300; i++) {
        await new Promise((r) => setTimeout(r, 50));
        const now = await readFile(file, 'utf8').catch(() => '');
        if (now !== '' && now !== before) return JSON.parse(now);
        // The same numbers twice is possible: after a while accept an unchanged file.
        if (i > 40 && now !== '') return JSON.parse(now);
      }
      throw new Error(`serve did not write ${file} after SIGUSR1`);
    },
    stop() {
      if (stopping) return stopping;
      if (child.exitCode !== null) return (stopping = Promise.resolve(child.exitCode));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 60_000);
      return (stopping = exited.finally(() => clearTimeout(t)));
    },
  };
}
