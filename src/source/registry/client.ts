/**
 * A Distribution API v2 client for pulling one repository (reference/oci.md
 * §8): `/v2/` ping (which also settles https vs http and the auth scheme),
 * manifests with the full Accept list and their digests checked, blobs
 * streamed with size and digest checked and a broken transfer resumed with
 * a Range request. Auth is whatever the ping's challenge asks for: none,
 * Basic, or Bearer tokens (fetched from the realm, cached until shortly
 * before they expire, fetched again on a 401; a 401 `insufficient_scope`
 * adds the scope it names to the token request). 5xx, 429 and network
 * failures are retried with exponential backoff, honouring Retry-After.
 * TLS trust comes from --cert-dir, else from a `HOST[:PORT]` directory under
 * the certs.d roots the caller names (containers-certs.d(5)).
 *
 * Failures, by class (and so by CLI exit code): 401/403 from the registry or
 * the token server, an untrusted TLS certificate or refused handshake, an
 * unreachable host → InputError (3); MANIFEST_UNKNOWN, NAME_UNKNOWN,
 * BLOB_UNKNOWN or another 404 → NotFoundError (4); a manifest or blob whose
 * digest or size is wrong → IntegrityError (5). Messages name the image and
 * never carry a password or token (URLs lose their query string).
 */
import type { IncomingMessage } from 'node:http';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline, Readable } from 'node:stream';
import { ChunkyardError, InputError, IntegrityError, InterruptedError, NotFoundError } from '../../errors.js';
import { type Digest, sha256Digest } from '../digest.js';
import { createVerifier } from '../verify.js';
import { type CredentialOptions, type Credentials, lookupCredentials } from './auth.js';
import { HttpAgent, readBody, redact, TlsError, TransientError } from './http.js';
import type { DockerImageName } from './reference.js';

/** How to reach registries: the options `docker://` sources take. */
export interface RegistryOptions {
  /** Verify TLS certificates (default true). false also allows plain HTTP. */
  readonly tlsVerify?: boolean;
  /** A directory of `*.crt` CA certificates and an optional `*.cert`/`*.key` client pair (containers' certs.d layout). */
  readonly certDir?: string;
  /**
   * When `certDir` is not given: certs.d roots searched, in order, for a
   * `HOST[:PORT]` directory named after the registry (the first that exists
   * is used, as containers/image does). The library reads no fixed paths of
   * its own: the CLI passes /etc/containers/certs.d, /etc/docker/certs.d and
   * friends. @default []
   */
  readonly certDirRoots?: readonly string[];
  /** Where credentials come from (`--creds`, auth files, helpers). */
  readonly credentials?: CredentialOptions;
  /** Retries of one request on 5xx, 429 or a network failure. @default 4 */
  readonly retries?: number;
  /** First backoff delay; doubles each retry. @default 500 */
  readonly retryBaseMs?: number;
  /** Cap on any wait, Retry-After included. @default 30000 */
  readonly maxRetryDelayMs?: number;
  /** Idle timeout per request (no bytes for this long). @default 60000 */
  readonly timeoutMs?: number;
  /** How often one blob download may break and be resumed. @default 5 */
  readonly blobResumes?: number;
  /** Layers downloaded ahead of the one being read (0: each when it is opened). @default 3 */
  readonly prefetchLayers?: number;
  /** Where layer downloads are kept while read (a `chunkyard-pull-*` directory, removed on close). @default os.tmpdir() */
  readonly tempDir?: string;
}

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

const USER_AGENT = 'chunkyard';

type Challenge =
  | { readonly scheme: 'none' }
  | { readonly scheme: 'basic' }
  | {
      readonly scheme: 'bearer';
      readonly realm: string;
      readonly service?: string;
      /** The scopes a 401 says the request needs (`scope="…"`, space-separated in the header). */
      readonly scope?: readonly string[];
      /** `error="…"` of a 401, e.g. `insufficient_scope` or `invalid_token`. */
      readonly error?: string;
    };

