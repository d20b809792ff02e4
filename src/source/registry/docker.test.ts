/**
 * `docker://` against a real distribution registry on loopback (Debian's
 * docker-registry), filled by `skopeo copy` from the corpus.
 */
import assert from 'node:assert/strict';
import { chmod, open as openFile, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { IntegrityError, InputError, NotFoundError } from '../../errors.js';
import { buildImage } from '../../index.js';
import { startFaultyProxy } from '../../testing/faulty-proxy.js';
import { type RegistryServer, requireRegistry, startRegistry } from '../../testing/registry-server.js';
import { drain, sha256File } from '../../testing/streams.js';
import { requireCorpus, requireTool, run, type TmpDir, tmpDir } from '../../testing/tools.js';
import type { ImageSource, OpenOptions } from '../source.js';
import { parseImageReference } from '../transports.js';

async function openRef(ref: string, options: OpenOptions = {}): Promise<ImageSource> {
  return parseImageReference(ref).open({ registry: { retryBaseMs: 10, ...options.registry }, ...(options.platform ? { platform: options.platform } : {}) });
}

async function drainAll(src: ImageSource): Promise<void> {
  for (const l of src.layers) await drain(l.open());
}

describe('docker:// against a real registry (anonymous)', function () {
  this.timeout(300_000);
  let corpus: string;
  let reg: RegistryServer | undefined;
  let tmp: TmpDir | undefined;

  before(async function () {
    corpus = requireCorpus(this);
    requireTool(this, 'skopeo');
    requireRegistry(this);
    reg = await startRegistry();
    tmp = await tmpDir('docker-src');
    for (const [tag, repo] of [
      ['py', 'py:latest'],
      ['base', 'tamper/base:latest'],
    ] as const) {
      await run('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${corpus}:${tag}`, `docker://${reg.host}/${repo}`]);
    }
  });
  after(async () => {
    await reg?.stop();
    await tmp?.cleanup();
  });

  it('builds byte-identically to the oci: layout it was pushed from', async function () {
    const r = reg as RegistryServer;
    const t = tmp as TmpDir;
    const a = path.join(t.path, 'reg.ext4');
    const b = path.join(t.path, 'oci.ext4');
    await buildImage(`docker://${r.host}/py:latest`, a);
    await buildImage(`oci:${corpus}:py`, b);
    assert.equal(await sha256File(a), await sha256File(b));
  });

  it('gives the same manifest digest as the layout, and pins by @sha256', async function () {
    const r = reg as RegistryServer;
    const local = await parseImageReference(`oci:${corpus}:py`).open();
    const remote = await openRef(`docker://${r.host}/py`);
    try {
      assert.equal(remote.manifestDigest, local.manifestDigest);
      assert.equal(remote.configDigest, local.configDigest);
      assert.deepEqual(remote.layers.map((l) => l.diffId), local.layers.map((l) => l.diffId));
    } finally {
      await remote.close();
      await local.close();
    }
    const pinned = await openRef(`docker://${r.host}/py@${local.manifestDigest}`);
    try {
      assert.equal(pinned.manifestDigest, local.manifestDigest);
      assert.equal(pinned.reference.toString(), `docker://${r.host}/py@${local.manifestDigest}`);
    } finally {
      await pinned.close();
    }
  });

  it('a missing tag is NotFoundError naming MANIFEST_UNKNOWN', async function () {
    const r = reg as RegistryServer;
    await assert.rejects(openRef(`docker://${r.host}/py:nope`), (e: Error) => e instanceof NotFoundError && /tag "nope" not found/.test(e.message) && /MANIFEST_UNKNOWN/.test(e.message));
  });

  it('a missing repository is NotFoundError', async function () {
    const r = reg as RegistryServer;
    await assert.rejects(openRef(`docker://${r.host}/no/such:latest`), (e: Error) => e instanceof NotFoundError && /(NAME_UNKNOWN|MANIFEST_UNKNOWN)/.test(e.message));
  });

  it('a digest that is not in the repository is NotFoundError', async function () {
    const r = reg as RegistryServer;
    await assert.rejects(openRef(`docker://${r.host}/py@sha256:${'0'.repeat(64)}`), NotFoundError);
  });

  it('a blob tampered with in the registry storage fails with IntegrityError', async function () {
    const r = reg as RegistryServer;
    const src = await openRef(`docker://${r.host}/tamper/base:latest`);
    try {
      const layer = src.layers[0];
      assert.ok(layer !== undefined);
      const file = r.blobDataPath(layer.digest);
      // Blob storage is shared by every repository: flip a byte, and flip it back after.
      const flip = async (): Promise<void> => {
        const fh = await openFile(file, 'r+');
        try {
          const pos = Math.floor(layer.size / 2);
          const b = Buffer.alloc(1);
          await fh.read(b, 0, 1, pos);
          b[0] = (b[0] as number) ^ 0xff;
          await fh.write(b, 0, 1, pos);
        } finally {
          await fh.close();
        }
      };
      await flip();
      try {
        await assert.rejects(drain(layer.open()), (e: Error) => e instanceof IntegrityError && e.message.includes(layer.digest) && /hashes to/.test(e.message));
      } finally {
        await flip();
      }
      await drain(layer.open());
    } finally {
      await src.close();
    }
  });

  it('resumes a blob download cut mid-transfer, and retries a 503', async function () {
    const r = reg as RegistryServer;
    let cut = false;
    let failed = false;
    let blobGets = 0;
    const proxy = await startFaultyProxy(`http://${r.host}`, (req) => {
      if (req.url.includes('/manifests/') && !failed) {
        failed = true;
        return { kind: 'status', status: 503 };
      }
      // The first blob is the config; the second is layer 0 (51 MB): cut it.
      if (req.url.includes('/blobs/') && req.method === 'GET' && ++blobGets === 2) {
        cut = true;
        return { kind: 'cut' };
      }
      return { kind: 'pass' };
    });
    try {
      const host = new URL(proxy.endpoint).host;
      const src = await openRef(`docker://${host}/py:latest`);
      try {
        const local = await parseImageReference(`oci:${corpus}:py`).open();
        for (const [i, l] of src.layers.entries()) {
          const got = await drain(l.open());
          const want = await drain((local.layers[i] as (typeof local.layers)[number]).open());
          assert.equal(got.digest, want.digest);
        }
        await local.close();
      } finally {
        await src.close();
      }
      assert.ok(cut, 'the proxy cut a blob transfer');
      assert.ok(failed, 'the proxy failed a manifest request');
      const urls = proxy.seen.filter((s) => s.url.includes('/blobs/')).map((s) => s.url);
      assert.ok(urls.length > new Set(urls).size, 'the cut blob was requested again');
    } finally {
      await proxy.close();
    }
  });
});

describe('docker:// with htpasswd Basic auth', function () {
  this.timeout(300_000);
  const auth = { kind: 'htpasswd', user: 'alice', password: 's3cret-pw' } as const;
  let reg: RegistryServer | undefined;
  let tmp: TmpDir | undefined;

  before(async function () {
    const corpus = requireCorpus(this);
    requireTool(this, 'skopeo');
    requireRegistry(this, auth);
    reg = await startRegistry(auth);
    tmp = await tmpDir('docker-auth');
    await run('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-creds', `${auth.user}:${auth.password}`, `oci:${corpus}:base`, `docker://${reg.host}/base:1`]);
  });
  after(async () => {
    await reg?.stop();
    await tmp?.cleanup();
  });

  it('pulls with --creds', async function () {
    const src = await openRef(`docker://${(reg as RegistryServer).host}/base:1`, { registry: { credentials: { creds: `${auth.user}:${auth.password}`, env: {} } } });
    try {
      await drainAll(src);
    } finally {
      await src.close();
    }
  });

  it('refuses a wrong password with one clear InputError that does not print it', async function () {
    await assert.rejects(
      openRef(`docker://${(reg as RegistryServer).host}/base:1`, { registry: { credentials: { creds: `${auth.user}:wrong-pw`, env: {} } } }),
      (e: Error) => e instanceof InputError && /refused user "alice"/.test(e.message) && /401/.test(e.message) && !e.message.includes('wrong-pw'),
    );
  });

  it('without credentials says authentication is required', async function () {
    await assert.rejects(
      openRef(`docker://${(reg as RegistryServer).host}/base:1`, { registry: { credentials: { env: {} } } }),
      (e: Error) => e instanceof InputError && /requires authentication/.test(e.message),
    );
  });

  it('takes credentials from an auth file and from DOCKER_CONFIG', async function () {
    const r = reg as RegistryServer;
    const t = tmp as TmpDir;
    const file = path.join(t.path, 'config.json');
    await writeFile(file, JSON.stringify({ auths: { [`http://${r.host}`]: { auth: Buffer.from(`${auth.user}:${auth.password}`).toString('base64') } } }));
    for (const credentials of [{ authFile: file, env: {} }, { env: { DOCKER_CONFIG: t.path } }, { env: { REGISTRY_AUTH_FILE: file } }]) {
      const src = await openRef(`docker://${r.host}/base:1`, { registry: { credentials } });
      await src.close();
    }
  });

  it('takes credentials from a credential helper on PATH', async function () {
    const r = reg as RegistryServer;
    const t = tmp as TmpDir;
    const bin = path.join(t.path, 'bin');
    await run('mkdir', ['-p', bin]);
    const helper = path.join(bin, 'docker-credential-testhelper');
    const log = path.join(t.path, 'helper.log');
    await writeFile(
      helper,
      `#!/bin/sh\n[ "$1" = get ] || exit 1\nread url\necho "$url" >> ${log}\nif [ "$url" = "${r.host}" ]; then printf '{"ServerURL":"%s","Username":"${auth.user}","Secret":"${auth.password}"}' "$url"; else echo "credentials not found in native keychain"; exit 1; fi\n`,
    );
    await chmod(helper, 0o755);
    const cfgDir = path.join(t.path, 'helper-config');
    await run('mkdir', ['-p', cfgDir]);
    await writeFile(path.join(cfgDir, 'config.json'), JSON.stringify({ auths: {}, credHelpers: { [r.host]: 'testhelper' } }));
    const src = await openRef(`docker://${r.host}/base:1`, { registry: { credentials: { env: { DOCKER_CONFIG: cfgDir, PATH: `${bin}:/usr/bin:/bin` } } } });
    await src.close();
    assert.equal((await readFile(log, 'utf8')).trim(), r.host);
  });
});
