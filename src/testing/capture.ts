/**
 * Run the CLI in-process with captured output: `const c = captureIO();
 * const code = await main(argv, c.io); c.stdout()`. Test-only code.
 */
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { MainIO } from '../cli/main.js';

/**
 * Commands that read published images keep a disk cache under
 * $XDG_CACHE_HOME; tests must not fill the user's. One per test process,
 * removed when it exits (unless a test passes its own env).
 */
let testCacheHome: string | undefined;
function cacheHome(): string {
  if (testCacheHome === undefined) {
    const dir = path.join(tmpdir(), `chunkyard-test-cache-${process.pid}`);
    testCacheHome = dir;
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return testCacheHome;
}

export interface CapturedIO {
  /** Pass to main(); carries its own AbortSignal so main() installs no process signal handlers. */
  readonly io: MainIO;
  /** Aborts io.signal (simulates Ctrl-C). */
  abort(): void;
  stdout(): Buffer;
  stdoutText(): string;
  stderr(): string;
}

export interface CaptureOptions {
  readonly env?: Readonly<Record<string, string | undefined>>;
  /**
   * A small buffer and a deferred callback on stdout, so writers that ignore
   * backpressure overrun `highWaterMark` (see `maxBuffered`).
   */
  readonly slowStdout?: boolean;
}

export function captureIO(options: CaptureOptions = {}): CapturedIO & { maxBuffered(): number } {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let maxBuffered = 0;
  const stdout: Writable = new Writable({
    highWaterMark: options.slowStdout === true ? 1024 : 16384,
    write(chunk: Buffer, _enc, cb) {
      out.push(Buffer.from(chunk));
      maxBuffered = Math.max(maxBuffered, stdout.writableLength);
      if (options.slowStdout === true) setImmediate(cb);
      else cb();
    },
  });
  const stderr = new Writable({
    write(chunk: Buffer, _enc, cb) {
      err.push(Buffer.from(chunk));
      cb();
    },
  });
  const controller = new AbortController();
  return {
    io: { stdout, stderr, env: options.env ?? { XDG_CACHE_HOME: cacheHome() }, signal: controller.signal },
    abort: () => controller.abort(),
    stdout: () => Buffer.concat(out),
    stdoutText: () => Buffer.concat(out).toString('utf8'),
    stderr: () => Buffer.concat(err).toString('utf8'),
    maxBuffered: () => maxBuffered,
  };
}
