#!/usr/bin/env node
// Generates examples/hello: a tiny two-layer OCI image layout (tag `latest`)
// for the README quick start and for tests. Reproducible: fixed timestamps,
// owners and entry order, gzip with a zeroed header mtime, so the same Node
// major version regenerates byte-identical blobs (layer diff_ids and the
// config are identical on any version; only gzip bytes could change with zlib).
//
// Usage: node examples/make-hello.mjs [OUT_DIR]   (default: examples/hello)
// Needs only Node and the repo's tar-stream dependency.
import { createHash } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import tarStream from 'tar-stream';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(process.argv[2] ?? path.join(here, 'hello'));

const BASE_TIME = 1704067200; // 2024-01-01T00:00:00Z
const UPDATE_TIME = 1704153600; // 2024-01-02T00:00:00Z
const iso = (t) => new Date(t * 1000).toISOString().replace('.000Z', 'Z');

const dir = (name, mode = 0o755, mtime = BASE_TIME) => ({ name, type: 'directory', mode, mtime });
const file = (name, text, mode = 0o644, mtime = BASE_TIME) => ({ name, type: 'file', mode, mtime, body: Buffer.from(text) });
const symlink = (name, linkname, mtime = BASE_TIME) => ({ name, type: 'symlink', mode: 0o777, mtime, linkname });

const HELLO_SH = `#!/bin/sh
# Prints a greeting. (The image has no /bin/sh: it is for conversion demos, not for running.)
. /etc/os-release
cat /usr/share/hello/greeting.txt
echo "from \${PRETTY_NAME}"
`;

/** Layer 1: a small base system. */
const base = [
  dir('bin/'),
  file('bin/hello', HELLO_SH, 0o755),
  dir('etc/'),
  file('etc/os-release', 'NAME="Hello"\nID=hello\nVERSION_ID=1\nPRETTY_NAME="chunkyard hello example 1"\n'),
  dir('usr/'),
  dir('usr/bin/'),
  symlink('usr/bin/hello', '../../bin/hello'),
  dir('usr/share/'),
  dir('usr/share/hello/'),
  file('usr/share/hello/greeting.txt', 'Hello, world!\n'),
  file('usr/share/hello/old.txt', 'This file is deleted by the second layer.\n'),
  dir('var/'),
  dir('var/tmp/', 0o1777),
];

/** Layer 2: adds a file, deletes one with a whiteout, changes a mode. */
const update = [
  dir('usr/share/hello/', 0o755, UPDATE_TIME),
  file('usr/share/hello/.wh.old.txt', '', 0o644, UPDATE_TIME),
  file('usr/share/hello/added.txt', 'Added by the second layer.\n', 0o644, UPDATE_TIME),
  // A chmod-only change: OCI layers carry the whole file again with the new mode.
  file('usr/share/hello/greeting.txt', 'Hello, world!\n', 0o600, BASE_TIME),
];

async function tarOf(entries) {
  const pack = tarStream.pack();
  const chunks = [];
  pack.on('data', (c) => chunks.push(c));
  const done = new Promise((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  for (const e of entries) {
    const header = { name: e.name, type: e.type, mode: e.mode, mtime: new Date(e.mtime * 1000), uid: 0, gid: 0, uname: 'root', gname: 'root' };
    if (e.type === 'symlink') header.linkname = e.linkname;
    if (e.type === 'file') header.size = e.body.length;
    await new Promise((resolve, reject) => pack.entry(header, e.type === 'file' ? e.body : undefined, (err) => (err ? reject(err) : resolve())));
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

const sha = (b) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const json = (v) => Buffer.from(JSON.stringify(v, null, 2) + '\n');

async function main() {
  await rm(out, { recursive: true, force: true });
  await mkdir(path.join(out, 'blobs', 'sha256'), { recursive: true });
  const putBlob = async (bytes) => {
    const digest = sha(bytes);
    await writeFile(path.join(out, 'blobs', 'sha256', digest.slice('sha256:'.length)), bytes);
    return { digest, size: bytes.length };
  };

  const layers = [];
  const diffIds = [];
  for (const entries of [base, update]) {
    const tar = await tarOf(entries);
    diffIds.push(sha(tar));
    layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...(await putBlob(gzipSync(tar, { level: 9 }))) });
  }

  const config = {
    created: iso(UPDATE_TIME),
    architecture: 'amd64',
    os: 'linux',
    config: {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'GREETING=hello'],
      Cmd: ['/bin/hello'],
      WorkingDir: '/',
      Labels: { 'org.opencontainers.image.title': 'chunkyard hello example' },
    },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: [
      { created: iso(BASE_TIME), created_by: 'make-hello.mjs: base layer (bin, etc, usr, var)' },
      { created: iso(UPDATE_TIME), created_by: 'make-hello.mjs: add added.txt, delete old.txt, chmod 600 greeting.txt' },
    ],
  };
  const manifest = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...(await putBlob(json(config))) },
    layers,
  };
  const index = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [
      {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        ...(await putBlob(json(manifest))),
        annotations: { 'org.opencontainers.image.ref.name': 'latest' },
      },
    ],
  };
  await writeFile(path.join(out, 'index.json'), json(index));
  await writeFile(path.join(out, 'oci-layout'), json({ imageLayoutVersion: '1.0.0' }));
  process.stdout.write(`wrote ${out} (manifest ${index.manifests[0].digest})\n`);
}

main().catch((e) => {
  process.stderr.write(`make-hello: ${e.stack ?? e}\n`);
  process.exit(1);
});
