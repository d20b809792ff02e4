/**
 * A real CNCF distribution registry (Debian's `docker-registry`) on a free
 * loopback port, for tests: anonymous, with htpasswd Basic auth (needs
 * `htpasswd` from apache2-utils), or with token auth (JWTs from a token
 * server the test runs, see token-server.ts); plain HTTP or TLS (optionally
 * requiring client certificates). Its storage is a temp dir the test may
 * tamper with (`blobDataPath`). Test-only code.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { requireTool, run, type TmpDir, tmpDir } from './tools.js';

export type RegistryAuthMode =
  | { readonly kind: 'none' }
  | { readonly kind: 'htpasswd'; readonly user: string; readonly password: string }
  /** distribution's `auth.token`: tokens from `realm`, signed by a key whose certificate is in `rootCertBundle`. */
  | { readonly kind: 'token'; readonly realm: string; readonly service: string; readonly issuer: string; readonly rootCertBundle: string };

export interface RegistryServerOptions {
  /** Serve HTTPS with this certificate and key (PEM files); `clientCas` makes client certificates mandatory. */
  readonly tls?: { readonly cert: string; readonly key: string; readonly clientCas?: readonly string[] };
}

export interface RegistryServer {
  /** `127.0.0.1:PORT` */
  readonly host: string;
  /** `http://HOST` or `https://HOST`. */
  readonly url: string;
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

function probe(host: string, tls: boolean): Promise<boolean> {
  if (tls) {
    // A TLS registry may insist on client certificates: that it accepts connections is enough.
    return new Promise((resolve) => {
      const [h, p] = [host.slice(0, host.lastIndexOf(':')), Number(host.slice(host.lastIndexOf(':') + 1))];
      const sock = net.connect(p, h, () => {
        sock.destroy();
        resolve(true);
      });
      sock.on('error', () => resolve(false));
      sock.setTimeout(1000, () => sock.destroy());
    });
  }
  return new Promise((resolve) => {
    const req = http.get(`http://${host}/v2/`, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('error', () => resolve(false));
    req.setTimeout(1000, () => req.destroy());
  });
}

export async function startRegistry(auth: RegistryAuthMode = { kind: 'none' }, options: RegistryServerOptions = {}): Promise<RegistryServer> {
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
  } else if (auth.kind === 'token') {
    authYaml = `auth:\n  token:\n    realm: ${auth.realm}\n    service: ${auth.service}\n    issuer: ${auth.issuer}\n    rootcertbundle: ${auth.rootCertBundle}\n`;
  }
  const tls = options.tls;
  let tlsYaml = '';
  if (tls !== undefined) {
    tlsYaml = `  tls:\n    certificate: ${tls.cert}\n    key: ${tls.key}\n`;
    if (tls.clientCas !== undefined && tls.clientCas.length > 0) tlsYaml += `    clientcas:\n${tls.clientCas.map((c) => `      - ${c}\n`).join('')}`;
  }
  const config = path.join(dir.path, 'config.yml');
  await writeFile(
    config,
    `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${storage}\n  delete:\n    enabled: true\nhttp:\n  addr: ${host}\n${tlsYaml}${authYaml}`,
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
  while (!(await probe(host, tls !== undefined))) {
    if (exited || Date.now() > deadline) {
      child.kill();
      await dir.cleanup();
      throw new Error(`docker-registry did not start on ${host}: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    host,
    url: `${tls !== undefined ? 'https' : 'http'}://${host}`,
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
