import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileBlockDevice } from '../../blockdev/device.js';
import type { BlockDevice } from '../../blockdev/device.js';
import { cowOverlay } from '../../blockdev/overlay.js';
import { RawNbdClient } from '../../testing/nbd-client.js';
import type { ReplyChunk } from '../../testing/nbd-client.js';
import { failingDevice, gatedDevice, holeyDevice, memoryDevice, reversingDevice, startServer } from '../../testing/nbd-fixtures.js';
import type { ServerHarness } from '../../testing/nbd-fixtures.js';
import { requireRoot, requireTool, run, skipWith, tmpDir, withLoopMount } from '../../testing/tools.js';
import type { TmpDir } from '../../testing/tools.js';
import { BASE_ALLOCATION, Cmd, CmdFlag, encodeMetaContextRequest, Err, MAX_PAYLOAD, Opt, Rep, ReplyFlag, ReplyType, State } from './protocol.js';
import { NbdServer } from './server.js';
import type { NbdRequestEvent } from './server.js';
import { nbdUri } from './uri.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const pattern = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 13 + (i >> 9)) & 0xff));

/** A few MiB of random data with zero regions; an odd number of 512-byte sectors. */
function testImage(): Buffer {
  const b = randomBytes((6 * 1024 + 3) * 512);
  b.fill(0, 0, 64 * 1024);
  b.fill(0, 1024 * 1024, 1024 * 1024 + 300 * 1024);
  b.fill(0, b.length - 4096);
  return b;
}

