/**
 * An S3-compatible server on loopback for the tests: s3rver@3.7.1 (the npm
 * devDependency), in a child process, on 127.0.0.1 with a free port and a
 * temp directory, with one bucket made. Test-only code.
 *
 * s3rver's quirks stay here, never in the product's defaults:
 *  - it can't check the SDK's default flexible checksums, so the client needs
 *    `requestChecksumCalculation`/`responseChecksumValidation: 'WHEN_REQUIRED'`;
 *  - its list continuation tokens use DES, which OpenSSL 3 has only in the
 *    legacy provider, so it runs under `node --openssl-legacy-provider`
 *    (hence the child process: the flag can't be turned on in a running node);
 *  - it takes the fixed credentials S3RVER/S3RVER.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { S3ClientConfig } from '@aws-sdk/client-s3';
import { skipWith, tmpDir } from './tools.js';

// The SDK warns once per process that its releases after January 2027 need node 22; on node 20 that is noise in test output.
process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

export interface S3TestServer {
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string;
  readonly bucket: string;
  /** Pass as `s3ClientConfig`: s3rver's checksum quirks, its credentials and a region. */
  readonly clientConfig: S3ClientConfig;
  /** Stops the server and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

export interface StartS3ServerOptions {
  /** @default 'chunkyard-test' */
  readonly bucket?: string;
}

/** Why s3rver can't be started here (not installed), or undefined. */
export function s3rverProblem(): string | undefined {
  try {
    createRequire(import.meta.url).resolve('s3rver');
    return undefined;
  } catch {
    return 'needs s3rver (npm devDependency s3rver@3.7.1: run npm ci)';
  }
}

export async function startS3Server(options: StartS3ServerOptions = {}): Promise<S3TestServer> {
  const problem = s3rverProblem();
  if (problem !== undefined) throw new Error(problem);
  const bucket = options.bucket ?? 'chunkyard-test';
  const dir = await tmpDir('s3rver');
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 's3rver-child.js');
  const child = spawn(process.execPath, ['--openssl-legacy-provider', script, path.join(dir.path, 'data'), bucket], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let port: number;
  try {
    port = await waitForPort(child);
  } catch (e) {
    child.kill('SIGKILL');
    await dir.cleanup();
    throw e;
  }
  let stopped: Promise<void> | undefined;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    clientConfig: {
      region: 'us-east-1',
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    },
    stop: () => {
      stopped ??= (async () => {
        await stopChild(child);
        await dir.cleanup();
      })();
      return stopped;
    },
  };
}

/**
 * For a `before` hook: the server, or a skip of the suite whose reason names
 * s3rver when it is not installed or does not start.
 */
export async function requireS3Server(ctx: Mocha.Context, options: StartS3ServerOptions = {}): Promise<S3TestServer> {
  const problem = s3rverProblem();
  if (problem !== undefined) skipWith(ctx, problem);
  try {
    return await startS3Server(options);
  } catch (e) {
    skipWith(ctx, `needs s3rver, which did not start: ${(e as Error).message.split('\n')[0]}`);
  }
}

function waitForPort(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => finish(new Error(`s3rver did not start within 30 s: ${err.trim().slice(-500)}`)), 30_000);
    const finish = (result: number | Error): void => {
      clearTimeout(timer);
      child.stdout?.removeAllListeners('data');
      child.removeAllListeners('exit');
      child.removeAllListeners('error');
      // Keep draining so the child never blocks on a full pipe.
      child.stdout?.resume();
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    child.stderr?.on('data', (b: Buffer) => {
      err = (err + b.toString('utf8')).slice(-4000);
    });
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString('utf8');
      const m = /^listening (\d+)$/m.exec(out);
      if (m !== null) finish(Number(m[1]));
    });
    child.on('error', (e) => finish(e));
    child.on('exit', (code, signal) => finish(new Error(`s3rver exited (${signal ?? code}) before listening: ${err.trim().slice(-500)}`)));
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stdin?.end(); // the child exits when its stdin closes
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}
