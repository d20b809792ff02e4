/**
 * A small Docker token server (the `realm` of distribution's token auth) on
 * loopback, for tests. It answers `GET /token?service=…&scope=…` (anonymous,
 * or HTTP Basic with a known user) and `POST /token` with
 * `grant_type=refresh_token` (an identity token), with
 * `{token, access_token, expires_in, issued_at}`. Tokens are JWTs signed
 * ES256 or RS256 by a key whose self-signed certificate (made with openssl)
 * the registry trusts through `auth.token.rootcertbundle`; the key is named
 * in the JWT header by `x5c` (the certificate) or `kid` (libtrust's key ID),
 * both forms distribution 2.8 accepts.
 *
 * Claims as distribution checks them (registry/auth/token/token.go): `iss` =
 * the configured issuer, `aud` = the service, `exp`/`nbf` (the registry allows
 * 60 s of leeway on both), `access` = [{type, name, actions}]. Known users get
 * every action they ask for; anonymous requests get `pull` on public
 * repositories only (and an empty `access` otherwise, as Docker Hub does).
 * Bad credentials get 401. Test-only code.
 */
import { createHash, createPrivateKey, createPublicKey, type KeyObject, randomBytes, sign, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { selfSigned } from './test-pki.js';

/** distribution's allowance for clock skew on `exp` and `nbf` (token.Leeway). */
export const REGISTRY_LEEWAY_SECONDS = 60;

export interface TokenServerOptions {
  readonly service?: string;
  readonly issuer?: string;
  /** user → password, for HTTP Basic on the token request. */
  readonly users?: Readonly<Record<string, string>>;
  /** identity (refresh) token → user, for the POST grant. */
  readonly identityTokens?: Readonly<Record<string, string>>;
  /** Repositories anyone may pull. @default none */
  readonly publicRepo?: (repo: string) => boolean;
  /** @default 'ES256' */
  readonly alg?: 'ES256' | 'RS256';
  /** How the JWT header names the signing key. @default 'x5c' */
  readonly keyForm?: 'x5c' | 'kid';
  /**
   * Seconds the registry accepts a token for: its `exp` is set this far
   * ahead less the registry's leeway (so `exp` may lie in the past). @default 300
   */
  readonly lifetimeSeconds?: number;
  /**
   * What the answer's `expires_in` claims. @default lifetimeSeconds.
   * Claiming more than the real lifetime leaves the client to learn of the
   * expiry from the registry's 401.
   */
  readonly expiresIn?: number;
}

export interface TokenRequest {
  readonly method: string;
  /** The authenticated user, if any. */
  readonly account?: string;
  readonly scopes: readonly string[];
  readonly status: number;
}

export interface TokenServer {
  /** `http://127.0.0.1:PORT/token` */
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  /** PEM file of the signing certificate, for the registry's rootcertbundle. */
  readonly rootCertBundle: string;
  /** Every request, in order. */
  readonly requests: TokenRequest[];
  /** Every token issued. */
  readonly tokens: string[];
  /**
   * Changes how tokens are made from now on (fields left out go back to the
   * start options): lifetimes, or `untrusted` to sign with another
   * self-signed key the registry does not know.
   */
  configure(policy: TokenPolicy): void;
  close(): Promise<void>;
}

export interface TokenPolicy {
  readonly lifetimeSeconds?: number;
  readonly expiresIn?: number;
  readonly untrusted?: boolean;
  /**
   * The next this many tokens grant nothing (an empty `access`, whatever the
   * scope asked for): the registry answers them with 401
   * `error="insufficient_scope"`.
   */
  readonly emptyTokens?: number;
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

/** libtrust's key ID: SHA-256 of the DER SubjectPublicKeyInfo, first 240 bits, base32, in groups of four joined by ':'. */
export function libtrustKeyId(key: KeyObject): string {
  const der = key.export({ type: 'spki', format: 'der' });
  const sum = createHash('sha256').update(der).digest().subarray(0, 30);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let s = '';
  for (const byte of sum) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      s += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return (s.match(/.{1,4}/g) ?? []).join(':');
}

/** `type:name:actions` → parts (the name is everything between the first and the last colon). */
function parseScope(s: string): { type: string; name: string; actions: string[] } | undefined {
  const first = s.indexOf(':');
  const last = s.lastIndexOf(':');
  if (first < 0 || last <= first) return undefined;
  return { type: s.slice(0, first), name: s.slice(first + 1, last), actions: s.slice(last + 1).split(',').filter((a) => a !== '') };
}

function basicUser(header: string | undefined, users: Readonly<Record<string, string>>): { ok: boolean; user?: string } {
  if (header === undefined) return { ok: true };
  const m = /^Basic\s+(\S+)$/i.exec(header);
  if (m === null) return { ok: false };
  const plain = Buffer.from(m[1] as string, 'base64').toString('utf8');
  const colon = plain.indexOf(':');
  const user = plain.slice(0, colon);
  return colon > 0 && users[user] !== undefined && users[user] === plain.slice(colon + 1) ? { ok: true, user } : { ok: false };
}

/** Starts the token server; its signing key and certificate are written to `dir`. */
export async function startTokenServer(dir: string, options: TokenServerOptions = {}): Promise<TokenServer> {
  const service = options.service ?? 'chunkyard-test-registry';
  const issuer = options.issuer ?? 'chunkyard-test-issuer';
  const alg = options.alg ?? 'ES256';
  const users = options.users ?? {};
  const signers = await Promise.all(
    ['trusted', 'untrusted'].map(async (which) => {
      const made = await selfSigned(dir, `token-signer-${alg}-${which}`, `chunkyard test token signer (${which})`, alg === 'ES256' ? 'ec' : 'rsa');
      const certPem = await readFile(made.cert, 'utf8');
      const key = createPrivateKey(await readFile(made.key, 'utf8'));
      const header = (options.keyForm ?? 'x5c') === 'x5c' ? { x5c: [new X509Certificate(certPem).raw.toString('base64')] } : { kid: libtrustKeyId(createPublicKey(key)) };
      return { cert: made.cert, key, header };
    }),
  );
  const [trusted, untrusted] = signers as [(typeof signers)[number], (typeof signers)[number]];
  let policy: TokenPolicy = {};
  let emptyLeft = 0;
  const requests: TokenRequest[] = [];
  const tokens: string[] = [];

  const mint = (account: string | undefined, scopes: readonly string[]): string => {
    const now = Math.floor(Date.now() / 1000);
    const lifetime = policy.lifetimeSeconds ?? options.lifetimeSeconds ?? 300;
    const { key, header: keyHeader } = policy.untrusted === true ? untrusted : trusted;
    const access = [];
    const empty = emptyLeft > 0;
    if (empty) emptyLeft--;
    for (const s of empty ? [] : scopes) {
      const p = parseScope(s);
      if (p === undefined) continue;
      const actions = account !== undefined ? p.actions : p.type === 'repository' && options.publicRepo?.(p.name) === true ? p.actions.filter((a) => a === 'pull') : [];
      if (actions.length > 0) access.push({ type: p.type, name: p.name, actions });
    }
    const header = { typ: 'JWT', alg, ...keyHeader };
    const claims = {
      iss: issuer,
      sub: account ?? '',
      aud: service,
      exp: now + lifetime - REGISTRY_LEEWAY_SECONDS,
      nbf: now,
      iat: now,
      jti: randomBytes(12).toString('hex'),
      access,
    };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    // ES256 wants the raw r||s form (RFC 7518 §3.4), not DER.
    const sig = alg === 'ES256' ? sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }) : sign('sha256', Buffer.from(input), key);
    const token = `${input}.${b64url(sig)}`;
    tokens.push(token);
    return token;
  };

  const answer = (res: http.ServerResponse, status: number, body: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      const method = req.method ?? 'GET';
      let account: string | undefined;
      let scopes: string[];
      let ok: boolean;
      if (method === 'POST') {
        const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
        scopes = form.getAll('scope').flatMap((s) => s.split(' '));
        const refresh = form.get('refresh_token') ?? '';
        account = form.get('grant_type') === 'refresh_token' ? options.identityTokens?.[refresh] : undefined;
        ok = account !== undefined && form.get('service') === service;
      } else {
        scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' '));
        const who = basicUser(req.headers.authorization, users);
        ok = who.ok && url.searchParams.get('service') === service;
        account = who.user;
      }
      const status = url.pathname !== '/token' ? 404 : ok ? 200 : 401;
      requests.push({ method, ...(account !== undefined ? { account } : {}), scopes, status });
      if (status !== 200) {
        answer(res, status, { errors: [{ code: status === 401 ? 'UNAUTHORIZED' : 'NOT_FOUND', message: status === 401 ? 'authentication failed' : 'no such endpoint' }] });
        return;
      }
      const token = mint(account, scopes);
      const expiresIn = policy.expiresIn ?? options.expiresIn ?? policy.lifetimeSeconds ?? options.lifetimeSeconds ?? 300;
      answer(res, 200, { token, access_token: token, expires_in: expiresIn, issued_at: new Date().toISOString() });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    rootCertBundle: trusted.cert,
    requests,
    tokens,
    configure: (p) => {
      policy = p;
      emptyLeft = p.emptyTokens ?? 0;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
