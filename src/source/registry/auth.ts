/**
 * Registry credentials, looked up as skopeo and docker do (reference/oci.md
 * §8): `--creds USER:PASS`; else the one auth file named by `--authfile` or
 * REGISTRY_AUTH_FILE; else podman's `$XDG_RUNTIME_DIR/containers/auth.json`
 * and docker's `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`).
 * Within a file: a `credHelpers` entry for the registry, then `credsStore`,
 * then `auths` (keys may be URLs or carry a repository path; the most
 * specific match wins). Helpers speak the `docker-credential-NAME get`
 * protocol. No credentials anywhere means anonymous.
 *
 * The library reads no environment of its own: the caller hands in an
 * env-like object. Secrets never appear in messages.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { InputError, UsageError } from '../../errors.js';
import { DOCKER_HUB_DOMAIN } from './reference.js';

export type Credentials =
  | { readonly kind: 'basic'; readonly username: string; readonly password: string }
  /** An OAuth refresh token (`identitytoken`, or a helper's `<token>` user). */
  | { readonly kind: 'identity-token'; readonly token: string };

export interface CredentialOptions {
  /** `USER:PASS` (split at the first colon), or `USER` with no password refused. */
  readonly creds?: string;
  /** The only auth file consulted when given (skopeo's --authfile). */
  readonly authFile?: string;
  /** Environment: REGISTRY_AUTH_FILE, DOCKER_CONFIG, XDG_RUNTIME_DIR, HOME, PATH. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Runs `docker-credential-NAME get`; replaceable in tests. Defaults to spawning it on env.PATH. */
  readonly runHelper?: HelperRunner;
}

/** Runs a credential helper's `get` with `serverUrl` on stdin; undefined when it has no credentials. */
export type HelperRunner = (helper: string, serverUrl: string) => Promise<{ readonly username: string; readonly secret: string } | undefined>;

/** `USER:PASS` → credentials; UsageError when malformed (the message never echoes the password). */
export function parseCreds(s: string): Credentials {
  const colon = s.indexOf(':');
  if (colon <= 0) throw new UsageError('--creds must be USERNAME:PASSWORD (the username is empty or the colon is missing)');
  return { kind: 'basic', username: s.slice(0, colon), password: s.slice(colon + 1) };
}

/**
 * The auth files to consult, in order. An explicit file (flag, then
 * REGISTRY_AUTH_FILE) is the only one.
 */
export function authFilePaths(options: CredentialOptions): string[] {
  const env = options.env ?? {};
  const explicit = options.authFile ?? nonEmpty(env['REGISTRY_AUTH_FILE']);
  if (explicit !== undefined) return [explicit];
  const files: string[] = [];
  const runtime = nonEmpty(env['XDG_RUNTIME_DIR']);
  if (runtime !== undefined) files.push(path.join(runtime, 'containers', 'auth.json'));
  const dockerConfig = nonEmpty(env['DOCKER_CONFIG']);
  const home = nonEmpty(env['HOME']);
  if (dockerConfig !== undefined) files.push(path.join(dockerConfig, 'config.json'));
  else if (home !== undefined) files.push(path.join(home, '.docker', 'config.json'));
  return files;
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s;
}

/**
 * A config key as the registry it names: scheme and trailing slash dropped,
 * Docker Hub's spellings folded into `docker.io`. A path after the host is
 * kept (keys may be `host/namespace`), except Hub's legacy `/v1/`.
 */
export function normalizeAuthKey(key: string): string {
  let k = key.replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '');
  const slash = k.indexOf('/');
  let host = slash < 0 ? k : k.slice(0, slash);
  let rest = slash < 0 ? '' : k.slice(slash);
  if (host === 'index.docker.io' || host === 'registry-1.docker.io' || host === DOCKER_HUB_DOMAIN) {
    host = DOCKER_HUB_DOMAIN;
    if (rest === '/v1' || rest === '/v2') rest = '';
  } else if (/^\/v[12]$/.test(rest)) {
    rest = '';
  }
  k = host + rest;
  return k;
}

/** What a helper is asked for: Docker Hub's historical URL, else the bare host. */
export function helperServerUrl(domain: string): string {
  return domain === DOCKER_HUB_DOMAIN ? 'https://index.docker.io/v1/' : domain;
}

interface AuthFile {
  readonly auths?: Record<string, { auth?: string; identitytoken?: string } | undefined>;
  readonly credHelpers?: Record<string, string | undefined>;
  readonly credsStore?: string;
}

async function readAuthFile(file: string): Promise<AuthFile | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new InputError(`auth file ${file}: ${(e as Error).message}`, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text) as unknown;
  } catch (e) {
    throw new InputError(`auth file ${file}: malformed JSON (${(e as Error).message})`, { cause: e });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new InputError(`auth file ${file}: not a JSON object`);
  return json as AuthFile;
}

/** Keys to try for `domain/repo`, most specific first: `host/a/b`, `host/a`, `host`. */
function scopes(domain: string, repo: string | undefined): string[] {
  const out: string[] = [];
  if (repo !== undefined) {
    const parts = repo.split('/');
    for (let n = parts.length; n > 0; n--) out.push(`${domain}/${parts.slice(0, n).join('/')}`);
  }
  out.push(domain);
  return out;
}