/** Parses `WWW-Authenticate` (one or more challenges); Bearer is preferred over Basic. */
export function parseChallenge(header: string | undefined): Challenge | undefined {
  if (header === undefined) return undefined;
  const challenges: { scheme: string; params: Record<string, string> }[] = [];
  const re = /\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?:\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*))?\s*,?/gy;
  let m: RegExpExecArray | null;
  while ((m = re.exec(header)) !== null && m[0] !== '') {
    const [, token, value] = m as unknown as [string, string, string | undefined];
    if (value === undefined) {
      challenges.push({ scheme: token.toLowerCase(), params: {} });
    } else {
      const cur = challenges[challenges.length - 1];
      if (cur === undefined) continue;
      cur.params[token.toLowerCase()] = value.startsWith('"') ? value.slice(1, -1).replace(/\\(.)/g, '$1') : value;
    }
  }
  const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params['realm'] !== undefined);
  if (bearer !== undefined) {
    const { service, scope, error } = bearer.params;
    const scopes = scope?.split(' ').filter((x) => x !== '');
    return {
      scheme: 'bearer',
      realm: bearer.params['realm'] as string,
      ...(service !== undefined ? { service } : {}),
      ...(scopes !== undefined && scopes.length > 0 ? { scope: scopes } : {}),
      ...(error !== undefined ? { error } : {}),
    };
  }
  if (challenges.some((c) => c.scheme === 'basic')) return { scheme: 'basic' };
  return undefined;
}

/** Seconds or an HTTP date, in ms from now; undefined when absent or unreadable. */
export function parseRetryAfter(v: string | undefined, now = Date.now()): number | undefined {
  if (v === undefined) return undefined;
  if (/^\s*\d+\s*$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new InterruptedError('interrupted'));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(t);
      reject(new InterruptedError('interrupted'));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function isLoopback(host: string): boolean {
  const h = host.replace(/:[0-9]+$/, '');
  return h === 'localhost' || h === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** The `errors` of a registry's JSON error body, as `CODE: message` (best effort). */
async function errorSummary(res: IncomingMessage): Promise<{ codes: string[]; text: string }> {
  let body: Buffer;
  try {
    body = await readBody(res, 64 * 1024, 'error body');
  } catch {
    return { codes: [], text: '' };
  }
  try {
    const json = JSON.parse(body.toString('utf8')) as { errors?: { code?: unknown; message?: unknown }[] };
    const errs = Array.isArray(json.errors) ? json.errors : [];
    const codes = errs.map((e) => String(e.code ?? ''));
    const text = errs.map((e) => `${String(e.code ?? '')}${e.message !== undefined ? `: ${String(e.message)}` : ''}`).join('; ');
    return { codes, text };
  } catch {
    return { codes: [], text: body.toString('utf8').slice(0, 200).replace(/\s+/g, ' ').trim() };
  }
}

export interface FetchedManifest {
  readonly bytes: Buffer;
  readonly digest: Digest;
  /** From Content-Type, parameters dropped ('' when absent). */
  readonly mediaType: string;
}

interface Token {
  readonly value: string;
  /** The scopes it was asked for, joined: a token for fewer scopes is not reused once more are needed. */
  readonly scopes: string;
  readonly expiresAt: number;
  /** When to fetch a new one: a little before expiry, so a token does not lapse between check and use. */
  readonly refreshAt: number;
}

/**
 * The certs.d directory for `hostPort` (`host` or `host:port`, exactly as the
 * image reference spells it): `ROOT/hostPort` under the first root where it
 * exists. Roots that are missing or unreadable are skipped, as
 * containers/image does (docker_client.go dockerCertDir).
 */
export async function findCertDir(roots: readonly string[], hostPort: string): Promise<string | undefined> {
  for (const root of roots) {
    const dir = path.join(root, hostPort);
    try {
      await stat(dir);
      return dir;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EACCES' || code === 'EPERM') continue;
      throw new InputError(`certificate directory ${dir}: ${(e as Error).message}`, { cause: e });
    }
  }
  return undefined;
}

/** `SCHEME:NAME:ACTIONS` as in the token spec (NAME may hold colons: a host with a port). */
const SCOPE_RE = /^[a-z0-9]+(?:\([a-z0-9]+\))?:[^\s]+:[a-z0-9_*,-]+$/i;
/** At most this many extra scopes are asked for on behalf of a registry's challenges. */
const MAX_EXTRA_SCOPES = 8;

/**
 * Loads a certs.d-style directory as containers/image does: every `*.crt` is
 * a CA certificate added to the system roots; every `NAME.cert` is a client
 * certificate whose key is `NAME.key` (one without the other is refused).
 * `label` starts the error messages (`--cert-dir`, or `certificate
 * directory` for one found under the certs.d roots).
 */
export async function readCertDir(dir: string, label = '--cert-dir'): Promise<{ ca: string[]; cert: string[]; key: string[] }> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputError(`${label} ${dir}: ${code === 'ENOENT' ? 'no such directory' : code === 'ENOTDIR' ? 'not a directory' : (e as Error).message}`, { cause: e });
  }
  const have = new Set(names);
  const ca: string[] = [];
  const cert: string[] = [];
  const key: string[] = [];
  const read = async (n: string): Promise<string> => {
    try {
      return await readFile(path.join(dir, n), 'utf8');
    } catch (e) {
      throw new InputError(`${label} ${dir}: cannot read ${n}: ${(e as Error).message}`, { cause: e });
    }
  };
  for (const n of names.sort()) {
    if (n.endsWith('.crt')) {
      ca.push(await read(n));
    } else if (n.endsWith('.cert')) {
      const k = `${n.slice(0, -'.cert'.length)}.key`;
      if (!have.has(k)) throw new InputError(`${label} ${dir}: client certificate ${n} has no key ${k} beside it`);
      cert.push(await read(n));
      key.push(await read(k));
    } else if (n.endsWith('.key')) {
      const c = `${n.slice(0, -'.key'.length)}.cert`;
      if (!have.has(c)) throw new InputError(`${label} ${dir}: key ${n} has no client certificate ${c} beside it`);
    }
  }
  return { ca, cert, key };
}

