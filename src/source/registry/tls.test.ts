/**
 * HTTPS registries: Debian's docker-registry serving a certificate from a
 * test CA (made with openssl), once with client certificates required.
 * `--cert-dir` (containers' certs.d layout), `--tls-verify=false`, and the
 * errors without them, through the CLI; certs.d roots searched for a
 * `HOST:PORT` directory when --cert-dir is not given (test roots only).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { InputError } from '../../errors.js';
import { runCli } from '../../testing/cli-run.js';
import { writeOciLayout } from '../../testing/oci-writer.js';
import { type RegistryServer, requireRegistry, startRegistry } from '../../testing/registry-server.js';
import { sha256File } from '../../testing/streams.js';
import { tarOf } from '../../testing/tar-writer.js';
import { makeTestPki, type TestPki } from '../../testing/test-pki.js';
import { requireTool, run, type TmpDir, tmpDir } from '../../testing/tools.js';
import { buildToFile } from '../../build/build.js';
import { parseImageReference } from '../transports.js';
import { findCertDir, readCertDir, type RegistryOptions } from './client.js';

describe('docker:// over HTTPS (test CA, --cert-dir, --tls-verify)', function () {
  this.timeout(300_000);
  let tmp: TmpDir | undefined;
  let pki: TestPki;
  let reg: RegistryServer | undefined;
  let mtls: RegistryServer | undefined;
  let layout: string;
  let want: string;
  const dirs = { ca: '', client: '', unpaired: '' };

  before(async function () {
    requireTool(this, 'skopeo', 'openssl');
    requireRegistry(this);
    tmp = await tmpDir('registry-tls');
    pki = await makeTestPki(tmp.path);
    // certs.d-style directories: the CA alone; CA and a client pair; a certificate without its key.
    for (const [name, files] of [
      ['ca', [[pki.caCert, 'test-ca.crt']]],
      ['client', [[pki.caCert, 'test-ca.crt'], [pki.clientCert, 'me.cert'], [pki.clientKey, 'me.key']]],
      ['unpaired', [[pki.caCert, 'test-ca.crt'], [pki.clientCert, 'me.cert']]],
    ] as const) {
      const d = path.join(tmp.path, `certs-${name}`);
      await mkdir(d);
      for (const [from, to] of files) await copyFile(from, path.join(d, to));
      dirs[name] = d;
    }
    // A small image whose one layer (random bytes, so ~400 KiB compressed) goes through the layer worker.
    layout = path.join(tmp.path, 'layout');
    await writeOciLayout(layout, [{ tag: 'v1', layers: [tarOf([{ name: 'data/', type: 'dir' }, { name: 'data/random', data: randomBytes(400 * 1024) }, { name: 'etc/motd', data: 'over TLS\n' }])] }]);
    want = path.join(tmp.path, 'oci.ext4');
    const r = await runCli(['build', `oci:${layout}:v1`, '-o', want]);
    assert.equal(r.code, 0, r.stderr);
    reg = await startRegistry({ kind: 'none' }, { tls: { cert: pki.serverCert, key: pki.serverKey } });
    mtls = await startRegistry({ kind: 'none' }, { tls: { cert: pki.serverCert, key: pki.serverKey, clientCas: [pki.caCert] } });
    await run('skopeo', ['copy', '-q', '--dest-cert-dir', dirs.ca, `oci:${layout}:v1`, `docker://${reg.host}/tls/img:1`]);
    await run('skopeo', ['copy', '-q', '--dest-cert-dir', dirs.client, `oci:${layout}:v1`, `docker://${mtls.host}/tls/img:1`]);
  });
  after(async () => {
    await reg?.stop();
    await mtls?.stop();
    await tmp?.cleanup();
  });

  const out = (name: string): string => path.join((tmp as TmpDir).path, name);

  it('with --cert-dir holding the CA: builds over HTTPS, byte-identical to the layout', async function () {
    const r = await runCli(['build', `docker://${(reg as RegistryServer).host}/tls/img:1`, '--cert-dir', dirs.ca, '-o', out('ca.ext4')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await sha256File(out('ca.ext4')), await sha256File(want));
  });

  it('without it: one clear certificate error, exit 3, and no fallback to plain HTTP', async function () {
    const r = await runCli(['build', `docker://${(reg as RegistryServer).host}/tls/img:1`, '-o', out('none.ext4')]);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.match(r.stderr, /the TLS certificate of 127\.0\.0\.1:\d+ is not trusted \(UNABLE_TO_VERIFY_LEAF_SIGNATURE: .*\); give its CA certificate with --cert-dir/);
    // The CLI searches the default certs.d roots (none has this host) and names where the CA could go.
    assert.ok(r.stderr.includes(` or as /etc/containers/certs.d/${(reg as RegistryServer).host}/ca.crt,`), r.stderr);
  });

  it('--tls-verify=false: builds without checking the certificate', async function () {
    for (const flag of [['--tls-verify=false'], ['--tls-verify', 'false']]) {
      const r = await runCli(['build', `docker://${(reg as RegistryServer).host}/tls/img:1`, ...flag, '-o', out('noverify.ext4')]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await sha256File(out('noverify.ext4')), await sha256File(want));
    }
  });

  it('a registry requiring client certificates: works with a NAME.cert/NAME.key pair, refuses without', async function () {
    const host = (mtls as RegistryServer).host;
    const ok = await runCli(['build', `docker://${host}/tls/img:1`, '--cert-dir', dirs.client, '-o', out('mtls.ext4')]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(await sha256File(out('mtls.ext4')), await sha256File(want));
    const no = await runCli(['build', `docker://${host}/tls/img:1`, '--cert-dir', dirs.ca, '-o', out('mtls-no.ext4')]);
    assert.equal(no.code, 3, no.stderr);
    assert.equal(no.stderr.trim().split('\n').length, 1);
    assert.match(no.stderr, /refused the TLS handshake \(ERR_SSL_\w+\); if it wants a client certificate, put NAME\.cert and NAME\.key in the --cert-dir directory/);
  });

  it('--cert-dir problems are clear errors (exit 3): a certificate without its key, a missing directory', async function () {
    const host = (reg as RegistryServer).host;
    const r = await runCli(['build', `docker://${host}/tls/img:1`, '--cert-dir', dirs.unpaired, '-o', out('x.ext4')]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /--cert-dir .*certs-unpaired: client certificate me\.cert has no key me\.key beside it/);
    const m = await runCli(['build', `docker://${host}/tls/img:1`, '--cert-dir', out('nope'), '-o', out('x.ext4')]);
    assert.equal(m.code, 3, m.stderr);
    assert.match(m.stderr, /--cert-dir .*nope: no such directory/);
  });

  it('readCertDir pairs NAME.cert with NAME.key and takes every *.crt', async function () {
    const d = out('certs-many');
    await mkdir(d);
    await writeFile(path.join(d, 'a.crt'), 'CA-A');
    await writeFile(path.join(d, 'b.crt'), 'CA-B');
    await writeFile(path.join(d, 'x.cert'), 'CERT-X');
    await writeFile(path.join(d, 'x.key'), 'KEY-X');
    await writeFile(path.join(d, 'README'), 'ignored');
    assert.deepEqual(await readCertDir(d), { ca: ['CA-A', 'CA-B'], cert: ['CERT-X'], key: ['KEY-X'] });
    await writeFile(path.join(d, 'y.key'), 'KEY-Y');
    await assert.rejects(readCertDir(d), (e: Error) => e instanceof InputError && /key y\.key has no client certificate y\.cert/.test(e.message));
  });

  /** A certs.d root under the test dir with `HOST/` holding `files` (source → name). */
  const certsRoot = async (name: string, host: string, files: readonly (readonly [string, string])[]): Promise<string> => {
    const root = out(name);
    await mkdir(path.join(root, host), { recursive: true });
    for (const [from, to] of files) await copyFile(from, path.join(root, host, to));
    return root;
  };
  const buildWith = async (host: string, registry: RegistryOptions, name: string): Promise<string> => {
    const src = await parseImageReference(`docker://${host}/tls/img:1`).open({ registry: { retryBaseMs: 10, ...registry } });
    try {
      await buildToFile(src, out(name));
    } finally {
      await src.close();
    }
    return sha256File(out(name));
  };

  it('without --cert-dir: a CA in ROOT/HOST:PORT/ca.crt under a certs.d root is used (the first root having HOST:PORT wins)', async function () {
    const host = (reg as RegistryServer).host;
    const empty = out('roots-none');
    await mkdir(empty);
    const root = await certsRoot('roots-ca', host, [[pki.caCert, 'ca.crt']]);
    assert.equal(await buildWith(host, { certDirRoots: [empty, out('roots-missing'), root] }, 'roots.ext4'), await sha256File(want));
    assert.equal(await findCertDir([empty, root], host), path.join(root, host));
    assert.equal(await findCertDir([empty], host), undefined);
    // Another host's directory does not count; an earlier root with an empty HOST:PORT/ shadows the CA (no merging).
    const other = await certsRoot('roots-other', '127.0.0.1:1', [[pki.caCert, 'ca.crt']]);
    await assert.rejects(buildWith(host, { certDirRoots: [other] }, 'x.ext4'), (e: Error) => e instanceof InputError && /is not trusted/.test(e.message));
    const shadow = await certsRoot('roots-shadow', host, []);
    await assert.rejects(buildWith(host, { certDirRoots: [shadow, root] }, 'x.ext4'), (e: Error) => {
      return e instanceof InputError && e.message.includes(`is not trusted`) && e.message.includes(`(certificates from ${path.join(shadow, host)})`) && e.message.includes(`or as ${path.join(shadow, host, 'ca.crt')}`);
    });
  });

  it('a client pair under a certs.d root answers a registry requiring client certificates', async function () {
    const host = (mtls as RegistryServer).host;
    const root = await certsRoot('roots-client', host, [[pki.caCert, 'ca.crt'], [pki.clientCert, 'client.cert'], [pki.clientKey, 'client.key']]);
    assert.equal(await buildWith(host, { certDirRoots: [root] }, 'roots-mtls.ext4'), await sha256File(want));
    const bad = await certsRoot('roots-unpaired', host, [[pki.caCert, 'ca.crt'], [pki.clientCert, 'client.cert']]);
    await assert.rejects(buildWith(host, { certDirRoots: [bad] }, 'x.ext4'), (e: Error) => {
      return e instanceof InputError && e.message === `certificate directory ${path.join(bad, host)}: client certificate client.cert has no key client.key beside it`;
    });
  });

  it('--cert-dir given wins over the certs.d roots', async function () {
    const host = (reg as RegistryServer).host;
    // The roots would fail (an unpaired certificate) or succeed (the CA); --cert-dir decides either way.
    const broken = await certsRoot('roots-broken', host, [[pki.clientCert, 'me.cert']]);
    assert.equal(await buildWith(host, { certDir: dirs.ca, certDirRoots: [broken] }, 'wins.ext4'), await sha256File(want));
    const good = await certsRoot('roots-good', host, [[pki.caCert, 'ca.crt']]);
    const none = out('certs-empty');
    await mkdir(none);
    await assert.rejects(buildWith(host, { certDir: none, certDirRoots: [good] }, 'x.ext4'), (e: Error) => e instanceof InputError && /is not trusted/.test(e.message));
  });
});
