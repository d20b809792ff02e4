/**
 * Helpers for tests that drive real external tools (umoci, skopeo, mke2fs,
 * mount, python3…) and the shared corpus. Test-only code: it may use sync
 * calls and console.
 *
 * Skipping: mocha's `this.skip()` takes no reason, so `requireTool` and
 * friends append the reason to the skipped test titles (and so the spec
 * reporter prints e.g. "- unpacks the image [skipped: needs umoci]").
 */
import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants, existsSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// --- tools -----------------------------------------------------------------

/** sbin dirs are searched too: a non-login root shell may lack them in PATH. */
const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

function searchPath(): string[] {
  const dirs = (process.env['PATH'] ?? '').split(path.delimiter).filter((d) => d !== '');
  for (const d of SBIN_DIRS) if (!dirs.includes(d)) dirs.push(d);
  return dirs;
}

const toolCache = new Map<string, string | null>();

/** Absolute path of an executable on PATH (or in an sbin dir), or undefined. */
export function whichSync(name: string): string | undefined {
  const cached = toolCache.get(name);
  if (cached !== undefined) return cached ?? undefined;
  let found: string | null = null;
  if (name.includes('/')) {
    found = isExecutable(name) ? name : null;
  } else {
    for (const dir of searchPath()) {
      const p = path.join(dir, name);
      if (isExecutable(p)) {
        found = p;
        break;
      }
    }
  }
  toolCache.set(name, found);
  return found ?? undefined;
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, fsConstants.X_OK);
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

export async function haveTool(name: string): Promise<boolean> {
  return whichSync(name) !== undefined;
}

/**
 * Skip the current test (or, from a `before` hook, the suite's tests) unless
 * every named tool is installed. The skip reason names the missing tools.
 * Synchronous so it can be called as the first line of `it`/`before`.
 */
export function requireTool(ctx: Mocha.Context, ...names: string[]): void {
  const missing = names.filter((n) => whichSync(n) === undefined);
  if (missing.length > 0) skipWith(ctx, `needs ${missing.join(', ')} (not installed)`);
}

/** Skip with `reason` shown in the reporter's output for the skipped tests. */
export function skipWith(ctx: Mocha.Context, reason: string): never {
  const note = ` [skipped: ${reason}]`;
  const runnable = ctx.runnable() as Mocha.Runnable & { type?: string };
  if (runnable.type === 'hook') {
    const hookTitle = runnable.title;
    if (/before each|after each/.test(hookTitle) && ctx.currentTest !== undefined) {
      annotate(ctx.currentTest, note);
    } else if (runnable.parent !== undefined) {
      for (const t of allTests(runnable.parent)) annotate(t, note);
    }
  } else {
    annotate(runnable, note);
  }
  if (process.env['CHUNKYARD_TEST_VERBOSE_SKIPS'] !== undefined) console.error(`skip: ${reason}`);
  ctx.skip();
  throw new Error('unreachable: ctx.skip() returned');
}

function annotate(r: Mocha.Runnable, note: string): void {
  if (!r.title.endsWith(note)) r.title += note;
}

function allTests(s: Mocha.Suite): Mocha.Test[] {
  return [...s.tests, ...s.suites.flatMap(allTests)];
}

let python: Promise<string> | undefined;

/**
 * The real python3 interpreter (sys.executable), resolved once: version
 * manager shims (pyenv) cost ~0.3 s per start, which adds up in batch helpers.
 */
