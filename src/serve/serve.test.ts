/**
 * `chunkyard serve` end to end with real clients and servers nobody here
 * wrote: nbdinfo, nbdcopy, nbdfuse + a loop mount (against umoci unpack),
 * five redis-server processes for the shared tier (one killed mid-read, all
 * down), and the read path of `cat` (only the chunks on the path fetched).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Ext4Reader } from '../ext4/reader.js';
import { loadKeys } from '../keys/keys.js';
import { utf8ToByteString } from '../layers/bytes.js';
import { openStore } from '../store/open.js';
import { compareTrees, formatDiffs } from '../testing/compare-trees.js';
import { requireRedisServers, type RedisTestServers } from '../testing/redis-servers.js';
import { startServe, type ServeProcess } from '../testing/serve-process.js';
import { repoRoot, requireCorpus, requireRoot, requireTool, run, skipWith, tmpDir, umociUnpack, withLoopMount, type TmpDir } from '../testing/tools.js';
import { openPublished } from './published.js';

const bin = path.join(repoRoot(), 'bin', 'chunkyard.js');
const cli = (args: readonly string[]) => run(process.execPath, [bin, ...args]);

describe('serve end to end (corpus base image)', function () {
  this.timeout(600_000);
  let tmp: TmpDir;
  let corpus: string;
  let store: string;
  let keyFile: string;
  let image: string; // `extract` of the published image
  let chunks: number;
  const servers: ServeProcess[] = [];

  const common = (): string[] => ['base', '--store', store, '--key-file', keyFile];
  const serve = async (args: readonly string[], statsName?: string): Promise<ServeProcess> => {
    const statsJson = statsName !== undefined ? path.join(tmp.path, `${statsName}.json`) : undefined;
    const sock = path.join(tmp.path, `${statsName ?? 'nbd'}-${servers.length}.sock`);
    const s = await startServe([...common(), '--listen', `unix:${sock}`, ...args], statsJson !== undefined ? { statsJson } : {});
    servers.push(s);
    return s;
  };
  const stopped = async (s: ServeProcess): Promise<void> => {
    const code = await s.stop();
    assert.equal(code, 0, `serve exited ${code}: ${s.stderr()}`);
  };

  before(async function () {
    corpus = requireCorpus(this);
    tmp = await tmpDir('serve-e2e');
    store = path.join(tmp.path, 'store');
    keyFile = path.join(tmp.path, 'key.json');
    image = path.join(tmp.path, 'base.ext4');
    await cli(['keygen', '-o', keyFile]);
    await cli(['convert', `oci:${corpus}:base`, '--store', store, '--key-file', keyFile, '--tag', 'base']);
    await cli(['extract', 'base', '--store', store, '--key-file', keyFile, '-o', image]);
    chunks = Math.ceil((await stat(image)).size / (512 * 1024));
  });

  afterEach(async function () {
    while (servers.length > 0) await servers.pop()!.stop();
  });

  after(async function () {
    await tmp?.cleanup();
  });

  it('nbdinfo sees the image size, read-only; nbdcopy equals extract byte for byte', async function () {
    requireTool(this, 'nbdinfo', 'nbdcopy');
    const s = await serve(['--cache-dir', path.join(tmp.path, 'cache-a')], 'copy');
    const info = JSON.parse((await run('nbdinfo', ['--json', s.info.uri])).stdout) as { exports: { 'export-size': number; is_read_only: boolean }[] };
    assert.equal(info.exports[0]!['export-size'], (await stat(image)).size);
    assert.equal(info.exports[0]!.is_read_only, true);
    const out = path.join(tmp.path, 'copy.img');
    await run('nbdcopy', [s.info.uri, out]);
    assert.ok((await readFile(out)).equals(await readFile(image)), 'nbdcopy output differs from extract');
    // A second copy comes from the disk cache, not the origin.
    await run('nbdcopy', [s.info.uri, out]);
    const st = await s.stats();
    assert.equal(st.tiers.origin.hits, chunks, 'each chunk fetched from the origin once');
    assert.equal(st.reads.errors, 0);
    await stopped(s);
  });

  it('--writable: writes land in a private overlay, reads see them, the published image is untouched', async function () {
    requireTool(this, 'nbdinfo', 'nbdcopy');
    const s = await serve(['--no-cache', '--writable']);
    const info = JSON.parse((await run('nbdinfo', ['--json', s.info.uri])).stdout) as { exports: { is_read_only: boolean }[] };
    assert.equal(info.exports[0]!.is_read_only, false);
    const size = (await stat(image)).size;
    const mine = Buffer.alloc(size);
    for (let off = 0; off < size; off += 1 << 20) mine.write(`block at ${off}`, off); // sparse-ish, distinct
    const minePath = path.join(tmp.path, 'mine.img');
    await writeFile(minePath, mine);
    // --synchronous: libnbd 1.14's aio loop in nbdcopy once failed a large write here with
    // "nbd_aio_notify_write: external event 1 is invalid in state READY" (a client-side state error).
    await run('nbdcopy', ['--synchronous', minePath, s.info.uri]);
    const back = path.join(tmp.path, 'back.img');
    await run('nbdcopy', [s.info.uri, back]);
    assert.ok((await readFile(back)).equals(mine), 'read back differs from what was written');
    await stopped(s);
    const again = path.join(tmp.path, 'again.ext4');
    await cli(['extract', 'base', '--store', store, '--key-file', keyFile, '-o', again]);
    assert.ok((await readFile(again)).equals(await readFile(image)), 'the published image changed');
  });

  it('runs with glibc malloc tunables in a child that stops when the CLI process dies, even by SIGKILL', async function () {
    if (process.platform !== 'linux') this.skip();
    const s = await serve(['--no-cache']);
    const parent = s.child.pid!;
    const kids = (await run('pgrep', ['-P', String(parent)], { allowFail: true })).stdout.trim().split('\n').filter((x) => x !== '');
    assert.equal(kids.length, 1, `one serving child of ${parent}: ${kids.join(',')}`);
    const environ = (await readFile(`/proc/${kids[0]}/environ`)).toString();
    assert.match(environ, /GLIBC_TUNABLES=glibc\.malloc\.mmap_threshold=/);
    const sock = new URL(s.info.uri).searchParams.get('socket')!;
    assert.ok(existsSync(sock));
    s.child.kill('SIGKILL');
    let gone = false;
    for (let i = 0; i < 300 && !gone; i++) {
      await new Promise((r) => setTimeout(r, 100));
      gone = !existsSync(`/proc/${kids[0]}`) && !existsSync(sock);
    }
    assert.ok(gone, 'the serving child stopped and removed its socket');
  });

  it('nbdfuse + a read-only loop mount holds the tree umoci unpacks from the source image', async function () {
    requireTool(this, 'nbdfuse', 'fusermount3', 'umoci');
    requireRoot(this, 'loop mount of the FUSE file');
    if (!existsSync('/dev/fuse')) skipWith(this, 'needs nbdfuse with /dev/fuse (missing)');
    const s = await serve(['--no-cache']);
    const mnt = path.join(tmp.path, 'fuse');
    await mkdir(mnt, { recursive: true });
    const pidFile = path.join(tmp.path, 'nbdfuse.pid');
    const fuse = spawn('nbdfuse', ['-r', '-P', pidFile, mnt, s.info.uri], { stdio: ['ignore', 'ignore', 'pipe'] });
    let fuseErr = '';
    fuse.stderr.on('data', (b: Buffer) => (fuseErr += b.toString()));
    const fuseExited = new Promise((resolve) => fuse.on('close', resolve));
    const u = await umociUnpack(this, corpus, 'base');
    try {
      for (let i = 0; i < 600 && !existsSync(pidFile); i++) {
        if (fuse.exitCode !== null) throw new Error(`nbdfuse exited with ${fuse.exitCode}: ${fuseErr}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(existsSync(pidFile), `nbdfuse did not come up: ${fuseErr}`);
      await withLoopMount(this, path.join(mnt, 'nbd'), async (dir) => {
        const diffs = await compareTrees(u.rootfs, dir, { ignore: ['lost+found'] });
        assert.deepEqual(diffs, [], formatDiffs(diffs));
      });
    } finally {
      await run('fusermount3', ['-u', mnt], { allowFail: true });
      if (fuse.exitCode === null) {
        const t = setTimeout(() => fuse.kill('SIGKILL'), 30_000);
        await fuseExited;
        clearTimeout(t);
      }
      await u.cleanup();
    }
    await stopped(s);
  });

  it('cat of one file fetches only the chunks holding it and the metadata on its path', async function () {
    requireTool(this, 'debugfs');
    const file = '/etc/debian_version';
    // What must be read, from debugfs on the extracted image: superblock and group
    // descriptors, the inode-table block of every inode on the path, the blocks of
    // the directories passed through and of the file.
    const blocks = new Set<number>([0, 1]);
    const debugfs = async (req: string): Promise<string> => (await run('debugfs', ['-R', req, image])).stdout;
    for (const p of ['/', '/etc', file]) {
      const ino = /(\d+)/.exec(await debugfs(`stat ${p}`).then((s) => /Inode: (\d+)/.exec(s)?.[1] ?? ''))?.[1];
      assert.ok(ino, `debugfs stat ${p}`);
      const at = /located at block (\d+)/.exec(await debugfs(`imap <${ino}>`));
      assert.ok(at, `debugfs imap <${ino}>`);
      blocks.add(Number(at[1]));
      for (const b of (await debugfs(`blocks ${p}`)).trim().split(/\s+/).filter((x) => x !== '')) blocks.add(Number(b));
    }
    const expected = [...new Set([...blocks].map((b) => Math.floor((b * 4096) / (512 * 1024))))].sort((a, b) => a - b);

    // Library: the exact set, from the trace of first reads.
    const keys = await loadKeys({ file: keyFile });
    const img = await openPublished({ store: await openStore(store), ownsStore: true, ref: 'base', keys });
    try {
      img.view.recordTrace();
      const reader = await Ext4Reader.open(img.view);
      const ino = await reader.lookup(utf8ToByteString(file));
      const parts: Buffer[] = [];
      for await (const b of reader.openFile(ino)) parts.push(b as Buffer);
      assert.equal(Buffer.concat(parts).toString(), (await debugfs(`cat ${file}`)));
      assert.deepEqual([...img.view.trace()].sort((a, b) => a - b), expected);
    } finally {
      await img.close();
    }

    // CLI: the same count in --stats-json, out of the whole image.
    const statsFile = path.join(tmp.path, 'cat-stats.json');
    const r = await cli(['cat', ...common(), file, '--no-cache', '--stats-json', statsFile]);
    assert.equal(r.stdout, await debugfs(`cat ${file}`));
    const st = JSON.parse(await readFile(statsFile, 'utf8')) as { tiers: { origin: { hits: number } }; chunks: { total: number } };
    assert.equal(st.tiers.origin.hits, expected.length);
    assert.equal(st.chunks.total, chunks);
    assert.ok(expected.length < chunks / 10, `fetched ${expected.length} of ${chunks}`);
  });

  it('--record-trace, then --prefetch warms those chunks before they are read', async function () {
    requireTool(this, 'nbdcopy');
    const trace = path.join(tmp.path, 'trace.json');
    const a = await serve(['--cache-dir', path.join(tmp.path, 'cache-t1'), '--record-trace', trace], 'trace-a');
    // nbdinfo --json reads the first sectors (to name the content): chunk 0 only.
    await run('nbdinfo', ['--json', a.info.uri]);
    await stopped(a);
    const recorded = JSON.parse(await readFile(trace, 'utf8')) as { indexes: number[] };
    const order = recorded.indexes;
    assert.ok(Array.isArray(order) && order.length >= 1 && order[0] === 0, `trace: ${JSON.stringify(recorded)}`);

    const b = await serve(['--cache-dir', path.join(tmp.path, 'cache-t2'), '--prefetch', trace], 'trace-b');
    let st = await b.stats();
    for (let i = 0; i < 100 && (st.prefetch?.done ?? 0) < order.length; i++) {
      await new Promise((r) => setTimeout(r, 100));
      st = await b.stats();
    }
    assert.equal(st.prefetch?.warmed, order.length, JSON.stringify(st.prefetch));
    const fetched = st.tiers.origin.hits;
    await run('nbdinfo', ['--json', b.info.uri]);
    st = await b.stats();
    assert.equal(st.tiers.origin.hits, fetched, 'the traced chunks were already local');
    await stopped(b);
  });

  describe('shared tier on 5 redis-server processes', function () {
    let redis: RedisTestServers;

    before(async function () {
      requireTool(this, 'nbdcopy');
      redis = await requireRedisServers(this, { count: 5, maxmemory: '128mb' });
    });

    after(async function () {
      await redis?.stopAll();
    });

    it('fills the tier; one node killed mid-read: no failed read and no origin fetch; all down: the origin serves', async function () {
      const shared = ['--no-cache', '--memory-chunks', '0', '--shared-cache', redis.urls.join(',')];
      const out = path.join(tmp.path, 'shared.img');

      // Warm: one request at a time, so every write-back gets its turn.
      const warm = await serve(shared, 'warm');
      await run('nbdcopy', ['--connections=1', '--requests=1', warm.info.uri, out]);
      await stopped(warm);
      const warmStats = JSON.parse(await readFile(path.join(tmp.path, 'warm.json'), 'utf8')) as { tiers: { shared: { fills: { done: number } } } };
      assert.equal(warmStats.tiers.shared.fills.done, chunks, 'every chunk written back to the shared tier');

      // Read again while a node dies.
      const s = await serve(shared, 'kill');
      const copy = run('nbdcopy', ['--connections=1', '--requests=2', s.info.uri, out]);
      let killed = false;
      for (let i = 0; i < 600 && !killed; i++) {
        const st = await s.stats();
        if (st.reads.bytes > 16 * 1024 * 1024) {
          await redis.kill(2);
          killed = true;
        }
      }
      await copy;
      assert.ok(killed, 'the node was killed during the copy');
      assert.ok((await readFile(out)).equals(await readFile(image)), 'copy differs from extract');
      const st = await s.stats();
      assert.equal(st.reads.errors, 0);
      assert.equal(st.tiers.origin.requests, 0, `origin asked while the tier held every chunk: ${JSON.stringify(st.tiers)}`);
      assert.equal(st.tiers['shared']!.hits, chunks);
      await stopped(s);

      // Every node down: the origin answers.
      for (let i = 0; i < 5; i++) if (redis.running(i)) await redis.kill(i);
      const d = await serve(shared, 'down');
      await run('nbdcopy', [d.info.uri, out]);
      assert.ok((await readFile(out)).equals(await readFile(image)), 'copy differs from extract with the tier down');
      const down = await d.stats();
      assert.equal(down.reads.errors, 0);
      assert.equal(down.tiers.origin.hits, chunks);
      await stopped(d);
    });
  });
});
