import assert from 'node:assert/strict';
import { UsageError } from '../errors.js';
import { runCli } from '../testing/cli-run.js';
import { captureIO } from '../testing/capture.js';
import type { CliIO } from './io.js';
import { defaultCertDirRoots, registryOptionsFrom } from './registry-options.js';

describe('cli/registry-options', () => {
  for (const cmd of ['build', 'convert', 'stats', 'verify']) {
    it(`${cmd} takes --creds, --authfile, --tls-verify, --cert-dir and --registry-prefetch`, async () => {
      const r = await runCli([cmd, '--help']);
      assert.equal(r.code, 0, r.stderr);
      for (const flag of ['--creds', '--authfile', '--tls-verify', '--cert-dir', '--registry-prefetch <n>']) assert.ok(r.stdout.includes(flag), `${cmd} --help lists ${flag}`);
    });
  }

  it('maps the flags to RegistryOptions, with the environment for credential lookup', () => {
    const io: CliIO = { ...captureIO({ env: { DOCKER_CONFIG: '/dc' } }).io, signal: new AbortController().signal };
    assert.deepEqual(registryOptionsFrom({ tlsVerify: 'false', certDir: '/certs', creds: 'u:p', authfile: '/a.json' }, io), {
      tlsVerify: false,
      certDir: '/certs',
      credentials: { env: { DOCKER_CONFIG: '/dc' }, creds: 'u:p', authFile: '/a.json' },
    });
    assert.equal(registryOptionsFrom({ tlsVerify: true as unknown as string }, io).tlsVerify, true);
    assert.equal(registryOptionsFrom({}, io).tlsVerify, undefined);
    assert.throws(() => registryOptionsFrom({ tlsVerify: 'maybe' }, io), UsageError);
  });

  it('--registry-prefetch N sets prefetchLayers (0 to 8); anything else is a usage error', () => {
    const io: CliIO = { ...captureIO({ env: {} }).io, signal: new AbortController().signal };
    assert.equal(registryOptionsFrom({ registryPrefetch: '0' }, io).prefetchLayers, 0);
    assert.equal(registryOptionsFrom({ registryPrefetch: '8' }, io).prefetchLayers, 8);
    assert.equal(registryOptionsFrom({}, io).prefetchLayers, undefined, 'left to the library default (3)');
    for (const bad of ['9', '-1', '1.5', 'x', '', ' 2']) {
      assert.throws(() => registryOptionsFrom({ registryPrefetch: bad }, io), (e: Error) => e instanceof UsageError && /--registry-prefetch takes a whole number from 0 to 8/.test(e.message), bad);
    }
  });

  it('--registry-prefetch out of range exits 2 before anything is fetched', async () => {
    const r = await runCli(['build', 'docker://127.0.0.1:9/none/such:1', '--registry-prefetch', '9', '-o', '/nonexistent/x.ext4']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--registry-prefetch takes a whole number from 0 to 8, not "9"/);
  });

  it('without --cert-dir, searches the certs.d roots in containers/image order', () => {
    const io: CliIO = { ...captureIO({ env: { HOME: '/home/u' } }).io, signal: new AbortController().signal };
    assert.deepEqual(registryOptionsFrom({}, io, 0).certDirRoots, [
      '/home/u/.config/containers/certs.d',
      '/etc/containers/certs.rootful.d',
      '/etc/containers/certs.d',
      '/usr/share/containers/certs.rootful.d',
      '/usr/share/containers/certs.d',
      '/etc/docker/certs.d',
    ]);
    assert.equal(registryOptionsFrom({ certDir: '/c' }, io, 0).certDirRoots, undefined, '--cert-dir replaces the search');
    assert.deepEqual(defaultCertDirRoots({ XDG_CONFIG_HOME: '/x', HOME: '/home/u' }, 1000), [
      '/x/containers/certs.d',
      '/etc/containers/certs.rootless.d/1000',
      '/etc/containers/certs.rootless.d',
      '/etc/containers/certs.d',
      '/usr/share/containers/certs.rootless.d/1000',
      '/usr/share/containers/certs.rootless.d',
      '/usr/share/containers/certs.d',
      '/etc/docker/certs.d',
    ]);
    const roots = defaultCertDirRoots({}, 0);
    assert.ok(roots.indexOf('/etc/containers/certs.d') < roots.indexOf('/etc/docker/certs.d') && roots.at(-1) === '/etc/docker/certs.d');
  });
});
