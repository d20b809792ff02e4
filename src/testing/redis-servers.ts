/**
 * Real `redis-server` processes for the shared-tier tests and benchmark:
 * N servers in a temp directory, on unix sockets (the default) or on free
 * loopback TCP ports, no persistence, 64 MiB each with LFU eviction (what a
 * cache node would run). Each can be SIGKILLed, paused (SIGSTOP, a node that
 * hangs) and restarted (empty, on the same address). Test-only code.
 *
 * Readiness is a raw PING on the socket, not a client library, so a failing
 * start shows redis-server's own log in the error.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { skipWith, tmpDir, whichSync, type TmpDir } from './tools.js';

export type RedisTransport = 'unix' | 'tcp';

export interface RedisServersOptions {
  readonly count: number;
  /** @default 'unix' */
  readonly transport?: RedisTransport;
  /** @default '64mb' */
  readonly maxmemory?: string;
}

export interface RedisTestServers {
  readonly count: number;
  readonly dir: string;
  /** Server i's address: `unix:///…/i.sock` or `redis://127.0.0.1:PORT`. */
  url(i: number): string;
  readonly urls: readonly string[];
  /** Where to connect a raw client to server i (ioredis options). */
  address(i: number): { path: string } | { host: string; port: number };
  running(i: number): boolean;
  /** SIGKILL, and wait for the process to be gone. */
  kill(i: number): Promise<void>;
  /** SIGSTOP: the server keeps its connections but answers nothing. */
  pause(i: number): void;
  /** SIGCONT after pause. */
  resume(i: number): void;
  /** Starts server i again (empty) on the same address; waits until it answers PING. Kills it first if it runs. */
  restart(i: number): Promise<void>;
  /** Restarts every server that is not running and resumes paused ones. */
  reviveAll(): Promise<void>;
  /** Kills every server and removes the directory. Idempotent. */
  stopAll(): Promise<void>;
}

/** Why redis-server can't be used here, or undefined. */
export function redisServerProblem(): string | undefined {
  return whichSync('redis-server') === undefined ? 'needs redis-server (not installed; apt package redis-server)' : undefined;
}

/** For a `before` hook: the servers, or a skip (naming redis-server) when it is missing. */
export async function requireRedisServers(ctx: Mocha.Context, options: RedisServersOptions): Promise<RedisTestServers> {
  const problem = redisServerProblem();
  if (problem !== undefined) skipWith(ctx, problem);
  return startRedisServers(options);
}

interface Server {
  readonly args: string[];
  readonly address: { path: string } | { host: string; port: number };
  readonly url: string;
  child?: ChildProcess;
  paused: boolean;
  log: string;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Never leave servers behind, even when a test run dies (the hook is synchronous, as 'exit' handlers must be). */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
}

export async function startRedisServers(options: RedisServersOptions): Promise<RedisTestServers> {
  const problem = redisServerProblem();
  if (problem !== undefined) throw new Error(problem);
  installExitHook();
  const transport = options.transport ?? 'unix';
  const dir: TmpDir = await tmpDir('redis');
  const servers: Server[] = [];
  try {
    for (let i = 0; i < options.count; i++) {
      const data = path.join(dir.path, String(i));
      await mkdir(data);
      const common = ['--save', '', '--appendonly', 'no', '--maxmemory', options.maxmemory ?? '64mb', '--maxmemory-policy', 'allkeys-lfu', '--dir', data, '--daemonize', 'no', '--logfile', ''];
      if (transport === 'unix') {
        const sock = path.join(dir.path, `${i}.sock`);
        servers.push({ args: ['--port', '0', '--unixsocket', sock, '--unixsocketperm', '700', ...common], address: { path: sock }, url: `unix://${sock}`, paused: false, log: '' });
      } else {
        const port = await freePort();
        servers.push({ args: ['--port', String(port), '--bind', '127.0.0.1', ...common], address: { host: '127.0.0.1', port }, url: `redis://127.0.0.1:${port}`, paused: false, log: '' });
      }
    }
    await Promise.all(servers.map((s) => start(s)));
  } catch (e) {
    for (const s of servers) await kill(s);
    await dir.cleanup();
    throw e;
  }

  const at = (i: number): Server => {
    const s = servers[i];
    if (s === undefined) throw new RangeError(`no redis test server ${i} (have ${servers.length})`);
    return s;
  };
  let stopped: Promise<void> | undefined;
  return {
    count: servers.length,
    dir: dir.path,
    url: (i) => at(i).url,
    urls: servers.map((s) => s.url),
    address: (i) => at(i).address,
    running: (i) => isRunning(at(i).child),
    kill: (i) => kill(at(i)),
    pause: (i) => {
      const s = at(i);
      if (isRunning(s.child)) {
        s.child!.kill('SIGSTOP');
        s.paused = true;
      }
    },
    resume: (i) => {
      const s = at(i);
      if (s.paused && isRunning(s.child)) s.child!.kill('SIGCONT');
      s.paused = false;
    },
    restart: async (i) => {
      const s = at(i);
      await kill(s);
      await start(s);
    },
    reviveAll: async () => {
      await Promise.all(
        servers.map(async (s) => {
          if (s.paused && isRunning(s.child)) s.child!.kill('SIGCONT');
          s.paused = false;
          if (!isRunning(s.child)) await start(s);
        }),
      );
    },
    stopAll: () => {
      stopped ??= (async () => {
        await Promise.all(servers.map((s) => kill(s)));
        await dir.cleanup();
      })();
      return stopped;
    },
  };
}

function isRunning(c: ChildProcess | undefined): boolean {
  return c !== undefined && c.exitCode === null && c.signalCode === null;
}

async function start(s: Server): Promise<void> {
  s.log = '';
  const child = spawn('redis-server', s.args, { stdio: ['ignore', 'pipe', 'pipe'] });
  s.child = child;
  s.paused = false;
  live.add(child);
  const keep = (b: Buffer): void => {
    s.log = (s.log + b.toString('utf8')).slice(-4000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise<never>((_, reject) => {
    child.once('error', (e) => reject(new Error(`redis-server did not start: ${e.message}`)));
    child.once('exit', (code, signal) => {
      live.delete(child);
      reject(new Error(`redis-server ${s.url} exited (${signal ?? code}) before answering PING: ${s.log.trim().slice(-1500)}`));
    });
  });
  exited.catch(() => {}); // it is only awaited while starting; a later exit (kill) is expected
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ok = await Promise.race([ping(s.address), exited]);
    if (ok) return;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server ${s.url} did not answer PING within 30 s: ${s.log.trim().slice(-1500)}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function kill(s: Server): Promise<void> {
  const c = s.child;
  s.paused = false;
  if (c === undefined || !isRunning(c)) return;
  const gone = new Promise<void>((r) => c.once('exit', () => r()));
  c.kill('SIGKILL');
  await gone;
  live.delete(c);
}

/** True when the server answers PING with PONG (a fresh connection, closed after). */
function ping(address: { path: string } | { host: string; port: number }): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = 'path' in address ? net.connect(address.path) : net.connect(address.port, address.host);
    let got = '';
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 2000);
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (b: Buffer) => {
      got += b.toString('latin1');
      if (got.includes('\r\n')) done(got.startsWith('+PONG'));
    });
    sock.on('error', () => done(false));
  });
}

/** A loopback port free right now (the OS picks it; redis-server binds it a moment later). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a !== null ? a.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
