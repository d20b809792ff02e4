/**
 * A real CNCF distribution registry (Debian's `docker-registry`) on a free
 * loopback port, for tests: anonymous, or with htpasswd Basic auth (needs
 * `htpasswd` from apache2-utils). Its storage is a temp dir the test may
 * tamper with (`blobDataPath`). Test-only code.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { requireTool, run, type TmpDir, tmpDir } from './tools.js';

export type RegistryAuthMode = { readonly kind: 'none' } | { readonly kind: 'htpasswd'; readonly user: string; readonly password: string };

export interface RegistryServer {
  /** `127.0.0.1:PORT` */
  readonly host: string;
  readonly storage: string;
  /** Where the registry keeps a blob's bytes. */
  blobDataPath(digest: string): string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Skips the test unless docker-registry (and htpasswd when `auth` needs it) is installed. */
export function requireRegistry(ctx: Mocha.Context, auth: RegistryAuthMode = { kind: 'none' }): void {
  requireTool(ctx, 'docker-registry', ...(auth.kind === 'htpasswd' ? ['htpasswd'] : []));
}

function probe(host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get(`http://${host}/v2/`, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('error', () => resolve(false));
    req.setTimeout(1000, () => req.destroy());
  });
}

export async function startRegistry(auth: RegistryAuthMode = { kind: 'none' }): Promise<RegistryServer> {
  const dir: TmpDir = await tmpDir('registry');
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const storage = path.join(dir.path, 'storage');
  let authYaml = '';
  if (auth.kind === 'htpasswd') {
    const { stdout } = await run('htpasswd', ['-Bbn', auth.user, auth.password]);
    const file = path.join(dir.path, 'htpasswd');
    await writeFile(file, stdout.trim() + '\n');
    authYaml = `auth:\n  htpasswd:\n    realm: test-realm\n    path: ${file}\n`;
  }
  const config = path.join(dir.path, 'config.yml');
  await writeFile(
    config,
    `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${storage}\n  delete:\n    enabled: true\nhttp:\n  addr: ${host}\n${authYaml}`,
  );
  const child: ChildProcess = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => {
    stderr = (stderr + b.toString('utf8')).slice(-4000);
  });
  let exited = false;
  child.on('exit', () => {
    exited = true;
  });
  const deadline = Date.now() + 20_000;
  while (!(await probe(host))) {
    if (exited || Date.now() > deadline) {
      child.kill();
      await dir.cleanup();
      throw new Error(`docker-registry did not start on ${host}: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    host,
    storage,
    blobDataPath: (digest: string) => {
      const hex = digest.replace(/^sha256:/, '');
      return path.join(storage, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
    },
    stop: async () => {
      if (!exited) {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await gone;
      }
      await dir.cleanup();
    },
  };
}
