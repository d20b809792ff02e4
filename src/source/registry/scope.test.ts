/**
 * `insufficient_scope` against a registry that wants a scope other than
 * `repository:NAME:pull` for a read (as ACR answers with `metadata_read`):
 * a real HTTP server in the test plays registry and token server, answering
 * the way distribution does (401 + `WWW-Authenticate: Bearer …,
 * scope="…",error="insufficient_scope"`). The client must ask the token
 * server for the challenged scope and retry once.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { InputError } from '../../errors.js';
import { RegistryClient } from './client.js';
import { parseDockerImageName } from './reference.js';

interface Fake {
  readonly host: string;
  /** The scopes of each token request, in order. */
  readonly tokenScopes: string[][];
  /** What the manifest endpoint's insufficient_scope challenge names. */
  challengeScope: string;
  /** The scope a token must carry for the manifest to be served. */
  needed: string;
  close(): Promise<void>;
}

const MANIFEST = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: {}, layers: [] }));

async function startFake(): Promise<Fake> {
  const tokenScopes: string[][] = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const realm = `http://${req.headers.host ?? ''}/token`;
    if (url.pathname === '/token') {
      const scopes = url.searchParams.getAll('scope');
      tokenScopes.push(scopes);
      res.writeHead(200, { 'content-type': 'application/json' });
      // The token is the list of scopes it grants (the fake trusts itself).
      res.end(JSON.stringify({ token: Buffer.from(scopes.join(' ')).toString('base64url'), expires_in: 300 }));
      return;
    }
    const granted = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
    const scopes = granted !== undefined ? Buffer.from(granted, 'base64url').toString('utf8').split(' ') : undefined;
    const deny = (extra: string): void => {
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': `Bearer realm="${realm}",service="fake"${extra}` });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
    };
    if (scopes === undefined) {
      deny('');
      return;
    }
    if (url.pathname === '/v2/') {
      res.writeHead(200).end('{}');
      return;
    }
    if (url.pathname === '/v2/img/manifests/v1') {
      if (!scopes.includes(fake.needed)) {
        deny(`,scope="${fake.challengeScope}",error="insufficient_scope"`);
        return;
      }
      const digest = `sha256:${createHash('sha256').update(MANIFEST).digest('hex')}`;
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': digest });
      res.end(MANIFEST);
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const fake: Fake = {
    host: `127.0.0.1:${port}`,
    tokenScopes,
    challengeScope: 'repository:img:metadata_read',
    needed: 'repository:img:metadata_read',
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return fake;
}

describe('registry client: 401 insufficient_scope', function () {
  this.timeout(60_000);
  let fake: Fake | undefined;
  beforeEach(async () => {
    fake = await startFake();
  });
  afterEach(async () => {
    await fake?.close();
  });

  const client = (): RegistryClient => new RegistryClient(parseDockerImageName(`${(fake as Fake).host}/img:v1`), { retryBaseMs: 10, certDirRoots: [] });

  it('asks the token server for the challenged scope as well, retries once, and keeps it for later tokens', async () => {
    const f = fake as Fake;
    const c = client();
    try {
      const m = await c.getManifest('v1');
      assert.deepEqual(m.bytes, MANIFEST);
      assert.deepEqual(f.tokenScopes, [['repository:img:pull'], ['repository:img:pull', 'repository:img:metadata_read']]);
      assert.equal(c.reauthentications, 1);
      // The wider token is reused: no further 401 or token request.
      await c.getManifest('v1');
      assert.equal(f.tokenScopes.length, 2);
      assert.equal(c.reauthentications, 1);
    } finally {
      c.close();
    }
  });

  it('a second 401 is the one-line auth error, after exactly one retry', async () => {
    const f = fake as Fake;
    f.needed = 'repository:img:never-granted';
    const c = client();
    try {
      await assert.rejects(c.getManifest('v1'), (e: Error) => {
        return e instanceof InputError && !e.message.includes('\n') && /requires authentication \(HTTP 401\)/.test(e.message);
      });
      assert.equal(f.tokenScopes.length, 2);
      assert.equal(c.reauthentications, 1);
    } finally {
      c.close();
    }
  });

  it('ignores a malformed challenged scope (the retry asks for the pull scope only)', async () => {
    const f = fake as Fake;
    f.challengeScope = 'not-a-scope';
    const c = client();
    try {
      await assert.rejects(c.getManifest('v1'), InputError);
      assert.deepEqual(f.tokenScopes, [['repository:img:pull'], ['repository:img:pull']]);
    } finally {
      c.close();
    }
  });
});