export class RegistryClient {
  readonly name: DockerImageName;
  readonly #options: RegistryOptions;
  #agent: HttpAgent | undefined;
  /** `https://host` or `http://host`, settled by the ping. */
  #base: string | undefined;
  #challenge: Challenge | undefined;
  #credentials: Promise<Credentials | undefined> | undefined;
  #token: Token | undefined;
  /** The token request in flight, shared by concurrent requests (parallel layer downloads) wanting the same scopes. */
  #tokenFetch: { readonly scopes: string; readonly promise: Promise<Token> } | undefined;
  #ping: Promise<void> | undefined;
  #reauths = 0;
  /** Scopes beyond our pull scope that the registry's insufficient_scope challenges asked for. */
  readonly #extraScopes = new Set<string>();
  /** The certs.d directory used (given or found), for the hint in a TLS error. */
  #certDirUsed: string | undefined;

  constructor(name: DockerImageName, options: RegistryOptions = {}) {
    this.name = name;
    this.#options = options;
  }

  get options(): RegistryOptions {
    return this.#options;
  }

  get #what(): string {
    return `docker://${this.name.familiar}`;
  }

  get #retries(): number {
    return this.#options.retries ?? 4;
  }

  #backoff(attempt: number, retryAfter?: number): number {
    const max = this.#options.maxRetryDelayMs ?? 30_000;
    const base = this.#options.retryBaseMs ?? 500;
    return Math.min(max, retryAfter ?? base * 2 ** attempt);
  }

  async #agentFor(): Promise<HttpAgent> {
    if (this.#agent !== undefined) return this.#agent;
    let certs = {};
    if (this.#options.certDir !== undefined) {
      certs = await readCertDir(this.#options.certDir);
      this.#certDirUsed = this.#options.certDir;
    } else {
      const found = await findCertDir(this.#options.certDirRoots ?? [], this.name.apiHost);
      if (found !== undefined) {
        certs = await readCertDir(found, 'certificate directory');
        this.#certDirUsed = found;
      }
    }
    this.#agent ??= new HttpAgent({ verify: this.#options.tlsVerify ?? true, ...certs }, this.#options.timeoutMs ?? 60_000);
    return this.#agent;
  }

  /** Settles scheme and auth challenge once (containers/image also takes the challenge from `/v2/`). */
  ping(signal?: AbortSignal): Promise<void> {
    this.#ping ??= this.#doPing(signal).catch((e: unknown) => {
      this.#ping = undefined;
      throw e;
    });
    return this.#ping;
  }

  async #doPing(signal: AbortSignal | undefined): Promise<void> {
    const host = this.name.apiHost;
    const plainAllowed = this.#options.tlsVerify === false || isLoopback(host);
    const schemes = plainAllowed ? ['https', 'http'] : ['https'];
    let lastError: unknown;
    for (const scheme of schemes) {
      const url = new URL(`${scheme}://${host}/v2/`);
      let res: IncomingMessage;
      try {
        // With a plain-HTTP fallback, a failed https attempt is not retried: it falls back at once.
        const last = scheme === schemes[schemes.length - 1];
        res = last ? await this.#withRetries(() => this.#send('GET', url, {}, signal), `ping ${url.href}`, signal) : await this.#send('GET', url, {}, signal);
      } catch (e) {
        // A TLS server that we do not trust, or that refuses us: plain HTTP would not help.
        if (e instanceof TlsError) throw this.#tlsError(e);
        if (!(e instanceof TransientError)) throw e;
        lastError = e;
        continue;
      }
      const status = res.statusCode ?? 0;
      if (status === 200) {
        res.resume();
        this.#challenge = { scheme: 'none' };
      } else if (status === 401) {
        const challenge = parseChallenge(res.headers['www-authenticate']);
        res.resume();
        if (challenge === undefined) throw new InputError(`${this.#what}: ${url.href} answered 401 without a usable WWW-Authenticate challenge`);
        this.#challenge = challenge;
      } else {
        const { text } = await errorSummary(res);
        throw new InputError(`${this.#what}: ${url.href} answered HTTP ${status}${text !== '' ? ` (${text})` : ''}; is ${host} a container registry?`);
      }
      this.#base = `${scheme}://${host}`;
      return;
    }
    const why = lastError instanceof Error ? lastError.message : String(lastError);
    const hint = plainAllowed ? '' : ' (for a plain-HTTP or self-signed registry use --tls-verify=false, or --cert-dir for a private CA)';
    throw new InputError(`${this.#what}: cannot reach registry ${host}: ${why}${hint}`, { cause: lastError });
  }

  #tlsError(e: TlsError): InputError {
    const host = this.name.apiHost;
    const reason = (e.cause as Error | undefined)?.message ?? e.message;
    const roots = this.#options.certDirRoots ?? [];
    // Where to suggest a file goes: a plain `certs.d` root (the user's or /etc/containers') over the rootful/rootless ones.
    const root = roots.find((r) => path.basename(r) === 'certs.d') ?? roots[0];
    const used = this.#certDirUsed !== undefined ? ` (certificates from ${this.#certDirUsed})` : '';
    if (e.kind === 'certificate') {
      const where = root !== undefined ? ` or as ${path.join(root, host, 'ca.crt')}` : '';
      return new InputError(
        `${this.#what}: the TLS certificate of ${host} is not trusted (${e.tlsCode}: ${reason})${used}; give its CA certificate with --cert-dir DIR (as DIR/NAME.crt)${where}, or skip verification with --tls-verify=false`,
        { cause: e },
      );
    }
    const where = this.#certDirUsed !== undefined ? ` (certificates were read from ${this.#certDirUsed})` : root !== undefined ? ` or in ${path.join(root, host)}` : '';
    return new InputError(`${this.#what}: ${host} refused the TLS handshake (${e.tlsCode}); if it wants a client certificate, put NAME.cert and NAME.key in the --cert-dir directory${where}`, { cause: e });
  }

  #send(method: 'GET' | 'HEAD' | 'POST', url: URL, headers: Record<string, string>, signal: AbortSignal | undefined, body?: string): Promise<IncomingMessage> {
    return this.#agentFor().then((agent) =>
      agent.request({ method, url, headers: { 'user-agent': USER_AGENT, ...headers }, ...(body !== undefined ? { body } : {}), ...(signal !== undefined ? { signal } : {}) }),
    );
  }

  /** Runs `attempt` again on 5xx, 429 and network failures, with backoff. */
  async #withRetries(attempt: () => Promise<IncomingMessage>, what: string, signal: AbortSignal | undefined): Promise<IncomingMessage> {
    for (let n = 0; ; n++) {
      let res: IncomingMessage;
      try {
        res = await attempt();
      } catch (e) {
        if (!(e instanceof TransientError) || n >= this.#retries) throw e;
        await sleep(this.#backoff(n), signal);
        continue;
      }
      const status = res.statusCode ?? 0;
      const retryable = status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
      if (!retryable || n >= this.#retries) return res;
      const retryAfter = parseRetryAfter(res.headers['retry-after'] as string | undefined);
      res.resume();
      await sleep(this.#backoff(n, retryAfter), signal);
      void what;
    }
  }

  #creds(): Promise<Credentials | undefined> {
    this.#credentials ??= lookupCredentials(this.name.domain, this.name.path, this.#options.credentials ?? {});
    return this.#credentials;
  }

  /** The Authorization header for the next request, and the bearer token it carries (to drop it on a 401). */
  async #authorization(signal: AbortSignal | undefined): Promise<{ header?: string; token?: Token }> {
    const c = this.#challenge;
    if (c === undefined || c.scheme === 'none') return {};
    const creds = await this.#creds();
    if (c.scheme === 'basic') {
      if (creds === undefined) return {};
      if (creds.kind !== 'basic') throw new InputError(`${this.#what}: ${this.name.apiHost} wants Basic auth, but the credentials found are an identity token`);
      return { header: `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}` };
    }
    const token = await this.#bearer(c, creds, signal);
    return { header: `Bearer ${token.value}`, token };
  }

  #scopes(): string[] {
    return [`repository:${this.name.path}:pull`, ...this.#extraScopes];
  }

  #bearer(c: Challenge & { scheme: 'bearer' }, creds: Credentials | undefined, signal: AbortSignal | undefined): Promise<Token> {
    const scopes = this.#scopes();
    const key = scopes.join(' ');
    const t = this.#token;
    if (t !== undefined && t.scopes === key && Date.now() < t.refreshAt) return Promise.resolve(t);
    if (this.#tokenFetch !== undefined && this.#tokenFetch.scopes === key) return this.#tokenFetch.promise;
    const promise = this.#fetchToken(c, creds, scopes, signal).then(
      (fresh) => {
        if (this.#tokenFetch?.promise === promise) this.#tokenFetch = undefined;
        this.#token = fresh;
        return fresh;
      },
      (e: unknown) => {
        if (this.#tokenFetch?.promise === promise) this.#tokenFetch = undefined;
        throw e;
      },
    );
    this.#tokenFetch = { scopes: key, promise };
    return promise;
  }

  async #fetchToken(c: Challenge & { scheme: 'bearer' }, creds: Credentials | undefined, scopes: readonly string[], signal: AbortSignal | undefined): Promise<Token> {
    let realm: URL;
    try {
      realm = new URL(c.realm);
    } catch {
      throw new InputError(`${this.#what}: the registry's token realm ${JSON.stringify(c.realm)} is not a URL`);
    }
    let res: IncomingMessage;
    if (creds?.kind === 'identity-token') {
      // OAuth2 form: one `scope` parameter, space-separated.
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.token, scope: scopes.join(' '), client_id: USER_AGENT });
      if (c.service !== undefined) form.set('service', c.service);
      res = await this.#withRetries(
        () => this.#send('POST', realm, { 'content-type': 'application/x-www-form-urlencoded' }, signal, form.toString()),
        'token',
        signal,
      );
    } else {
      const url = new URL(realm);
      if (c.service !== undefined) url.searchParams.set('service', c.service);
      // Docker's token GET: one `scope` parameter per scope.
      for (const sc of scopes) url.searchParams.append('scope', sc);
      const headers: Record<string, string> = {};
      if (creds?.kind === 'basic') {
        url.searchParams.set('account', creds.username);
        headers['authorization'] = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
      }
      res = await this.#withRetries(() => this.#send('GET', url, headers, signal), 'token', signal);
    }
    const status = res.statusCode ?? 0;
    if (status === 401 || status === 403) {
      res.resume();
      throw this.#authError(status, creds, `the token server ${redact(realm)}`);
    }
    if (status !== 200) {
      const { text } = await errorSummary(res);
      throw new InputError(`${this.#what}: token server ${redact(realm)} answered HTTP ${status}${text !== '' ? ` (${text})` : ''}`);
    }
    const body = await readBody(res, 1024 * 1024, `token from ${redact(realm)}`);
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
    } catch {
      throw new InputError(`${this.#what}: token server ${redact(realm)} sent malformed JSON`);
    }
    const value = typeof json['token'] === 'string' && json['token'] !== '' ? json['token'] : json['access_token'];
    if (typeof value !== 'string' || value === '') throw new InputError(`${this.#what}: token server ${redact(realm)} sent no token`);
    const expiresIn = typeof json['expires_in'] === 'number' && json['expires_in'] > 0 ? json['expires_in'] : 60;
    const issued = typeof json['issued_at'] === 'string' ? Date.parse(json['issued_at']) : NaN;
    // Measured from our clock when the issuer's is unknown or ahead of ours.
    const start = Number.isNaN(issued) || issued > Date.now() ? Date.now() : issued;
    const expiresAt = start + expiresIn * 1000;
    return { value, scopes: scopes.join(' '), expiresAt, refreshAt: expiresAt - Math.min(10_000, (expiresIn * 1000) / 5) };
  }

  #authError(status: number, creds: Credentials | undefined, who: string): InputError {
    const host = this.name.apiHost;
    if (creds === undefined) {
      return new InputError(`${this.#what}: ${who === '' ? host : who} requires authentication (HTTP ${status}); give credentials with --creds USER:PASS or --authfile, or log in with docker/skopeo login`);
    }
    const user = creds.kind === 'basic' ? `user ${JSON.stringify(creds.username)}` : 'the identity token';
    return new InputError(`${this.#what}: ${who === '' ? host : who} refused ${user} (HTTP ${status}): wrong credentials, or no pull access to ${this.name.path}`);
  }

  /**
   * Takes note of the scopes an `insufficient_scope` challenge names, so the
   * next token is asked for them too. Only well-formed scopes, and only a
   * few: a registry cannot make us ask its token server for an unbounded list.
   */
  #addChallengedScopes(c: Challenge & { scheme: 'bearer' }): void {
    if (c.error !== 'insufficient_scope') return;
    for (const sc of c.scope ?? []) {
      if (this.#extraScopes.size >= MAX_EXTRA_SCOPES) break;
      if (SCOPE_RE.test(sc) && sc !== `repository:${this.name.path}:pull`) this.#extraScopes.add(sc);
    }
  }

  /**
   * GET `/v2/<name>/<kind>/<ref>` with auth, retries and one re-authentication
   * on 401: a token that expired mid-pull, or one that lacks a scope (the
   * challenge's `error="insufficient_scope", scope="…"`: the next token is
   * asked for that scope as well). A second 401 is the auth error.
   */
  async #get(pathPart: string, headers: Record<string, string>, signal: AbortSignal | undefined): Promise<IncomingMessage> {
    await this.ping(signal);
    const url = new URL(`${this.#base as string}/v2/${this.name.path}/${pathPart}`);
    for (let reauth = 0; ; reauth++) {
      const auth = await this.#authorization(signal);
      const res = await this.#withRetries(() => this.#send('GET', url, { ...headers, ...(auth.header !== undefined ? { authorization: auth.header } : {}) }, signal), pathPart, signal);
      const status = res.statusCode ?? 0;
      if (status === 401 && reauth === 0 && this.#challenge?.scheme === 'bearer') {
        // The token expired (or lacks the scope): fetch another, unless a concurrent request already did.
        const fresh = parseChallenge(res.headers['www-authenticate']);
        if (fresh !== undefined && fresh.scheme === 'bearer') {
          this.#challenge = fresh;
          this.#addChallengedScopes(fresh);
        }
        if (this.#token === auth.token) this.#token = undefined;
        this.#reauths++;
        res.resume();
        continue;
      }
      if (status === 401 || status === 403) {
        const { text } = await errorSummary(res);
        const e = this.#authError(status, await this.#creds(), '');
        throw text !== '' ? new InputError(`${e.message} [${text}]`) : e;
      }
      return res;
    }
  }

  async #notFound(res: IncomingMessage, what: string): Promise<Error> {
    const { codes, text } = await errorSummary(res);
    const repo = `${this.name.domain}/${this.name.path}`;
    if (codes.includes('NAME_UNKNOWN')) return new NotFoundError(`${this.#what}: repository ${repo} not found (NAME_UNKNOWN)`);
    if (codes.includes('MANIFEST_UNKNOWN')) return new NotFoundError(`${this.#what}: ${what} not found in ${repo} (MANIFEST_UNKNOWN)`);
    if (codes.includes('BLOB_UNKNOWN')) return new NotFoundError(`${this.#what}: ${what} not found in ${repo} (BLOB_UNKNOWN)`);
    return new NotFoundError(`${this.#what}: ${what} not found in ${repo} (HTTP 404${text !== '' ? `: ${text}` : ''})`);
  }

  async #unexpected(res: IncomingMessage, what: string): Promise<Error> {
    const status = res.statusCode ?? 0;
    if (status === 404) return this.#notFound(res, what);
    const { text } = await errorSummary(res);
    return new InputError(`${this.#what}: fetching ${what} failed: HTTP ${status}${text !== '' ? ` (${text})` : ''}`);
  }

  /**
   * The manifest or index for `ref` (a tag or a digest), its bytes checked:
   * against `ref` when it is a digest, else against Docker-Content-Digest.
   */
  async getManifest(ref: string, signal?: AbortSignal, maxBytes = 4 * 1024 * 1024): Promise<FetchedManifest> {
    const isDigest = ref.startsWith('sha256:');
    const what = isDigest ? `manifest ${ref}` : `tag ${JSON.stringify(ref)}`;
    const res = await this.#get(`manifests/${ref}`, { accept: MANIFEST_ACCEPT }, signal);
    if (res.statusCode !== 200) throw await this.#unexpected(res, what);
    const bytes = await readBody(res, maxBytes, `${this.#what}: ${what}`);
    const digest = sha256Digest(bytes);
    if (isDigest && digest !== ref) throw new IntegrityError(`${this.#what}: manifest ${ref} from ${this.name.apiHost} hashes to ${digest}`);
    const header = res.headers['docker-content-digest'];
    if (!isDigest && typeof header === 'string' && header.startsWith('sha256:') && header !== digest) {
      throw new IntegrityError(`${this.#what}: ${what} manifest hashes to ${digest}, but the registry's Docker-Content-Digest says ${header}`);
    }
    const ct = res.headers['content-type'];
    const mediaType = typeof ct === 'string' ? (ct.split(';')[0] ?? '').trim() : '';
    return { bytes, digest, mediaType };
  }

  /** A small blob (a config) read whole, size and digest checked. */
  async getBlob(desc: { readonly digest: Digest; readonly size: number }, what: string, max: number, signal?: AbortSignal): Promise<Buffer> {
    if (desc.size > max) throw new InputError(`${this.#what}: ${what} ${desc.digest} is ${desc.size} bytes, more than the ${max} allowed`);
    const chunks: Buffer[] = [];
    for await (const c of this.openBlob(desc, what, signal)) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  /**
   * A fresh stream of the blob's bytes, failing with IntegrityError at EOF
   * when size or digest differ. A transfer that breaks is resumed from where
   * it stopped with `Range: bytes=N-` (up to `blobResumes` times).
   */
  openBlob(desc: { readonly digest: Digest; readonly size: number }, what: string, signal?: AbortSignal): Readable {
    const source = Readable.from(this.blobChunks(desc, what, signal), { objectMode: false, highWaterMark: 1024 * 1024 });
    const verifier = createVerifier({ digest: desc.digest, size: desc.size, what: `${this.#what}: ${what} ${desc.digest} from ${this.name.apiHost}` });
    pipeline(source, verifier, () => {});
    return verifier;
  }

  /**
   * The blob's bytes as they arrive, resumed with Range requests when the
   * transfer breaks; NOT checked: the caller checks size and digest (openBlob
   * does, the layer downloads leave it to whoever reads the file).
   */
  async *blobChunks(desc: { readonly digest: Digest; readonly size: number }, what: string, signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
    let offset = 0;
    let breaks = 0;
    const label = `${what} ${desc.digest}`;
    for (;;) {
      const res = await this.#get(`blobs/${desc.digest}`, offset > 0 ? { range: `bytes=${offset}-` } : {}, signal);
      try {
        const status = res.statusCode ?? 0;
        let skip = 0;
        if (status === 206 && offset > 0) {
          const start = /^bytes (\d+)-/.exec(String(res.headers['content-range'] ?? ''))?.[1];
          if (start === undefined || Number(start) !== offset) {
            throw new InputError(`${this.#what}: ${label}: the registry answered a resume from byte ${offset} with Content-Range ${JSON.stringify(res.headers['content-range'])}`);
          }
        } else if (status === 200) {
          skip = offset; // no Range support: read again from the start and drop what we have
        } else {
          throw await this.#unexpected(res, label);
        }
        try {
          for await (const chunk of res) {
            let c = chunk as Buffer;
            if (skip > 0) {
              const drop = Math.min(skip, c.length);
              skip -= drop;
              c = c.subarray(drop);
              if (c.length === 0) continue;
            }
            offset += c.length;
            yield c;
          }
        } catch (e) {
          if (signal?.aborted) throw new InterruptedError('interrupted');
          if (e instanceof ChunkyardError && !(e instanceof TransientError)) throw e;
          breaks++;
          if (breaks > (this.#options.blobResumes ?? 5)) {
            throw new InputError(`${this.#what}: ${label}: download broke ${breaks} times (last at byte ${offset}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
          }
          await sleep(this.#backoff(breaks - 1), signal);
          continue;
        }
        // Ended cleanly. Short of the size (a server that closed early
        // without error): resume; the verifier reports any other mismatch.
        if (offset >= desc.size || skip > 0) return;
        breaks++;
        if (breaks > (this.#options.blobResumes ?? 5)) return; // the verifier names the short size
      } finally {
        res.destroy();
      }
    }
  }

  /** How often a request was answered 401 and sent again with a fresh token (an expired token, mid-pull). */
  get reauthentications(): number {
    return this.#reauths;
  }

  /** Releases pooled connections. */
  close(): void {
    this.#agent?.close();
  }
}
