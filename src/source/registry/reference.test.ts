import assert from 'node:assert/strict';
import { InputError } from '../../errors.js';
import { parseImageReference } from '../transports.js';
import { DockerReference } from './docker.js';
import { parseDockerImageName } from './reference.js';

const D = `sha256:${'ab'.repeat(32)}`;

describe('source/registry/reference', () => {
  it('normalises Docker Hub names, hosts, ports, IPv6 and digests', () => {
    const cases: [string, string, string, string][] = [
      // input, fullName, familiar, apiHost
      ['alpine', 'docker.io/library/alpine:latest', 'alpine:latest', 'registry-1.docker.io'],
      ['library/alpine:3.19', 'docker.io/library/alpine:3.19', 'alpine:3.19', 'registry-1.docker.io'],
      ['docker.io/alpine', 'docker.io/library/alpine:latest', 'alpine:latest', 'registry-1.docker.io'],
      ['index.docker.io/org/app:v1', 'docker.io/org/app:v1', 'org/app:v1', 'registry-1.docker.io'],
      ['org/app', 'docker.io/org/app:latest', 'org/app:latest', 'registry-1.docker.io'],
      ['quay.io/org/app:v1.2_x-y', 'quay.io/org/app:v1.2_x-y', 'quay.io/org/app:v1.2_x-y', 'quay.io'],
      ['localhost/app', 'localhost/app:latest', 'localhost/app:latest', 'localhost'],
      ['localhost:5000/a/b/c:t', 'localhost:5000/a/b/c:t', 'localhost:5000/a/b/c:t', 'localhost:5000'],
      ['127.0.0.1:5000/py', '127.0.0.1:5000/py:latest', '127.0.0.1:5000/py:latest', '127.0.0.1:5000'],
      ['[::1]:5000/py:1', '[::1]:5000/py:1', '[::1]:5000/py:1', '[::1]:5000'],
      ['[fe80::1]/py', '[fe80::1]/py:latest', '[fe80::1]/py:latest', '[fe80::1]'],
      ['Registry/py', 'Registry/py:latest', 'Registry/py:latest', 'Registry'],
      [`alpine@${D}`, `docker.io/library/alpine@${D}`, `alpine@${D}`, 'registry-1.docker.io'],
      [`host.io:443/a__b.c--d@${D}`, `host.io:443/a__b.c--d@${D}`, `host.io:443/a__b.c--d@${D}`, 'host.io:443'],
    ];
    for (const [input, full, familiar, api] of cases) {
      const n = parseDockerImageName(input);
      assert.equal(n.fullName, full, input);
      assert.equal(n.familiar, familiar, input);
      assert.equal(n.apiHost, api, input);
      // Round trip through the familiar and the full form.
      assert.ok(parseDockerImageName(n.familiar).equals(n), input);
      assert.ok(parseDockerImageName(n.fullName).equals(n), input);
    }
    assert.deepEqual(parseDockerImageName(`x@${D}`).target, { kind: 'digest', digest: D });
    assert.equal(parseDockerImageName('x:7').manifestRef, '7');
  });

  it('refuses malformed references with an InputError that says why', () => {
    const bad: [string, RegExp][] = [
      ['', /empty/],
      ['Alpine', /lowercase/],
      ['org/App', /lowercase/],
      ['a//b', /empty repository name component/],
      ['a/', /empty repository name component/],
      ['a:', /tag/],
      ['a:-x', /tag/],
      [`a:${'x'.repeat(129)}`, /tag/],
      [`a:1@${D}`, /both a tag and a digest/],
      ['a@sha256:abc', /digest/],
      ['a@md5:' + '0'.repeat(32), /digest/],
      ['host:99999/a', /port/],
      ['-bad.io/a', /registry host/],
      ['a_/b', /component/],
      [`${'a'.repeat(250)}/bbbbbb`, /longer than 255/],
    ];
    for (const [input, re] of bad) {
      assert.throws(() => parseDockerImageName(input), (e: unknown) => e instanceof InputError && re.test((e as Error).message) && (e as Error).message.includes(JSON.stringify(input)), input);
    }
  });

  it('is the docker transport of parseImageReference, and round-trips toString', () => {
    for (const s of ['docker://alpine', 'docker://127.0.0.1:5000/py:latest', `docker://quay.io/a/b@${D}`, 'docker://[::1]:5000/x/y:z']) {
      const ref = parseImageReference(s);
      assert.ok(ref instanceof DockerReference, s);
      const again = parseImageReference(ref.toString());
      assert.equal(again.toString(), ref.toString(), s);
      assert.equal(ref.transport.parse(ref.withinTransport()).toString(), ref.toString(), s);
    }
    assert.equal(parseImageReference('docker://alpine').toString(), 'docker://alpine:latest');
    assert.equal(parseImageReference('docker://docker.io/library/alpine:3').toString(), 'docker://alpine:3');
    assert.throws(() => parseImageReference('docker:alpine'), (e: unknown) => e instanceof InputError && /docker:\/\//.test((e as Error).message));
  });
});
