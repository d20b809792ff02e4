/**
 * Bearer token auth end to end: Debian's docker-registry with `auth.token`,
 * trusting the signing certificate of a token server the test runs
 * (testing/token-server.ts, JWTs made here and checked by the registry);
 * `skopeo copy` pushes the corpus through the same token flow.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { InputError } from '../../errors.js';
import { buildToFile } from '../../build/build.js';
import { runCli } from '../../testing/cli-run.js';
import { drain, sha256File } from '../../testing/streams.js';
import { type RegistryServer, requireRegistry, startRegistry } from '../../testing/registry-server.js';
import { startTokenServer, type TokenServer } from '../../testing/token-server.js';
import { requireCorpus, requireTool, run, type TmpDir, tmpDir } from '../../testing/tools.js';
import { parseChallenge, type RegistryOptions } from './client.js';
import { parseImageReference } from '../transports.js';

const USER = 'alice';
const PASSWORD = 'token-pw-5f0c1e';
const IDENTITY_TOKEN = 'refresh-7d2a9b41';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('docker:// with token auth (a real registry trusting a test token server)', function () {
  this.timeout(300_000);
  let corpus: string;
  let tmp: TmpDir | undefined;
  let tokens: TokenServer | undefined;
  let reg: RegistryServer | undefined;
  let baseImage: string;

  before(async function () {
    corpus = requireCorpus(this);
    requireTool(this, 'skopeo', 'openssl');
    requireRegistry(this);
    tmp = await tmpDir('token-auth');
    tokens = await startTokenServer(tmp.path, { users: { [USER]: PASSWORD }, identityTokens: { [IDENTITY_TOKEN]: USER }, publicRepo: (r) => r.startsWith('public/') });
    reg = await startRegistry({ kind: 'token', realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, rootCertBundle: tokens.rootCertBundle });
    for (const repo of ['public/base:1', 'private/base:1']) {
      await run('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-creds', `${USER}:${PASSWORD}`, `oci:${corpus}:base`, `docker://${reg.host}/${repo}`]);
    }
    baseImage = path.join(tmp.path, 'oci-base.ext4');
    const r = await runCli(['build', `oci:${corpus}:base`, '-o', baseImage]);
    assert.equal(r.code, 0, r.stderr);
  });
  afterEach(() => tokens?.configure({}));
  after(async () => {
    await reg?.stop();
    await tokens?.close();
    await tmp?.cleanup();
  });

  const host = (): string => (reg as RegistryServer).host;
  const t = (): TokenServer => tokens as TokenServer;
  const open = (repo: string, registry: RegistryOptions) =>
    parseImageReference(`docker://${host()}/${repo}`).open({ registry: { retryBaseMs: 10, ...registry } });

  it('pulls a public repository anonymously through the token endpoint, byte-identical to the layout', async function () {
    const before = t().requests.length;
    const out = path.join((tmp as TmpDir).path, 'anon.ext4');
    const r = await runCli(['build', `docker://${host()}/public/base:1`, '-o', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await sha256File(out), await sha256File(baseImage));
    const asked = t().requests.slice(before);
    assert.ok(asked.length >= 1);
    assert.ok(asked.every((q) => q.account === undefined && q.status === 200 && q.scopes.includes('repository:public/base:pull')), JSON.stringify(asked));
  });

  it('anonymous access to a private repository says authentication is required (exit 3)', async function () {
    const r = await runCli(['build', `docker://${host()}/private/base:1`, '-o', path.join((tmp as TmpDir).path, 'x.ext4')]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /^chunkyard: docker:\/\/.*private\/base:1: .*requires authentication \(HTTP 401\)/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  });

  it('pulls with --creds: Basic to the realm, a bearer token to the registry; no secret in any output', async function () {
    const before = t().requests.length;
    const out = path.join((tmp as TmpDir).path, 'creds.ext4');
    const r = await runCli(['build', `docker://${host()}/private/base:1`, '-o', out, '--creds', `${USER}:${PASSWORD}`, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await sha256File(out), await sha256File(baseImage));
    const asked = t().requests.slice(before);
    assert.ok(asked.length >= 1 && asked.every((q) => q.account === USER && q.status === 200), JSON.stringify(asked));
    for (const secret of [PASSWORD, ...t().tokens]) {
      assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), 'a secret was printed');
    }
  });

  it('takes an identity token from an auth file (the refresh_token grant)', async function () {
    const file = path.join((tmp as TmpDir).path, 'auth.json');
    await writeFile(file, JSON.stringify({ auths: { [host()]: { identitytoken: IDENTITY_TOKEN } } }));
    const before = t().requests.length;
    const src = await open('private/base:1', { credentials: { authFile: file, env: {} } });
    await src.close();
    const asked = t().requests.slice(before);
    assert.ok(asked.some((q) => q.method === 'POST' && q.account === USER && q.status === 200), JSON.stringify(asked));
  });

  it('a wrong password is one clear error, exit 3, printing no secret', async function () {
    const wrong = 'wrong-pw-93c1';
    const r = await runCli(['build', `docker://${host()}/private/base:1`, '-o', path.join((tmp as TmpDir).path, 'x.ext4'), '--creds', `${USER}:${wrong}`]);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.match(r.stderr, /token server http:\/\/127\.0\.0\.1:\d+\/token refused user "alice" \(HTTP 401\)/);
    assert.ok(!r.stderr.includes(wrong) && !r.stdout.includes(wrong));
    const j = await runCli(['build', `docker://${host()}/private/base:1`, '-o', path.join((tmp as TmpDir).path, 'x.ext4'), '--creds', `${USER}:${wrong}`, '--json']);
    assert.equal(j.code, 3);
    assert.ok(!j.stdout.includes(wrong) && !j.stderr.includes(wrong));
  });

  it('tokens signed by a key the registry does not trust are refused (the registry really checks them)', async function () {
    t().configure({ untrusted: true });
    await assert.rejects(open('private/base:1', { credentials: { creds: `${USER}:${PASSWORD}`, env: {} } }), (e: Error) => {
      return e instanceof InputError && /refused user "alice" \(HTTP 401\)/.test(e.message) && !e.message.includes(PASSWORD) && t().tokens.every((k) => !e.message.includes(k));
    });
  });

  it('re-authenticates on a 401 when a token expires mid-pull (expires_in claims more than the token lasts)', async function () {
    // The registry accepts each token for 3 s, but the answer says 300: only its 401s can tell the client.
    t().configure({ lifetimeSeconds: 3, expiresIn: 300 });
    const before = t().tokens.length;
    const src = await open('private/base:1', { credentials: { creds: `${USER}:${PASSWORD}`, env: {} } });
    try {
      assert.equal(t().tokens.length, before + 1);
      await sleep(4500); // the token has now expired; the layers are still to come
      const out = path.join((tmp as TmpDir).path, 'refresh.ext4');
      await buildToFile(src, out);
      assert.equal(await sha256File(out), await sha256File(baseImage));
    } finally {
      await src.close();
    }
    assert.ok(t().tokens.length >= before + 2, 'a second token was fetched after the 401');
  });

  it('fetches a fresh token before using one it knows has expired', async function () {
    t().configure({ lifetimeSeconds: 3, expiresIn: 3 });
    const before = t().tokens.length;
    const src = await open('private/base:1', { credentials: { creds: `${USER}:${PASSWORD}`, env: {} } });
    try {
      await sleep(3500);
      for (const l of src.layers) await drain(l.open());
    } finally {
      await src.close();
    }
    assert.ok(t().tokens.length >= before + 2);
  });

  it("the registry's answer to a token lacking the scope is a 401 insufficient_scope challenge naming the scope", async function () {
    t().configure({ emptyTokens: 1 });
    const realm = new URL(t().realm);
    realm.searchParams.set('service', t().service);
    realm.searchParams.set('scope', 'repository:private/base:pull');
    const basic = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
    const get = (url: string, auth: string): Promise<{ status: number; header: string | undefined; body: string }> =>
      new Promise((resolve, reject) => {
        http
          .get(url, { headers: { authorization: auth, accept: 'application/vnd.oci.image.manifest.v1+json' } }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, header: res.headers['www-authenticate'], body: Buffer.concat(chunks).toString('utf8') }));
          })
          .on('error', reject);
      });
    const token = (JSON.parse((await get(realm.href, basic)).body) as { token: string }).token;
    const res = await get(`http://${host()}/v2/private/base/manifests/1`, `Bearer ${token}`);
    assert.equal(res.status, 401);
    assert.deepEqual(parseChallenge(res.header), { scheme: 'bearer', realm: t().realm, service: t().service, scope: ['repository:private/base:pull'], error: 'insufficient_scope' });
  });

  it('on 401 insufficient_scope fetches a token for the scope and retries once', async function () {
    t().configure({ emptyTokens: 1 });
    const before = t().requests.length;
    const out = path.join((tmp as TmpDir).path, 'scope.ext4');
    const r = await runCli(['build', `docker://${host()}/private/base:1`, '-o', out, '--creds', `${USER}:${PASSWORD}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await sha256File(out), await sha256File(baseImage));
    const asked = t().requests.slice(before);
    assert.equal(asked.length, 2, JSON.stringify(asked));
    assert.ok(asked.every((q) => q.scopes.includes('repository:private/base:pull')));
  });

  it('a second insufficient_scope is the usual one-line auth error (exit 3), after exactly one retry', async function () {
    t().configure({ emptyTokens: 1000 });
    const before = t().requests.length;
    const r = await runCli(['build', `docker://${host()}/private/base:1`, '-o', path.join((tmp as TmpDir).path, 'x.ext4'), '--creds', `${USER}:${PASSWORD}`]);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.match(r.stderr, /refused user "alice" \(HTTP 401\): wrong credentials, or no pull access to private\/base/);
    assert.equal(t().requests.length - before, 2, 'one token, then one more for the retry');
  });
});