describe('serve/nbd/server with real clients', function () {
  let tmp: TmpDir;
  let imgPath: string;
  let img: Buffer;
  before(async function () {
    tmp = await tmpDir('nbd-real');
    img = testImage();
    imgPath = path.join(tmp.path, 'served.img');
    await writeFile(imgPath, img);
  });
  after(async function () {
    await tmp.cleanup();
  });

  /** Serves the test image read-only on `listen` for the duration of `fn`. */
  async function serving(fn: (h: ServerHarness, dev: BlockDevice) => Promise<void>, listen?: 'tcp'): Promise<void> {
    const dev = await fileBlockDevice(imgPath);
    const h = await startServer(
      { '': { device: dev, description: 'test image' }, second: { device: dev } },
      listen === 'tcp' ? { listen: { tcp: { port: 0 } } } : {},
    );
    try {
      await fn(h, dev);
      assert.deepEqual(h.errors, []);
    } finally {
      await h.close();
      await dev.close();
    }
  }

  it('nbdinfo --json reports the size and read-only', async function () {
    requireTool(this, 'nbdinfo');
    await serving(async (h) => {
      const out = JSON.parse((await run('nbdinfo', ['--json', nbdUri(h.address)])).stdout) as { exports: Array<Record<string, unknown>> };
      const e = out.exports[0]!;
      assert.equal(e['export-size'], img.length);
      assert.equal(e['is_read_only'], true);
      assert.equal(e['can_flush'], true);
      assert.equal(e['can_multi_conn'], true);
      assert.equal(e['description'], 'test image');
      assert.equal(e['block_size_preferred'], 512 * 1024);
    });
  });

  it('nbdinfo --list lists both exports', async function () {
    requireTool(this, 'nbdinfo');
    await serving(async (h) => {
      const out = (await run('nbdinfo', ['--list', nbdUri(h.address)])).stdout;
      assert.match(out, /^export="":$/m);
      assert.match(out, /^export="second":$/m);
      assert.match(out, /description: test image/);
      assert.equal((out.match(/export-size: (\d+)/g) ?? []).length, 2);
    });
  });

  for (const via of ['unix', 'tcp'] as const) {
    it(`nbdcopy over ${via} copies the export byte for byte`, async function () {
      requireTool(this, 'nbdcopy');
      await serving(async (h) => {
        const out = path.join(tmp.path, `out-${via}.img`);
        const uri = nbdUri(h.address, 'second');
        if (via === 'tcp') assert.match(uri, /^nbd:\/\/127\.0\.0\.1:\d+\/second$/);
        await run('nbdcopy', [uri, out]);
        const got = await readFile(out);
        assert.equal(got.length, img.length);
        assert.ok(got.equals(img), 'copied bytes differ from the served file');
      }, via === 'tcp' ? 'tcp' : undefined);
    });
  }

  it('a writable overlay export takes an nbdcopy, reads it back, and leaves the base alone', async function () {
    requireTool(this, 'nbdcopy');
    const base = await fileBlockDevice(imgPath);
    const baseSha = sha(await readFile(imgPath));
    const scratch = path.join(tmp.path, 'scratch');
    await mkdir(scratch, { recursive: true });
    const overlay = await cowOverlay(base, { dir: scratch });
    const h = await startServer({ '': { device: overlay } });
    try {
      const input = randomBytes(img.length);
      input.fill(0, 200 * 1024, 900 * 1024); // zero runs: nbdcopy may skip or zero them, either must read back as zeros
      const inPath = path.join(tmp.path, 'in.img');
      await writeFile(inPath, input);
      const uri = nbdUri(h.address);
      await run('nbdcopy', ['--synchronous', inPath, uri]); // see serve.test.ts: libnbd 1.14 aio write race
      const back = path.join(tmp.path, 'back.img');
      await run('nbdcopy', [uri, back]);
      assert.ok((await readFile(back)).equals(input), 'read back differs from what was written');
      assert.equal(sha(await readFile(imgPath)), baseSha, 'the base file changed');
      const info = JSON.parse((await run('nbdinfo', ['--json', uri])).stdout) as { exports: Array<Record<string, unknown>> };
      assert.equal(info.exports[0]!['is_read_only'], false);
      assert.deepEqual(h.errors, []);
    } finally {
      await h.close();
      await overlay.close();
      await base.close();
    }
    assert.equal(existsSync(overlay.scratchPath), false);
  });

  it('nbdfuse exposes an ext4 image whose loop mount holds the source tree', async function () {
    requireTool(this, 'nbdfuse', 'fusermount3', 'mke2fs', 'diff');
    requireRoot(this, 'a loop mount of the FUSE file');
    if (!existsSync('/dev/fuse')) skipWith(this, 'needs nbdfuse with /dev/fuse (missing)');
    const tree = path.join(tmp.path, 'tree');
    await mkdir(path.join(tree, 'etc', 'deep', 'er'), { recursive: true });
    await writeFile(path.join(tree, 'etc', 'hostname'), 'chunkyard\n');
    await writeFile(path.join(tree, 'etc', 'deep', 'er', 'blob.bin'), randomBytes(300 * 1024));
    await writeFile(path.join(tree, 'empty'), '');
    await writeFile(path.join(tree, 'sparse-ish'), Buffer.concat([Buffer.alloc(70000), Buffer.from('end')]));
    await symlink('etc/hostname', path.join(tree, 'link'));
    const ext4 = path.join(tmp.path, 'fs.img');
    await run('mke2fs', ['-q', '-t', 'ext4', '-d', tree, ext4, '8M']);

    const dev = await fileBlockDevice(ext4);
    const h = await startServer({ '': { device: dev } });
    const mnt = path.join(tmp.path, 'fuse');
    await mkdir(mnt);
    const pidFile = path.join(tmp.path, 'nbdfuse.pid');
    // nbdfuse stays in the foreground; it writes the pid file once the mount is up.
    const child = spawn('nbdfuse', ['-r', '-P', pidFile, mnt, nbdUri(h.address)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    let mounted = false;
    try {
      for (let i = 0; i < 600 && !existsSync(pidFile); i++) {
        if (child.exitCode !== null) throw new Error(`nbdfuse exited with ${child.exitCode}: ${stderr}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(existsSync(pidFile), `nbdfuse did not come up: ${stderr}`);
      mounted = true;
      const file = path.join(mnt, 'nbd');
      assert.equal((await stat(file)).size, dev.size);
      await withLoopMount(this, file, async (dir) => {
        // diff runs in its own process: reads through the loop device come back to this process's
        // server, so they must not tie up this process's libuv threads.
        const r = await run('diff', ['-r', '--no-dereference', '-x', 'lost+found', tree, dir], { allowFail: true });
        assert.equal(r.code, 0, `mounted tree differs from the source:\n${r.stdout}${r.stderr}`);
      });
    } finally {
      if (mounted) await run('fusermount3', ['-u', mnt], { allowFail: true });
      if (child.exitCode === null) {
        const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
        if (!mounted) child.kill('SIGTERM');
        await exited;
        clearTimeout(t);
      }
      await h.close();
      await dev.close();
    }
    assert.deepEqual(h.errors, []);
  });
});

describe('serve/nbd/server protocol', function () {
  const SIZE = 1 << 20;
  let data: Buffer;
  let h: ServerHarness | undefined;
  const clients: RawNbdClient[] = [];

  async function serve(exports: Record<string, { device: BlockDevice; description?: string }>, options: Parameters<typeof startServer>[1] = {}): Promise<ServerHarness> {
    h = await startServer(exports, options);
    return h;
  }
  async function client(name = ''): Promise<RawNbdClient> {
    const c = await RawNbdClient.connect(h!.address);
    clients.push(c);
    await c.go(name);
    return c;
  }

  beforeEach(function () {
    data = pattern(SIZE);
  });
  afterEach(async function () {
    for (const c of clients.splice(0)) c.destroy();
    await h?.close();
    h = undefined;
  });

  it('rejects out-of-range, oversized and unknown requests with EINVAL and keeps serving', async function () {
    await serve({ '': { device: memoryDevice(data) } });
    const c = await client();
    assert.equal((await c.request({ type: Cmd.READ, offset: SIZE - 10, length: 11 })).error, Err.EINVAL);
    assert.equal((await c.request({ type: Cmd.READ, offset: 2n ** 64n - 1n, length: 2 })).error, Err.EINVAL);
    assert.equal((await c.request({ type: Cmd.READ, offset: 0, length: MAX_PAYLOAD + 1 })).error, Err.EINVAL);
    assert.equal((await c.request({ type: Cmd.BLOCK_STATUS, offset: 0, length: 512 })).error, Err.EINVAL);
    assert.equal((await c.request({ type: 99, offset: 0, length: 0 })).error, Err.EINVAL);
    assert.equal((await c.request({ type: Cmd.READ, offset: 0, length: 512, flags: CmdFlag.DF })).error, Err.EINVAL);
    assert.equal((await c.request({ type: Cmd.CACHE, offset: 0, length: 4096 })).error, 0);
    assert.equal((await c.request({ type: Cmd.FLUSH, offset: 0, length: 0 })).error, 0);
    const r = await c.request({ type: Cmd.READ, offset: SIZE - 10, length: 10 });
    assert.equal(r.error, 0);
    assert.deepEqual(r.data, data.subarray(SIZE - 10));
    assert.equal((await c.request({ type: Cmd.READ, offset: 5, length: 0 })).error, 0);
  });

  it('answers writes to a read-only export with EPERM after draining the payload', async function () {
    await serve({ '': { device: memoryDevice(data) } });
    const c = await client();
    const w = await c.request({ type: Cmd.WRITE, offset: 0, length: 100_000, data: Buffer.alloc(100_000, 0x55) });
    assert.equal(w.error, Err.EPERM);
    assert.equal((await c.request({ type: Cmd.TRIM, offset: 0, length: 4096 })).error, Err.EPERM);
    assert.equal((await c.request({ type: Cmd.WRITE_ZEROES, offset: 0, length: 4096 })).error, Err.EPERM);
    const r = await c.request({ type: Cmd.READ, offset: 0, length: 4096 });
    assert.deepEqual(r.data, data.subarray(0, 4096)); // the payload was not taken for a header, and nothing was written
  });

  it('writes, flushes and reads back through a writable device shared by connections', async function () {
    const dev = memoryDevice(Buffer.from(data), { writable: true });
    await serve({ '': { device: dev } });
    const [a, b] = [await client(), await client()];
    const payload = randomBytes(70_000);
    assert.equal((await a.request({ type: Cmd.WRITE, offset: 1234, length: payload.length, data: payload })).error, 0);
    assert.equal((await a.request({ type: Cmd.WRITE, offset: 0, length: 3, data: Buffer.from('abc'), flags: CmdFlag.FUA })).error, 0);
    assert.equal((await a.request({ type: Cmd.FLUSH, offset: 0, length: 0 })).error, 0);
    const r = await b.request({ type: Cmd.READ, offset: 1234, length: payload.length });
    assert.ok(r.data!.equals(payload));
    assert.equal((await b.request({ type: Cmd.READ, offset: 0, length: 3 })).data!.toString(), 'abc');
    assert.equal((await b.request({ type: Cmd.WRITE, offset: SIZE - 1, length: 2, data: Buffer.alloc(2) })).error, Err.EINVAL);
    assert.equal((await b.request({ type: Cmd.WRITE_ZEROES, offset: 0, length: 2 })).error, Err.EINVAL); // not advertised
  });

  it('disconnects on a bad request magic without harming the server', async function () {
    await serve({ '': { device: memoryDevice(data) } });
    const c = await client();
    c.send({ type: Cmd.READ, offset: 0, length: 512, magic: 0xdeadbeef });
    await c.closed;
    assert.ok(h!.errors.some((e) => e.kind === 'protocol' && /magic/.test(e.reason)));
    const d = await client();
    assert.deepEqual((await d.request({ type: Cmd.READ, offset: 512, length: 512 })).data, data.subarray(512, 1024));
  });

  it('disconnects on a WRITE larger than 32 MiB (its payload cannot be drained sensibly)', async function () {
    await serve({ '': { device: memoryDevice(Buffer.from(data), { writable: true }) } });
    const c = await client();
    c.send({ type: Cmd.WRITE, offset: 0, length: MAX_PAYLOAD + 512 });
    await c.closed;
    assert.ok(h!.errors.some((e) => e.kind === 'protocol' && /WRITE/.test(e.reason)));
  });

  it('drops a client that never finishes the handshake, and keeps serving others', async function () {
    await serve({ '': { device: memoryDevice(data) } }, { handshakeTimeoutMs: 300 });
    const idle = await RawNbdClient.connect(h!.address);
    clients.push(idle);
    await idle.readGreeting(); // ... and then says nothing
    await idle.closed;
    assert.ok(h!.errors.some((e) => e.kind === 'protocol' && /no handshake within 300 ms/.test(e.reason)), JSON.stringify(h!.errors));
    const d = await client();
    await new Promise((r) => setTimeout(r, 500)); // past the handshake limit: a connection in transmission stays
    assert.deepEqual((await d.request({ type: Cmd.READ, offset: 0, length: 512 })).data, data.subarray(0, 512));
  });

  it('survives a client that vanishes mid-read and keeps serving others', async function () {
    const gated = gatedDevice(memoryDevice(data));
    await serve({ '': { device: gated } });
    const c = await client();
    c.send({ type: Cmd.READ, offset: 0, length: 65536 });
    while (gated.waiting === 0) await new Promise((r) => setTimeout(r, 5));
    c.destroy();
    await c.closed;
    while (gated.aborted === 0) await new Promise((r) => setTimeout(r, 5)); // the device op learnt the client left
    gated.release();
    const d = await client();
    assert.deepEqual((await d.request({ type: Cmd.READ, offset: 100, length: 100 })).data, data.subarray(100, 200));
    assert.deepEqual(h!.errors, []);
  });

  it('replies out of order as reads complete, with the right cookies and data', async function () {
    const N = 8;
    await serve({ '': { device: reversingDevice(memoryDevice(data), N) } });
    const c = await client();
    const sent: bigint[] = [];
    for (let i = 0; i < N; i++) sent.push(c.send({ type: Cmd.READ, offset: i * 4096 + i, length: 1000 + i, cookie: 0x1000n + BigInt(i) }));
    const got: bigint[] = [];
    for (let i = 0; i < N; i++) {
      const r = await c.reply();
      const k = Number(r.cookie - 0x1000n);
      assert.equal(r.error, 0);
      assert.deepEqual(r.data, data.subarray(k * 4096 + k, k * 4096 + k + 1000 + k));
      got.push(r.cookie);
    }
    assert.deepEqual(got, [...sent].reverse());
  });

  it('serves 200 pipelined reads on each of 4 connections correctly (with backpressure)', async function () {
    const dev = memoryDevice(data);
    const events: NbdRequestEvent[] = [];
    await serve({ '': { device: dev } }, { maxInFlight: 16, maxInFlightBytes: 512 * 1024, onRequest: (e) => events.push(e) });
    const conns = await Promise.all([0, 1, 2, 3].map(() => client()));
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    await Promise.all(
      conns.map(async (c, ci) => {
        const want = new Map<bigint, Buffer>();
        for (let i = 0; i < 200; i++) {
          const length = 1 + rand(256 * 1024);
          const offset = rand(SIZE - length);
          const cookie = c.send({ type: Cmd.READ, offset, length, cookie: BigInt(ci * 1000 + i) });
          want.set(cookie, data.subarray(offset, offset + length));
        }
        for (let i = 0; i < 200; i++) {
          const r = await c.reply();
          assert.equal(r.error, 0);
          const w = want.get(r.cookie);
          assert.ok(w !== undefined, `unexpected or repeated cookie ${r.cookie}`);
          assert.ok(r.data!.equals(w), `wrong data for cookie ${r.cookie}`);
          want.delete(r.cookie);
        }
      }),
    );
    assert.equal(events.filter((e) => e.command === 'read' && e.error === 0).length, 800);
    assert.ok(events.every((e) => e.micros >= 0 && e.connection >= 1));
  });

  it('holds at most maxInFlight requests per connection', async function () {
    const gated = gatedDevice(memoryDevice(data));
    await serve({ '': { device: gated } }, { maxInFlight: 4 });
    const c = await client();
    for (let i = 0; i < 10; i++) c.send({ type: Cmd.READ, offset: i * 512, length: 512, cookie: BigInt(i) });
    while (gated.waiting < 4) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 100)); // give the server every chance to (wrongly) take more
    assert.equal(gated.waiting, 4);
    gated.release();
    const cookies = new Set<bigint>();
    for (let i = 0; i < 10; i++) {
      const r = await c.reply();
      assert.deepEqual(r.data, data.subarray(Number(r.cookie) * 512, Number(r.cookie) * 512 + 512));
      cookies.add(r.cookie);
    }
    assert.equal(cookies.size, 10);
  });

  it('close() drops connections still in the handshake', async function () {
    const srv = await serve({ '': { device: memoryDevice(data) } });
    const c = await RawNbdClient.connect(srv.address);
    clients.push(c);
    await c.readGreeting();
    await srv.server.close();
    await c.closed;
    assert.equal(srv.server.connections, 0);
  });

  it('answers EIO when the device fails, and reports it through onError', async function () {
    await serve({ '': { device: failingDevice(SIZE) } });
    const c = await client();
    assert.equal((await c.request({ type: Cmd.READ, offset: 4096, length: 512 })).error, Err.EIO);
    const e = h!.errors[0];
    assert.ok(e !== undefined && e.kind === 'device');
    assert.equal(e.command, 'read');
    assert.equal(e.offset, 4096);
    assert.match(String(e.error), /backend exploded/);
    h!.errors.length = 0;
  });

  it('DISC finishes in-flight requests, then closes', async function () {
    const gated = gatedDevice(memoryDevice(data));
    await serve({ '': { device: gated } });
    const c = await client();
    const cookie = c.send({ type: Cmd.READ, offset: 0, length: 4096 });
    c.send({ type: Cmd.DISC, offset: 0, length: 0 });
    while (gated.waiting === 0) await new Promise((r) => setTimeout(r, 5));
    gated.release();
    const r = await c.reply();
    assert.equal(r.cookie, cookie);
    assert.deepEqual(r.data, data.subarray(0, 4096));
    await c.closed;
  });

  it('close() lets in-flight reads finish, answers new requests with ESHUTDOWN, and removes the socket', async function () {
    const gated = gatedDevice(memoryDevice(data));
    const srv = await serve({ '': { device: gated } });
    const c = await client();
    const first = c.send({ type: Cmd.READ, offset: 0, length: 512 });
    while (gated.waiting === 0) await new Promise((r) => setTimeout(r, 5));
    const closing = srv.server.close();
    const second = c.send({ type: Cmd.READ, offset: 512, length: 512 });
    const r2 = await c.reply();
    assert.equal(r2.cookie, second);
    assert.equal(r2.error, Err.ESHUTDOWN);
    gated.release();
    const r1 = await c.reply();
    assert.equal(r1.cookie, first);
    assert.deepEqual(r1.data, data.subarray(0, 512));
    await c.closed;
    await closing;
    assert.equal(existsSync((srv.address as { unix: string }).unix), false);
  });

  it('close() fails reads still stuck after the grace period with ESHUTDOWN', async function () {
    const gated = gatedDevice(memoryDevice(data));
    const srv = await serve({ '': { device: gated } }, { shutdownGraceMs: 50 });
    const c = await client();
    const cookie = c.send({ type: Cmd.READ, offset: 0, length: 512 });
    while (gated.waiting === 0) await new Promise((r) => setTimeout(r, 5));
    await srv.server.close();
    const r = await c.reply();
    assert.equal(r.cookie, cookie);
    assert.equal(r.error, Err.ESHUTDOWN);
    await c.closed;
    assert.equal(gated.aborted, 1);
  });

  describe('listen', function () {
    let dir: TmpDir;
    beforeEach(async function () {
      dir = await tmpDir('nbd-listen');
    });
    afterEach(async function () {
      await dir.cleanup();
    });

    it('makes the unix socket 0600, refuses other files and live sockets, replaces stale ones', async function () {
      const dev = memoryDevice(data);
      const sock = path.join(dir.path, 's.sock');
      const s1 = new NbdServer({ exports: { '': { device: dev } } });
      assert.deepEqual(await s1.listen({ unix: sock }), { unix: sock });
      assert.equal((await stat(sock)).mode & 0o777, 0o600);
      const s2 = new NbdServer({ exports: { '': { device: dev } } });
      await assert.rejects(s2.listen({ unix: sock }), /another server is listening/);
      await s1.close();
      assert.equal(existsSync(sock), false);

      const file = path.join(dir.path, 'file');
      await writeFile(file, 'precious');
      await assert.rejects(new NbdServer({ exports: { '': { device: dev } } }).listen({ unix: file }), /not a socket/);
      assert.equal(await readFile(file, 'utf8'), 'precious');

      const stale = path.join(dir.path, 'stale.sock');
      await run('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', stale]);
      assert.ok((await stat(stale)).isSocket());
      const s3 = new NbdServer({ exports: { '': { device: dev } } });
      await s3.listen({ unix: stale });
      const c = await RawNbdClient.connect({ unix: stale });
      assert.equal((await c.go()).size, SIZE);
      c.destroy();
      await s3.close();
    });

    it('binds 127.0.0.1 on port 0 and reports the port', async function () {
      const s = new NbdServer({ exports: { '': { device: memoryDevice(data) } } });
      const a = await s.listen({ tcp: { port: 0 } });
      assert.ok('tcp' in a);
      assert.equal(a.tcp.host, '127.0.0.1');
      assert.ok(a.tcp.port > 0);
      const probe = await new Promise<net.Socket>((resolve, reject) => {
        const so = net.connect(a.tcp.port, '127.0.0.1', () => resolve(so));
        so.once('error', reject);
      });
      probe.destroy();
      const c = await RawNbdClient.connect(a);
      assert.deepEqual((await c.go()).size, SIZE);
      assert.deepEqual((await c.request({ type: Cmd.READ, offset: 7, length: 9 })).data, data.subarray(7, 16));
      c.destroy();
      await s.close();
    });
  });
});

describe('serve/nbd/server structured replies and base:allocation', function () {
  const CHUNK = 64 * 1024;
  const SIZE = 16 * CHUNK;
  /** Holes: chunk 0, chunks 4–5, and a 4 KiB hole inside chunk 9. */
  const HOLES = [
    { offset: 0, length: CHUNK },
    { offset: 4 * CHUNK, length: 2 * CHUNK },
    { offset: 9 * CHUNK + 8192, length: 4096 },
  ];
  const data = randomBytes(SIZE);
  let h: ServerHarness | undefined;
  const clients: RawNbdClient[] = [];
  afterEach(async function () {
    for (const c of clients.splice(0)) c.destroy();
    await h?.close();
    h = undefined;
  });

  /** GO after STRUCTURED_REPLY and (unless `context` is false) SET_META_CONTEXT base:allocation. */
  async function sr(device: BlockDevice, context = true): Promise<RawNbdClient> {
    h ??= await startServer({ '': { device } });
    const c = await RawNbdClient.connect(h.address);
    clients.push(c);
    await c.start();
    assert.equal((await c.option(Opt.STRUCTURED_REPLY)).at(-1)!.type, Rep.ACK);
    if (context) assert.equal((await c.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest('', [BASE_ALLOCATION]))).at(-1)!.type, Rep.ACK);
    await c.info('go', '');
    return c;
  }
  const u64 = (b: Buffer, at: number): number => Number(b.readBigUInt64BE(at));

  it('answers READ with OFFSET_DATA and OFFSET_HOLE chunks, DONE on the last, the cookie echoed; holes are not read', async function () {
    const dev = holeyDevice(data, HOLES);
    const c = await sr(dev);
    const chunks = await c.structured({ type: Cmd.READ, offset: 3 * CHUNK + 100, length: 3 * CHUNK, cookie: 0xdeadbeefn });
    assert.deepEqual(
      chunks.map((x) => [x.type, x.flags, x.cookie]),
      [
        [ReplyType.OFFSET_DATA, 0, 0xdeadbeefn],
        [ReplyType.OFFSET_HOLE, 0, 0xdeadbeefn],
        [ReplyType.OFFSET_DATA, ReplyFlag.DONE, 0xdeadbeefn],
      ],
    );
    const [d1, hole, d2] = chunks as [ReplyChunk, ReplyChunk, ReplyChunk];
    assert.equal(u64(d1.payload, 0), 3 * CHUNK + 100);
    assert.ok(d1.payload.subarray(8).equals(data.subarray(3 * CHUNK + 100, 4 * CHUNK)));
    assert.equal(hole.payload.length, 12);
    assert.equal(u64(hole.payload, 0), 4 * CHUNK);
    assert.equal(hole.payload.readUInt32BE(8), 2 * CHUNK);
    assert.equal(u64(d2.payload, 0), 6 * CHUNK);
    assert.ok(d2.payload.subarray(8).equals(data.subarray(6 * CHUNK, 6 * CHUNK + 100)));
    assert.equal(dev.bytesRead, CHUNK - 100 + 100);
    // All data: one chunk, DONE; a device without extents always sends data.
    const one = await c.structured({ type: Cmd.READ, offset: CHUNK, length: 4096 });
    assert.deepEqual(one.map((x) => [x.type, x.flags, x.payload.length]), [[ReplyType.OFFSET_DATA, ReplyFlag.DONE, 8 + 4096]]);
    const zero = await c.structured({ type: Cmd.READ, offset: 5, length: 0 });
    assert.deepEqual(zero.map((x) => [x.type, x.flags, x.payload.length]), [[ReplyType.NONE, ReplyFlag.DONE, 0]]);
  });

  it('without extents, a structured READ is one OFFSET_DATA chunk with the zeros in it', async function () {
    const c = await sr(holeyDevice(data, HOLES, { extents: false }));
    const chunks = await c.structured({ type: Cmd.READ, offset: 0, length: 2 * CHUNK });
    assert.deepEqual(chunks.map((x) => [x.type, x.flags]), [[ReplyType.OFFSET_DATA, ReplyFlag.DONE]]);
    assert.ok(chunks[0]!.payload.subarray(8, 8 + CHUNK).equals(Buffer.alloc(CHUNK)));
    assert.ok(chunks[0]!.payload.subarray(8 + CHUNK).equals(data.subarray(CHUNK, 2 * CHUNK)));
  });

  it('BLOCK_STATUS reports hole runs as HOLE|ZERO and data as 0 with the context id; REQ_ONE gives one descriptor', async function () {
    const c = await sr(holeyDevice(data, HOLES));
    const decode = (chunks: ReplyChunk[]): { id: number; d: number[][] } => {
      assert.equal(chunks.length, 1);
      const x = chunks[0]!;
      assert.equal(x.type, ReplyType.BLOCK_STATUS);
      assert.equal(x.flags, ReplyFlag.DONE);
      const d: number[][] = [];
      for (let at = 4; at < x.payload.length; at += 8) d.push([x.payload.readUInt32BE(at), x.payload.readUInt32BE(at + 4)]);
      return { id: x.payload.readUInt32BE(0), d };
    };
    const all = decode(await c.structured({ type: Cmd.BLOCK_STATUS, offset: 0, length: SIZE }));
    assert.equal(all.id, 1);
    const HZ = State.HOLE | State.ZERO;
    assert.deepEqual(all.d, [
      [CHUNK, HZ],
      [3 * CHUNK, 0],
      [2 * CHUNK, HZ],
      [3 * CHUNK + 8192, 0],
      [4096, HZ],
      [SIZE - (9 * CHUNK + 8192 + 4096), 0],
    ]);
    const one = decode(await c.structured({ type: Cmd.BLOCK_STATUS, offset: 512, length: 8 * CHUNK, flags: CmdFlag.REQ_ONE }));
    assert.deepEqual(one.d, [[CHUNK - 512, HZ]]);
    const mid = decode(await c.structured({ type: Cmd.BLOCK_STATUS, offset: 4 * CHUNK + 1, length: 100 }));
    assert.deepEqual(mid.d, [[100, HZ]]);
    // Out of range: an ERROR chunk.
    const bad = await c.structured({ type: Cmd.BLOCK_STATUS, offset: SIZE - 1, length: 2 });
    assert.deepEqual(bad.map((x) => [x.type, x.flags, x.payload.readUInt32BE(0)]), [[ReplyType.ERROR, ReplyFlag.DONE, Err.EINVAL]]);
  });

  it('BLOCK_STATUS on a device without extents reports data throughout', async function () {
    const c = await sr(holeyDevice(data, HOLES, { extents: false }));
    const [x] = await c.structured({ type: Cmd.BLOCK_STATUS, offset: 0, length: SIZE });
    assert.equal(x!.payload.length, 12);
    assert.deepEqual([x!.payload.readUInt32BE(4), x!.payload.readUInt32BE(8)], [SIZE, 0]);
  });

  it('BLOCK_STATUS without a meta context is EINVAL (an ERROR chunk with a message); other commands keep simple replies', async function () {
    const c = await sr(holeyDevice(data, HOLES), false);
    const chunks = await c.structured({ type: Cmd.BLOCK_STATUS, offset: 0, length: 4096 });
    assert.deepEqual(chunks.map((x) => [x.type, x.flags, x.payload.readUInt32BE(0)]), [[ReplyType.ERROR, ReplyFlag.DONE, Err.EINVAL]]);
    const msgLen = chunks[0]!.payload.readUInt16BE(4);
    assert.equal(chunks[0]!.payload.length, 6 + msgLen);
    assert.match(chunks[0]!.payload.toString('utf8', 6), /base:allocation/);
    assert.equal((await c.request({ type: Cmd.FLUSH, offset: 0, length: 0 })).error, 0);
    assert.equal((await c.request({ type: Cmd.WRITE, offset: 0, length: 4, data: Buffer.alloc(4) })).error, Err.EPERM);
    // A READ with a bad flag is still answered structured.
    const df = await c.structured({ type: Cmd.READ, offset: 0, length: 512, flags: CmdFlag.DF });
    assert.deepEqual(df.map((x) => [x.type, x.payload.readUInt32BE(0)]), [[ReplyType.ERROR, Err.EINVAL]]);
  });

  it('a device read error becomes a structured ERROR chunk with a message, reported through onError', async function () {
    const c = await sr(failingDevice(SIZE));
    const chunks = await c.structured({ type: Cmd.READ, offset: 4096, length: 512, cookie: 77n });
    assert.deepEqual(chunks.map((x) => [x.type, x.flags, x.cookie, x.payload.readUInt32BE(0)]), [[ReplyType.ERROR, ReplyFlag.DONE, 77n, Err.EIO]]);
    assert.match(chunks[0]!.payload.toString('utf8', 6, 6 + chunks[0]!.payload.readUInt16BE(4)), /read of 512 bytes at offset 4096/);
    assert.equal(h!.errors.length, 1);
    assert.equal(h!.errors[0]!.kind, 'device');
    h!.errors.length = 0;
  });

  describe('with real clients', function () {
    let tmp: TmpDir;
    before(async function () {
      tmp = await tmpDir('nbd-holes');
    });
    after(async function () {
      await tmp.cleanup();
    });

    it('nbdinfo --map shows the holes at the right offsets; --json still works', async function () {
      requireTool(this, 'nbdinfo');
      h = await startServer({ '': { device: holeyDevice(data, HOLES), description: 'holey' } });
      const uri = nbdUri(h.address);
      const map = JSON.parse((await run('nbdinfo', ['--map', '--json', uri])).stdout) as Array<{ offset: number; length: number; type: number }>;
      assert.deepEqual(
        map.map((e) => [e.offset, e.length, e.type]),
        [
          [0, CHUNK, 3],
          [CHUNK, 3 * CHUNK, 0],
          [4 * CHUNK, 2 * CHUNK, 3],
          [6 * CHUNK, 3 * CHUNK + 8192, 0],
          [9 * CHUNK + 8192, 4096, 3],
          [9 * CHUNK + 8192 + 4096, SIZE - (9 * CHUNK + 8192 + 4096), 0],
        ],
      );
      const text = (await run('nbdinfo', ['--map', uri])).stdout;
      assert.match(text, new RegExp(`^\\s*${4 * CHUNK}\\s+${2 * CHUNK}\\s+3\\s+hole,zero`, 'm'));
      const info = JSON.parse((await run('nbdinfo', ['--json', uri])).stdout) as { protocol: string; exports: Array<Record<string, unknown>> };
      assert.equal(info.exports[0]!['export-size'], SIZE);
      assert.equal(info.exports[0]!['description'], 'holey');
      assert.deepEqual(h.errors, []);
    });

    it('nbdcopy copies a holey export byte for byte and reads only its data', async function () {
      requireTool(this, 'nbdcopy');
      const dev = holeyDevice(data, HOLES);
      h = await startServer({ '': { device: dev } });
      const out = path.join(tmp.path, 'copy.img');
      await run('nbdcopy', [nbdUri(h.address), out]);
      const want = Buffer.from(data);
      for (const x of HOLES) want.fill(0, x.offset, x.offset + x.length);
      assert.ok((await readFile(out)).equals(want), 'copied bytes differ from the export');
      const holeBytes = HOLES.reduce((n, x) => n + x.length, 0);
      assert.ok(dev.extentCalls > 0, 'nbdcopy never asked for block status');
      assert.ok(dev.bytesRead <= SIZE - holeBytes, `read ${dev.bytesRead} bytes of ${SIZE} (${holeBytes} in holes)`);
      assert.deepEqual(h.errors, []);
    });
  });
});