export function python3(): Promise<string> {
  python ??= run('python3', ['-c', 'import sys; sys.stdout.write(sys.executable)']).then((r) => r.stdout || 'python3');
  return python;
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** Skip unless running as root (needed for mount, chown, mknod, umoci ownership). */
export function requireRoot(ctx: Mocha.Context, why: string): void {
  if (!isRoot()) skipWith(ctx, `needs root for ${why}`);
}

// --- paths -----------------------------------------------------------------

let cachedRoot: string | undefined;

/** The repository root: the nearest ancestor of this file holding package.json. */
export function repoRoot(): string {
  if (cachedRoot !== undefined) return cachedRoot;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'package.json'))) return (cachedRoot = dir);
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`repoRoot: no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** `<repo>/../shared/corpus/oci` (so CI can put a `shared/` copy beside the clone). */
export function corpusPath(): string {
  return path.resolve(repoRoot(), '../shared/corpus/oci');
}

/** The shared corpus OCI layout, or undefined when it is absent. */
export function corpusDir(): string | undefined {
  const p = corpusPath();
  return existsSync(path.join(p, 'index.json')) ? p : undefined;
}

/** The corpus layout path; skips (naming the path) when it is absent. */
export function requireCorpus(ctx: Mocha.Context): string {
  const p = corpusDir();
  if (p === undefined) skipWith(ctx, `needs the corpus at ${corpusPath()}`);
  return p;
}

/** The bundled example OCI layout (`examples/hello`, tag `latest`). */
export function exampleImageDir(): string {
  return path.join(repoRoot(), 'examples', 'hello');
}

// --- temp dirs ---------------------------------------------------------------

export interface TmpDir {
  readonly path: string;
  cleanup(): Promise<void>;
}

/** A fresh directory under os.tmpdir(); `cleanup()` removes it (idempotent). */
export async function tmpDir(prefix: string): Promise<TmpDir> {
  const p = await mkdtemp(path.join(os.tmpdir(), `chunkyard-${prefix.replace(/[^A-Za-z0-9._-]/g, '_')}-`));
  return {
    path: p,
    cleanup: async () => {
      // Files made read-only (e.g. unpacked rootfs dirs with mode 0555) are still removable by root;
      // for non-root, rm's force does not chmod, so we try a chmod -R pass on failure.
      try {
        await rm(p, { recursive: true, force: true });
      } catch {
        await run('chmod', ['-R', 'u+rwx', p], { allowFail: true });
        await rm(p, { recursive: true, force: true });
      }
    },
  };
}

// --- running commands ----------------------------------------------------------

export interface RunOptions {
  readonly cwd?: string;
  /** Replaces the environment (default: inherit). */
  readonly env?: NodeJS.ProcessEnv;
  /** Written to stdin, which is then closed. Without it stdin is /dev/null. */
  readonly input?: string | Buffer;
  /** Resolve with a non-zero `code` instead of rejecting. Spawn failures (ENOENT) still reject. */
  readonly allowFail?: boolean;
  /** Keep stdout as a Buffer (for binary output) rather than UTF-8 text. */
  readonly stdoutBuffer?: boolean;
  readonly signal?: AbortSignal;
}

export interface RunResult<Out extends string | Buffer = string> {
  /** Exit code; 128 + signal number when killed by a signal. */
  readonly code: number;
  readonly stdout: Out;
  readonly stderr: string;
}

export class CommandError extends Error {
  constructor(
    message: string,
    readonly code: number,
    readonly stdout: string | Buffer,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'CommandError';
  }
}

/**
 * Run a program without a shell and collect its output (no size limit).
 * Rejects on a non-zero exit (message holds the command line, exit code and
 * stderr) unless `allowFail`.
 */
export function run(cmd: string, args: readonly string[], opts: RunOptions & { stdoutBuffer: true }): Promise<RunResult<Buffer>>;
export function run(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult<string>>;
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult<string | Buffer>> {
  const env = opts.env ?? { ...process.env, PATH: searchPath().join(path.delimiter) };
  const cmdline = [cmd, ...args].map(shellQuote).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      reject(new Error(e.code === 'ENOENT' ? `${cmd}: command not found (running: ${cmdline})` : `${cmdline}: ${e.message}`, { cause: e }));
    });
    if (opts.input !== undefined && child.stdin !== null) {
      child.stdin.on('error', () => {}); // EPIPE if the child exits early; its exit code tells the story
      child.stdin.end(opts.input);
    }
    child.on('close', (code, signal) => {
      const exit = code ?? 128 + (signal !== null ? (os.constants.signals[signal] ?? 0) : 0);
      const stdoutBuf = Buffer.concat(out);
      const stdout = opts.stdoutBuffer === true ? stdoutBuf : stdoutBuf.toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (exit !== 0 && opts.allowFail !== true) {
        const how = signal !== null ? `was killed by ${signal}` : `exited with ${exit}`;
        const tail = stderr.trim() !== '' ? `: ${stderr.trim().slice(-4000)}` : stdout.length > 0 ? ` (stdout: ${stdoutBuf.toString('utf8').trim().slice(-2000)})` : '';
        reject(new CommandError(`${cmdline} ${how}${tail}`, exit, stdout, stderr));
        return;
      }
      resolve({ code: exit, stdout, stderr });
    });
  });
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

// --- loop mounts -------------------------------------------------------------

let loopUsable: Promise<string | undefined> | undefined;

/** Why loop mounts cannot work here, or undefined if they should. */
function loopProblem(): Promise<string | undefined> {
  loopUsable ??= (async () => {
    if (!isRoot()) return 'needs mount (root) for a loop mount';
    if (whichSync('mount') === undefined || whichSync('umount') === undefined) return 'needs mount and umount (util-linux)';
    if (!existsSync('/dev/loop-control') && !existsSync('/dev/loop0')) return 'needs mount with loop devices (/dev/loop-control missing)';
    return undefined;
  })();
  return loopUsable;
}

/**
 * Loop-mount `image` read-only on a fresh temp dir, run `fn(dir)`, then always
 * unmount (lazily if still busy) and remove the dir. Skips the test (reason
 * names `mount`) when not root or loop devices are unavailable; if the mount
 * itself fails with a loop-device error it also skips, any other mount error
 * (e.g. a corrupt filesystem) fails the test. Without `ctx` it cannot skip
 * and throws instead.
 */
export function withLoopMount<T>(ctx: Mocha.Context, image: string, fn: (dir: string) => Promise<T>): Promise<T>;
export function withLoopMount<T>(image: string, fn: (dir: string) => Promise<T>): Promise<T>;
export async function withLoopMount<T>(...args: [Mocha.Context, string, (dir: string) => Promise<T>] | [string, (dir: string) => Promise<T>]): Promise<T> {
  const [ctx, image, fn] = args.length === 3 ? args : [undefined, ...args];
  const skipOrThrow = (reason: string): never => {
    if (ctx !== undefined) skipWith(ctx, reason);
    throw new Error(`withLoopMount(${image}): ${reason}`);
  };
  const problem = await loopProblem();
  if (problem !== undefined) skipOrThrow(problem);
  const mnt = await tmpDir('mnt');
  try {
    const r = await run('mount', ['-o', 'loop,ro', image, mnt.path], { allowFail: true });
    if (r.code !== 0) {
      if (/loop device|failed to setup loop|no such device/i.test(r.stderr)) {
        skipOrThrow(`needs mount with a working loop device (${r.stderr.trim()})`);
      }
      throw new Error(`mount -o loop,ro ${image} failed (exit ${r.code}): ${r.stderr.trim()}`);
    }
    try {
      return await fn(mnt.path);
    } finally {
      await unmount(mnt.path);
    }
  } finally {
    await mnt.cleanup();
  }
}

async function unmount(dir: string): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const r = await run('umount', [dir], { allowFail: true });
    if (r.code === 0) return;
    if (!/busy/i.test(r.stderr)) throw new Error(`umount ${dir} failed: ${r.stderr.trim()}`);
    await new Promise((res) => setTimeout(res, 100 * (attempt + 1)));
  }
  await run('umount', ['-l', dir]);
}

// --- umoci -------------------------------------------------------------------

export interface Unpacked {
  /** The flattened root filesystem (`<bundle>/rootfs`). */
  readonly rootfs: string;
  /** The OCI runtime bundle dir (holds config.json and rootfs/). */
  readonly bundle: string;
  cleanup(): Promise<void>;
}

/**
 * `umoci unpack --image layout:tag` into a temp dir: the reference flattening
 * (whiteouts, opaque dirs, hardlinks, xattrs). With `ctx`, skips (naming
 * umoci) when umoci is missing; without, `run` rejects. Run as
 * root so ownership is kept; as non-root it uses `--rootless` and ownership
 * is not faithful (callers comparing uid/gid should `requireRoot` first).
 */
export function umociUnpack(ctx: Mocha.Context, layout: string, tag: string): Promise<Unpacked>;
export function umociUnpack(layout: string, tag: string): Promise<Unpacked>;
export async function umociUnpack(...args: [Mocha.Context, string, string] | [string, string]): Promise<Unpacked> {
  const [ctx, layout, tag] = args.length === 3 ? args : [undefined, ...args];
  if (ctx !== undefined) requireTool(ctx, 'umoci');
  const tmp = await tmpDir('umoci');
  const bundle = path.join(tmp.path, 'bundle');
  try {
    const args = ['unpack', ...(isRoot() ? [] : ['--rootless']), '--image', `${layout}:${tag}`, bundle];
    await run('umoci', args);
  } catch (e) {
    await tmp.cleanup();
    throw e;
  }
  return { rootfs: path.join(bundle, 'rootfs'), bundle, cleanup: tmp.cleanup };
}
