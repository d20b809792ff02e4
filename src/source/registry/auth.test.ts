import assert from 'node:assert/strict';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { InputError, UsageError } from '../../errors.js';
import { tmpDir, type TmpDir } from '../../testing/tools.js';
import { authFilePaths, type HelperRunner, lookupCredentials, normalizeAuthKey, parseCreds, spawnHelper } from './auth.js';
import { parseChallenge, parseRetryAfter } from './client.js';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

describe('source/registry/auth', () => {
  let tmp: TmpDir;
  before(async () => {
    tmp = await tmpDir('registry-auth');
  });
  after(async () => {
    await tmp.cleanup();
  });

  it('parses --creds at the first colon and never echoes a password', () => {
    assert.deepEqual(parseCreds('u:p:q'), { kind: 'basic', username: 'u', password: 'p:q' });
    assert.throws(() => parseCreds('justuser'), (e: unknown) => e instanceof UsageError && !(e as Error).message.includes('justuser'));
    assert.throws(() => parseCreds(':pw'), UsageError);
  });

  it('normalises auth keys', () => {
    assert.equal(normalizeAuthKey('https://index.docker.io/v1/'), 'docker.io');
    assert.equal(normalizeAuthKey('registry-1.docker.io'), 'docker.io');
    assert.equal(normalizeAuthKey('http://127.0.0.1:5000'), '127.0.0.1:5000');
    assert.equal(normalizeAuthKey('https://quay.io/v2/'), 'quay.io');
    assert.equal(normalizeAuthKey('quay.io/org'), 'quay.io/org');
  });

  it('picks the auth files as skopeo does', () => {
    assert.deepEqual(authFilePaths({ authFile: '/a.json', env: { REGISTRY_AUTH_FILE: '/b.json', HOME: '/h' } }), ['/a.json']);
    assert.deepEqual(authFilePaths({ env: { REGISTRY_AUTH_FILE: '/b.json', HOME: '/h' } }), ['/b.json']);
    assert.deepEqual(authFilePaths({ env: { XDG_RUNTIME_DIR: '/run/u', DOCKER_CONFIG: '/dc', HOME: '/h' } }), ['/run/u/containers/auth.json', '/dc/config.json']);
    assert.deepEqual(authFilePaths({ env: { HOME: '/h' } }), ['/h/.docker/config.json']);
    assert.deepEqual(authFilePaths({ env: {} }), []);
  });

  it('reads auths (most specific key first), identity tokens, helpers, and precedence', async () => {
    const file = path.join(tmp.path, 'config.json');
    await writeFile(
      file,
      JSON.stringify({
        auths: {
          'https://index.docker.io/v1/': { auth: b64('hub:hubpw') },
          'quay.io': { auth: b64('q:qpw') },
          'quay.io/team': { auth: b64('team:tpw') },
          'ghcr.io': { identitytoken: 'refresh-tok' },
          'helped.io': {},
        },
        credHelpers: { 'helped.io': 'fake' },
      }),
    );
    const calls: string[] = [];
    const runHelper: HelperRunner = async (helper, url) => {
      calls.push(`${helper} ${url}`);
      return url === 'helped.io' ? { username: 'h', secret: 'hpw' } : undefined;
    };
    const opts = { authFile: file, runHelper };
    assert.deepEqual(await lookupCredentials('docker.io', 'library/alpine', opts), { kind: 'basic', username: 'hub', password: 'hubpw' });
    assert.deepEqual(await lookupCredentials('quay.io', 'team/app', opts), { kind: 'basic', username: 'team', password: 'tpw' });
    assert.deepEqual(await lookupCredentials('quay.io', 'other/app', opts), { kind: 'basic', username: 'q', password: 'qpw' });
    assert.deepEqual(await lookupCredentials('ghcr.io', 'x', opts), { kind: 'identity-token', token: 'refresh-tok' });
    assert.deepEqual(await lookupCredentials('helped.io', 'x', opts), { kind: 'basic', username: 'h', password: 'hpw' });
    assert.equal(await lookupCredentials('nowhere.io', 'x', opts), undefined);
    assert.deepEqual(calls, ['fake helped.io']);
    // --creds wins over everything.
    assert.deepEqual(await lookupCredentials('quay.io', 'team/app', { ...opts, creds: 'c:cpw' }), { kind: 'basic', username: 'c', password: 'cpw' });
    // A named auth file must exist; default locations may be absent.
    await assert.rejects(lookupCredentials('quay.io', 'x', { authFile: path.join(tmp.path, 'missing.json') }), InputError);
    assert.equal(await lookupCredentials('quay.io', 'x', { env: { HOME: path.join(tmp.path, 'nohome') } }), undefined);
  });

  it('credsStore applies to every registry; a helper\'s <token> user is an identity token', async () => {
    const dir = path.join(tmp.path, 'store');
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, 'config.json'), JSON.stringify({ credsStore: 'store' }));
    const runHelper: HelperRunner = async (_h, url) => (url === 'https://index.docker.io/v1/' ? { username: '<token>', secret: 'idt' } : undefined);
    assert.deepEqual(await lookupCredentials('docker.io', 'library/x', { env: { DOCKER_CONFIG: dir }, runHelper }), { kind: 'identity-token', token: 'idt' });
    assert.equal(await lookupCredentials('quay.io', 'x', { env: { DOCKER_CONFIG: dir }, runHelper }), undefined);
  });

  it('runs a real docker-credential-NAME helper from PATH', async () => {
    const bin = path.join(tmp.path, 'bin');
    await mkdir(bin, { recursive: true });
    await writeFile(
      path.join(bin, 'docker-credential-t'),
      '#!/bin/sh\nread url\nif [ "$url" = "r.io" ]; then echo \'{"ServerURL":"r.io","Username":"u","Secret":"s"}\'; elif [ "$url" = "boom.io" ]; then echo oops >&2; exit 2; else echo "credentials not found in native keychain"; exit 1; fi\n',
    );
    await chmod(path.join(bin, 'docker-credential-t'), 0o755);
    const run = spawnHelper({ PATH: `${bin}:/usr/bin:/bin` });
    assert.deepEqual(await run('t', 'r.io'), { username: 'u', secret: 's' });
    assert.equal(await run('t', 'x.io'), undefined);
    await assert.rejects(run('t', 'boom.io'), (e: unknown) => e instanceof InputError && /exit 2.*oops/.test((e as Error).message));
    await assert.rejects(run('absent', 'r.io'), (e: unknown) => e instanceof InputError && /docker-credential-absent not found/.test((e as Error).message));
  });

  it('parses WWW-Authenticate challenges and Retry-After', () => {
    assert.deepEqual(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"'), {
      scheme: 'bearer',
      realm: 'https://auth.docker.io/token',
      service: 'registry.docker.io',
      scope: ['repository:library/alpine:pull'],
    });
    // distribution's answer to a token that lacks the access: several scopes are space-separated.
    assert.deepEqual(parseChallenge('Bearer realm="https://t/token",service="s",scope="repository:a/b:pull repository:c:pull,push",error="insufficient_scope"'), {
      scheme: 'bearer',
      realm: 'https://t/token',
      service: 's',
      scope: ['repository:a/b:pull', 'repository:c:pull,push'],
      error: 'insufficient_scope',
    });
    assert.deepEqual(parseChallenge('Basic realm="x"'), { scheme: 'basic' });
    assert.deepEqual(parseChallenge('Basic realm="a, b", Bearer realm="https://t/x"'), { scheme: 'bearer', realm: 'https://t/x' });
    assert.equal(parseChallenge('Negotiate'), undefined);
    assert.equal(parseChallenge(undefined), undefined);
    assert.equal(parseRetryAfter('3'), 3000);
    assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4_000), 6_000);
    assert.equal(parseRetryAfter('soon'), undefined);
  });
});
