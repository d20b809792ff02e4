import assert from 'node:assert/strict';
import { UsageError } from '../errors.js';
import { formatPlatform, normalizePlatform, parsePlatform, platformMatches } from './platform.js';

describe('source/platform', () => {
  it('normalises architectures and variants as containerd does', () => {
    assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'x86_64' }), { os: 'linux', architecture: 'amd64' });
    assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'amd64', variant: 'v1' }), { os: 'linux', architecture: 'amd64' });
    assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'amd64', variant: 'v3' }), { os: 'linux', architecture: 'amd64', variant: 'v3' });
    assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'aarch64' }), { os: 'linux', architecture: 'arm64' });
    assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'arm64', variant: 'v8' }), { os: 'linux', architecture: 'arm64' });
    assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'arm' }), { os: 'linux', architecture: 'arm', variant: 'v7' });
    assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'arm', variant: '6' }), { os: 'linux', architecture: 'arm', variant: 'v6' });
    assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'armhf' }), { os: 'linux', architecture: 'arm', variant: 'v7' });
    assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'armel' }), { os: 'linux', architecture: 'arm', variant: 'v6' });
    assert.deepEqual(normalizePlatform({ os: 'Linux', architecture: 'i386' }), { os: 'linux', architecture: '386' });
  });

  it('matches after normalisation, variants included', () => {
    assert.ok(platformMatches({ os: 'linux', architecture: 'arm64', variant: 'v8' }, { os: 'linux', architecture: 'aarch64' }));
    assert.ok(platformMatches({ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'x86_64' }));
    assert.ok(!platformMatches({ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }));
    assert.ok(!platformMatches({ os: 'linux', architecture: 'arm', variant: 'v7' }, { os: 'linux', architecture: 'arm', variant: 'v6' }));
    assert.ok(!platformMatches({ os: 'linux', architecture: 'amd64' }, { os: 'windows', architecture: 'amd64' }));
  });

  it('parses --platform values and refuses garbage with a UsageError', () => {
    assert.deepEqual(parsePlatform('linux/arm64/v8'), { os: 'linux', architecture: 'arm64' });
    assert.deepEqual(parsePlatform('linux/arm/v6'), { os: 'linux', architecture: 'arm', variant: 'v6' });
    assert.deepEqual(parsePlatform('linux/x86_64'), { os: 'linux', architecture: 'amd64' });
    for (const bad of ['', 'linux', 'linux/', '/amd64', 'linux/amd64/v1/x', 'linux/am d64', 'linux//v7']) {
      assert.throws(() => parsePlatform(bad), (e: unknown) => e instanceof UsageError && e.message.includes('invalid platform'), bad);
    }
    assert.equal(formatPlatform(parsePlatform('linux/arm/7')), 'linux/arm/v7');
  });
});
