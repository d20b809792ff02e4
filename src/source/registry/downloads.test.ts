/**
 * Layer downloads ahead of the flatten (downloads.ts) and the worker reading
 * a blob file while it is written (off-thread.ts GrowingFile): same bytes as
 * reading the finished file, bounded temp files, cleanup after success, abort
 * and failure; and against a real registry, docker:// builds byte-identical
 * to oci: ones for py and py-app.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { compress as zstdCompress } from 'zstd-napi';
import { IntegrityError, InterruptedError, NotFoundError } from '../../errors.js';
import { buildImage } from '../../index.js';
import { startFaultyProxy } from '../../testing/faulty-proxy.js';
import { type RegistryServer, requireRegistry, startRegistry } from '../../testing/registry-server.js';
import { drain, sha256File } from '../../testing/streams.js';
import { requireCorpus, requireTool, run, type TmpDir, tmpDir } from '../../testing/tools.js';
import { type Digest, sha256Digest } from '../digest.js';
import { type GrowingFile, openOffThread, type WorkerBlob } from '../off-thread.js';
import type { RegistryClient } from './client.js';
import { LayerDownloads } from './downloads.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A file written piece by piece by the test, told to readers as a GrowingFile. */
class GrowingTestFile implements GrowingFile {
  available = 0;
  complete = false;
  readonly #listeners = new Set<(failure?: Error) => void>();
  constructor(readonly file: string) {}
  watch(l: (failure?: Error) => void): () => void {
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }
  async write(b: Buffer, last: boolean): Promise<void> {
    await appendFile(this.file, b);
    this.available += b.length;
    this.complete = last;
    for (const l of [...this.#listeners]) l();
  }
  fail(e: Error): void {
    for (const l of [...this.#listeners]) l(e);
  }
}

/** Files in all `chunkyard-pull-*` directories under `dir`, and how many such directories there are. */
async function pullFiles(dir: string): Promise<{ dirs: number; files: number }> {
  let dirs = 0;
  let files = 0;
  for (const d of await readdir(dir).catch(() => [])) {
    if (!d.startsWith('chunkyard-pull-')) continue;
    dirs++;
    files += (await readdir(path.join(dir, d)).catch(() => [])).length;
  }
  return { dirs, files };
}

/** Polls `dir` while `work` runs; the most files seen at once. */
async function watchPulls<T>(dir: string, work: () => Promise<T>): Promise<{ value: T; maxFiles: number }> {
  let maxFiles = 0;
  let running = true;
  const poller = (async () => {
    while (running) {
      maxFiles = Math.max(maxFiles, (await pullFiles(dir)).files);
      await sleep(5);
    }
  })();
  try {
    return { value: await work(), maxFiles };
  } finally {
    running = false;
    await poller;
  }
}

describe('source/registry/downloads', function () {
  this.timeout(120_000);
  let tmp: TmpDir;
  before(async () => {
    tmp = await tmpDir('downloads');
  });
  after(async () => {
    await tmp.cleanup();
  });

  const tar = Buffer.concat([randomBytes(600_000), Buffer.alloc(1_500_000, 0x61), randomBytes(500_000)]);
  const diffId = sha256Digest(tar);

  for (const [name, compressed] of [
    ['gzip', zlib.gzipSync(tar)],
    ['zstd', zstdCompress(tar)],
    ['plain', tar],
  ] as const) {
    it(`the worker reads a ${name} blob as it is written, sniffing its compression: the same bytes`, async () => {
      const file = path.join(tmp.path, `growing-${name}`);
      await writeFile(file, '');
      const g = new GrowingTestFile(file);
      const blob: WorkerBlob = { range: { file, start: 0, size: compressed.length, where: 'test' }, digest: sha256Digest(compressed), size: compressed.length, diffId, compression: 'sniff', name: 'layer 0' };
      const s = openOffThread(blob, { growth: g });
      const got = drain(s);
      // Odd-sized pieces with pauses: the worker must wait for bytes, not take a short file for the end.
      for (let off = 0; off < compressed.length; ) {
        const n = Math.min(compressed.length - off, 3 + ((off * 7919) % 300_000));
        await sleep(2);
        await g.write(compressed.subarray(off, off + n), off + n === compressed.length);
        off += n;
      }
      assert.deepEqual(await got, { digest: diffId, bytes: tar.length });
    });
  }

  it('a write that fails mid-blob ends the reader with its error', async () => {
    const compressed = zlib.gzipSync(tar);
    const file = path.join(tmp.path, 'growing-fail');
    await writeFile(file, '');
    const g = new GrowingTestFile(file);
    const blob: WorkerBlob = { range: { file, start: 0, size: compressed.length, where: 'test' }, digest: sha256Digest(compressed), size: compressed.length, diffId, compression: 'sniff', name: 'layer 0' };
    const got = drain(openOffThread(blob, { growth: g }));
    await g.write(compressed.subarray(0, 1_000_000), false);
    g.fail(new NotFoundError('blob went away'));
    await assert.rejects(got, (e: Error) => e instanceof NotFoundError && e.message === 'blob went away');
  });

  /** A stand-in client whose blobs come from `bodies` (index → chunks). */
  function fakeClient(bodies: Map<string, Buffer[]>, delayMs = 0): RegistryClient {
    return {
      async *blobChunks(desc: { digest: Digest }, _what: string, signal?: AbortSignal) {
        for (const c of bodies.get(desc.digest) ?? []) {
          if (delayMs > 0) await sleep(delayMs);
          if (signal?.aborted) throw new InterruptedError('interrupted');
          yield c;
        }
      },
    } as unknown as RegistryClient;
  }

  it('fetches ahead, deletes each file when read, refuses a registry sending too much or too little', async () => {
    const blobs = [0, 1, 2, 3, 4, 5].map((i) => Buffer.alloc(100_000 + i, i));
    const descs = blobs.map((b, i) => ({ index: i, digest: sha256Digest(b), size: b.length }));
    const bodies = new Map(descs.map((d, i) => [d.digest as string, [blobs[i] as Buffer]]));
    // Layer 4 sends a byte too many, layer 5 one too few.
    bodies.set(descs[4]!.digest, [blobs[4] as Buffer, Buffer.from([1])]);
    bodies.set(descs[5]!.digest, [(blobs[5] as Buffer).subarray(1)]);
    const parent = path.join(tmp.path, 'ahead');
    await run('mkdir', ['-p', parent]);
    const dl = await LayerDownloads.create(fakeClient(bodies), descs, 'docker://test/x', { ahead: 2, tempDir: parent });
    try {
      assert.deepEqual(await pullFiles(parent), { dirs: 1, files: 0 }); // nothing until a layer is opened
      const d0 = dl.acquire(0);
      await d0.whenComplete();
      await sleep(50);
      // Layer 0 and two ahead (1, 2); not 3.
      assert.equal((await pullFiles(parent)).files, 3);
      dl.release(0, d0);
      await sleep(50);
      // 0 deleted once read; 1, 2 kept for their readers.
      assert.deepEqual((await readdir(dl.directory)).sort(), ['layer-1-1', 'layer-2-2']);
      // Reading 1 moves the window on to 3.
      const d1 = dl.acquire(1);
      await sleep(50);
      assert.deepEqual((await readdir(dl.directory)).sort(), ['layer-1-1', 'layer-2-2', 'layer-3-3']);
      dl.release(1, d1);
      const d4 = dl.acquire(4);
      await assert.rejects(d4.whenComplete(), (e: Error) => e instanceof IntegrityError && /layer 4 .*\(docker:\/\/test\/x\): more than the expected 100004 bytes/.test(e.message));
      dl.release(4, d4);
      const d5 = dl.acquire(5);
      await assert.rejects(d5.whenComplete(), (e: Error) => e instanceof IntegrityError && /layer 5 .*: 100004 bytes, expected 100005/.test(e.message));
      dl.release(5, d5);
    } finally {
      await dl.close();
    }
    assert.deepEqual(await pullFiles(parent), { dirs: 0, files: 0 });
  });

  it('close() stops downloads under way and removes everything', async () => {
    const blobs = [0, 1, 2].map((i) => Buffer.alloc(50_000, i));
    const descs = blobs.map((b, i) => ({ index: i, digest: sha256Digest(b), size: b.length }));
    const bodies = new Map(descs.map((d, i) => [d.digest as string, Array.from({ length: 50 }, (_, k) => (blobs[i] as Buffer).subarray(k * 1000, (k + 1) * 1000))]));
    const parent = path.join(tmp.path, 'closing');
    await run('mkdir', ['-p', parent]);
    const dl = await LayerDownloads.create(fakeClient(bodies, 5), descs, 'docker://test/x', { tempDir: parent });
    const d0 = dl.acquire(0);
    const done = assert.rejects(d0.whenComplete(), InterruptedError);
    await sleep(30);
    await dl.close();
    await done;
    assert.deepEqual(await pullFiles(parent), { dirs: 0, files: 0 });
    assert.throws(() => dl.acquire(1), /closed/);
  });
});

describe('docker:// builds with layers fetched ahead (a real registry)', function () {
  this.timeout(300_000);
  let corpus: string;
  let reg: RegistryServer | undefined;
  let tmp: TmpDir | undefined;
  let pulls: string;

  before(async function () {
    corpus = requireCorpus(this);
    requireTool(this, 'skopeo');
    requireRegistry(this);
    reg = await startRegistry();
    tmp = await tmpDir('prefetch');
    pulls = path.join(tmp.path, 'pulls');
    await run('mkdir', ['-p', pulls]);
    for (const tag of ['py', 'py-app']) await run('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${corpus}:${tag}`, `docker://${reg.host}/${tag}:latest`]);
  });
  after(async () => {
    await reg?.stop();
    await tmp?.cleanup();
  });

  for (const tag of ['py', 'py-app']) {
    it(`${tag}: docker:// == oci: byte for byte, fetching ahead and not; temp files bounded and removed`, async function () {
      const t = tmp as TmpDir;
      const want = path.join(t.path, `${tag}-oci.ext4`);
      await buildImage(`oci:${corpus}:${tag}`, want);
      const wantHash = await sha256File(want);
      for (const prefetchLayers of [3, 0]) {
        const out = path.join(t.path, `${tag}-reg-${prefetchLayers}.ext4`);
        const { maxFiles } = await watchPulls(pulls, () => buildImage(`docker://${(reg as RegistryServer).host}/${tag}:latest`, out, { registry: { tempDir: pulls, prefetchLayers } }));
        assert.equal(await sha256File(out), wantHash, `prefetchLayers ${prefetchLayers}`);
        // The layer being read, the one opened next, and those fetched ahead.
        assert.ok(maxFiles <= prefetchLayers + 2, `at most ${prefetchLayers + 2} files at once, saw ${maxFiles}`);
        if (prefetchLayers > 0 && tag === 'py-app') assert.ok(maxFiles >= 2, `downloads overlapped (saw at most ${maxFiles} files)`);
        assert.deepEqual(await pullFiles(pulls), { dirs: 0, files: 0 });
      }
    });
  }

  it('an interrupted build removes its downloads', async function () {
    const t = tmp as TmpDir;
    const ac = new AbortController();
    await assert.rejects(
      buildImage(`docker://${(reg as RegistryServer).host}/py-app:latest`, path.join(t.path, 'abort.ext4'), {
        signal: ac.signal,
        registry: { tempDir: pulls },
        onProgress: (p) => {
          if (p.layer === 2) ac.abort();
        },
      }),
      InterruptedError,
    );
    assert.deepEqual(await pullFiles(pulls), { dirs: 0, files: 0 });
  });

  it('a layer that cannot be fetched fails the build naming it, and removes the downloads', async function () {
    const t = tmp as TmpDir;
    const local = await (await import('../transports.js')).parseImageReference(`oci:${corpus}:py-app`).open();
    const bad = local.layers[3]?.digest as string;
    await local.close();
    const proxy = await startFaultyProxy(`http://${(reg as RegistryServer).host}`, (req) => (req.url.includes(`/blobs/${bad}`) ? { kind: 'status', status: 404 } : { kind: 'pass' }));
    try {
      await assert.rejects(
        buildImage(`docker://${new URL(proxy.endpoint).host}/py-app:latest`, path.join(t.path, 'fail.ext4'), { registry: { tempDir: pulls, retryBaseMs: 10 } }),
        (e: Error) => e instanceof NotFoundError && e.message.includes(`layer 3 ${bad}`),
      );
    } finally {
      await proxy.close();
    }
    assert.deepEqual(await pullFiles(pulls), { dirs: 0, files: 0 });
  });
});