function decodeAuth(auth: string, file: string, key: string): Credentials {
  const plain = Buffer.from(auth, 'base64').toString('utf8');
  const colon = plain.indexOf(':');
  if (colon < 0) throw new InputError(`auth file ${file}: auths[${JSON.stringify(key)}].auth is not base64 of USER:PASSWORD`);
  return { kind: 'basic', username: plain.slice(0, colon), password: plain.slice(colon + 1).replace(/\n+$/, '') };
}

async function fromHelper(run: HelperRunner, helper: string, domain: string): Promise<Credentials | undefined> {
  const got = await run(helper, helperServerUrl(domain));
  if (got === undefined) return undefined;
  if (got.username === '<token>') return { kind: 'identity-token', token: got.secret };
  return { kind: 'basic', username: got.username, password: got.secret };
}

async function fromFile(file: string, cfg: AuthFile, domain: string, repo: string | undefined, run: HelperRunner): Promise<Credentials | undefined> {
  for (const [key, helper] of Object.entries(cfg.credHelpers ?? {})) {
    if (typeof helper === 'string' && normalizeAuthKey(key) === domain) {
      const c = await fromHelper(run, helper, domain);
      if (c !== undefined) return c;
    }
  }
  if (typeof cfg.credsStore === 'string' && cfg.credsStore !== '') {
    const c = await fromHelper(run, cfg.credsStore, domain);
    if (c !== undefined) return c;
  }
  const auths = Object.entries(cfg.auths ?? {});
  for (const want of scopes(domain, repo)) {
    for (const [key, entry] of auths) {
      if (entry === undefined || normalizeAuthKey(key) !== want) continue;
      if (typeof entry.identitytoken === 'string' && entry.identitytoken !== '') return { kind: 'identity-token', token: entry.identitytoken };
      if (typeof entry.auth === 'string' && entry.auth !== '') return decodeAuth(entry.auth, file, key);
    }
  }
  return undefined;
}

/**
 * Credentials for `domain` (and optionally the repository, for
 * namespace-scoped `auths` keys), or undefined for anonymous access.
 */
export async function lookupCredentials(domain: string, repo: string | undefined, options: CredentialOptions = {}): Promise<Credentials | undefined> {
  if (options.creds !== undefined) return parseCreds(options.creds);
  const run = options.runHelper ?? spawnHelper(options.env ?? {});
  for (const file of authFilePaths(options)) {
    const cfg = await readAuthFile(file);
    if (cfg === undefined) {
      // An auth file the user named must exist; default locations may not.
      if (options.authFile !== undefined) throw new InputError(`auth file ${file}: no such file`);
      continue;
    }
    const c = await fromFile(file, cfg, domain, repo, run);
    if (c !== undefined) return c;
  }
  return undefined;
}

/** The default HelperRunner: spawns `docker-credential-NAME get` found on env.PATH. */
export function spawnHelper(env: Readonly<Record<string, string | undefined>>): HelperRunner {
  return (helper, serverUrl) =>
    new Promise((resolve, reject) => {
      if (!/^[A-Za-z0-9._-]+$/.test(helper)) {
        reject(new InputError(`credential helper name ${JSON.stringify(helper)} is invalid`));
        return;
      }
      const exe = `docker-credential-${helper}`;
      const childEnv: Record<string, string> = {};
      for (const k of ['PATH', 'HOME', 'XDG_RUNTIME_DIR', 'DBUS_SESSION_BUS_ADDRESS']) {
        const v = env[k];
        if (v !== undefined) childEnv[k] = v;
      }
      const child = spawn(exe, ['get'], { env: childEnv, stdio: ['pipe', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      child.on('error', (e: NodeJS.ErrnoException) => {
        reject(new InputError(e.code === 'ENOENT' ? `credential helper ${exe} not found on PATH` : `credential helper ${exe}: ${e.message}`, { cause: e }));
      });
      child.on('close', (code) => {
        const stdout = Buffer.concat(out).toString('utf8').trim();
        if (code !== 0) {
          // The helper protocol's "not found" answer means: no credentials, go anonymous.
          if (/credentials not found/i.test(stdout)) {
            resolve(undefined);
            return;
          }
          const why = (Buffer.concat(err).toString('utf8').trim() || stdout).split('\n')[0]?.slice(0, 200) ?? '';
          reject(new InputError(`credential helper ${exe} failed (exit ${code ?? 'signal'})${why !== '' ? `: ${why}` : ''}`));
          return;
        }
        let json: unknown;
        try {
          json = JSON.parse(stdout) as unknown;
        } catch {
          reject(new InputError(`credential helper ${exe} printed something that is not JSON`));
          return;
        }
        const o = (typeof json === 'object' && json !== null ? json : {}) as Record<string, unknown>;
        if (typeof o['Username'] !== 'string' || typeof o['Secret'] !== 'string') {
          reject(new InputError(`credential helper ${exe}: answer lacks Username or Secret`));
          return;
        }
        resolve({ username: o['Username'], secret: o['Secret'] });
      });
      child.stdin.on('error', () => {}); // a helper that exits without reading stdin
      child.stdin.end(serverUrl);
    });
}
