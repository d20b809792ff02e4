import assert from 'node:assert/strict';
import { UsageError } from '../errors.js';
import { runCli } from '../testing/cli-run.js';
import { captureIO } from '../testing/capture.js';
import type { CliIO } from './io.js';
import { registryOptionsFrom } from './registry-options.js';

describe('cli/registry-options', () => {
  for (const cmd of ['build', 'convert', 'stats', 'verify']) {
    it(`${cmd} takes --creds, --authfile, --tls-verify and --cert-dir`, async () => {
      const r = await runCli([cmd, '--help']);
      assert.equal(r.code, 0, r.stderr);
      for (const flag of ['--creds', '--authfile', '--tls-verify', '--cert-dir']) assert.ok(r.stdout.includes(flag), `${cmd} --help lists ${flag}`);
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
});
