import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from '../errors.js';
import { sha256Digest } from '../source/digest.js';
import { knownChunk, nameOf } from '../testing/chunk-data.js';
import { run, tmpDir, type TmpDir } from '../testing/tools.js';
import { runStoreConformance } from './conformance.js';
import { FileStore } from './file.js';
import type { ChunkId } from './ids.js';
import { findMissing } from './missing.js';
import { openStore } from './open.js';
import { type ChunkPage, countsSince } from './store.js';

runStoreConformance('file', async () => {
  const dir = await tmpDir('file-store');
  const store = await openStore(`file://${dir.path}/store`);
  return { store, cleanup: dir.cleanup };
});

const WRITER = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'testing', 'store-writer.js');

/** Every file under chunks/: final names hold exactly the bytes they name; returns the final ids and the temp names. */
async function auditChunks(root: string): Promise<{ ids: string[]; temps: string[] }> {
  const ids: string[] = [];
  const temps: string[] = [];
  let shards: string[] = [];
  try {
    shards = await readdir(path.join(root, 'chunks'));
  } catch {
    return { ids, temps };
  }
  for (const shard of shards) {
    for (const name of await readdir(path.join(root, 'chunks', shard))) {
      if (name.startsWith('.')) {
        assert.match(name, /^\.[0-9a-f]{64}\.[0-9a-f]+\.tmp$/, `stray file ${shard}/${name}`);
        temps.push(name);
        continue;
      }
      const data = await readFile(path.join(root, 'chunks', shard, name));
      assert.equal(nameOf(data), name, `chunks/${shard}/${name} holds ${data.length} bytes that are not the chunk it names (partial?)`);
      assert.equal(name.slice(0, 2), shard);
      ids.push(name);
    }
  }
  return { ids: ids.sort(), temps };
}

describe('FileStore', function () {
  let tmp: TmpDir;
  beforeEach(async function () {
    tmp = await tmpDir('file-store');
  });
  afterEach(async function () {
    await tmp.cleanup();
  });

  it('lays objects out as chunks/<2 hex>/<id>, manifests/sha256/<hex>, tags/<name>', async function () {
    const store = await openStore(tmp.path);
    const c = knownChunk(1, 'layout', 4096);
    await store.put(c.id, c.data);
    const digest = await store.putManifest(Buffer.from('{}'));
    await store.setTag('latest', digest);
    assert.ok((await readFile(path.join(tmp.path, 'chunks', c.id.slice(0, 2), c.id))).equals(c.data));
    assert.equal(await readFile(path.join(tmp.path, 'manifests', 'sha256', digest.slice(7)), 'utf8'), '{}');
    assert.equal(await readFile(path.join(tmp.path, 'tags', 'latest'), 'utf8'), `${digest}\n`);
    assert.equal(store.url, `file://${tmp.path}`);
    assert.deepEqual(store.costModel, { kind: 'local' });
  });

  it('opens file:// URLs and plain paths, and refuses what is not a directory', async function () {
    const a = await openStore(`file://${tmp.path}/a`);
    const b = await openStore(path.join(tmp.path, 'a'));
    assert.equal(a.url, b.url);
    const c = knownChunk(0, 'open', 1024);
    await a.put(c.id, c.data);
    assert.equal(await b.has(c.id), true);
    await writeFile(path.join(tmp.path, 'file'), 'x');
    await assert.rejects(openStore(path.join(tmp.path, 'file')), UsageError);
    await assert.rejects(openStore('ftp://host/x'), (e: Error) => e instanceof UsageError && /file:\/\/DIR.*s3:\/\/BUCKET\/PREFIX/.test(e.message));
    await assert.rejects(openStore(tmp.path, { endpoint: 'http://127.0.0.1:1' }), UsageError);
  });

  it('reads a store that does not exist yet as empty, and creates it on the first write', async function () {
    const store = await FileStore.open(path.join(tmp.path, 'new', 'store'));
    const c = knownChunk(0, 'new', 1024);
    assert.equal(await store.get(c.id), undefined);
    assert.deepEqual(await findMissing(store, [c.id]), { missing: new Set([c.id]), requests: { head: 1, list: 0 }, strategy: 'head' });
    assert.equal(await store.put(c.id, c.data), 'uploaded');
    assert.ok((await stat(path.join(tmp.path, 'new', 'store', 'chunks'))).isDirectory());
  });

  it('makes its directories again when they are removed while it is open', async function () {
    const store = await FileStore.open(tmp.path);
    const a = knownChunk(0, 'gone', 1024);
    await store.put(a.id, a.data);
    await rm(path.join(tmp.path, 'chunks'), { recursive: true });
    assert.equal(await store.put(a.id, a.data), 'uploaded');
    assert.ok((await store.get(a.id))?.equals(a.data));
  });

  it('ignores temp files and strays when listing and reading, and removes stale temp files', async function () {
    const store = await FileStore.open(tmp.path);
    const c = knownChunk(0, 'temps', 1024);
    await store.put(c.id, c.data);
    const shardDir = path.join(tmp.path, 'chunks', c.id.slice(0, 2));
    const other = knownChunk(1, 'temps', 1024);
    const oldTemp = path.join(shardDir, `.${other.id}.0123456789abcdef.tmp`);
    const freshTemp = path.join(tmp.path, 'chunks', c.id.slice(0, 2), `.${c.id}.fedcba9876543210.tmp`);
    await writeFile(oldTemp, other.data.subarray(0, 10)); // what a killed writer leaves
    await writeFile(freshTemp, c.data.subarray(0, 10));
    await writeFile(path.join(shardDir, 'README'), 'stray');
    await mkdir(path.join(tmp.path, 'chunks', 'zz'));
    await mkdir(path.join(tmp.path, 'tags'), { recursive: true });
    await writeFile(path.join(tmp.path, 'tags', '.latest.00.tmp'), 'sha256:partial');
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
    await utimes(oldTemp, twoHoursAgo, twoHoursAgo);

    const listed: string[] = [];
    for await (const id of store.listChunks()) listed.push(id);
    assert.deepEqual(listed, [c.id]);
    assert.equal(await store.has(other.id), false);
    assert.equal(await store.get(other.id), undefined);
    const tags: unknown[] = [];
    for await (const t of store.listTags()) tags.push(t);
    assert.deepEqual(tags, []);

    assert.equal(await store.removeStaleTemps(), 1);
    const left = await readdir(shardDir);
    assert.ok(!left.includes(path.basename(oldTemp)));
    assert.ok(left.includes(path.basename(freshTemp)), 'a live writer’s temp file is kept');
    assert.equal(store.requestCounts().delete, 1);
  });

  it('lists one page per shard directory, reading none before startAfter', async function () {
    const store = await FileStore.open(tmp.path);
    const cs = Array.from({ length: 12 }, (_, i) => knownChunk(i, 'pages', 1024));
    for (const c of cs) await store.put(c.id, c.data);
    const byShard = new Map<string, string[]>();
    for (const id of cs.map((c) => c.id).sort()) byShard.set(id.slice(0, 2), [...(byShard.get(id.slice(0, 2)) ?? []), id]);
    const shards = [...byShard.keys()];
    assert.ok(shards.length >= 3, 'the chunks fall into several shards');

    const pagesFrom = async (startAfter?: ChunkId): Promise<{ pages: ChunkPage[]; lists: number }> => {
      const before = store.requestCounts();
      const pages: ChunkPage[] = [];
      for await (const p of store.listChunkPages(startAfter === undefined ? {} : { startAfter })) pages.push(p);
      return { pages, lists: countsSince(before, store.requestCounts()).list };
    };
    const all = await pagesFrom();
    assert.deepEqual(
      all.pages,
      shards.map((s, i) => ({ ids: byShard.get(s), more: i < shards.length - 1 })),
    );
    assert.equal(all.lists, 1 + shards.length, 'chunks/ and each shard, one readdir each');

    const first = byShard.get(shards[1]!)![0]! as ChunkId;
    const rest = await pagesFrom(first);
    assert.deepEqual(
      rest.pages.map((p) => p.ids),
      [byShard.get(shards[1]!)!.slice(1), ...shards.slice(2).map((s) => byShard.get(s))],
    );
    assert.equal(rest.lists, 1 + shards.length - 1, 'shards before startAfter are not read');
  });

  it('reports a corrupt manifest or tag instead of returning it', async function () {
    const store = await FileStore.open(tmp.path);
    const digest = await store.putManifest(Buffer.from('manifest'));
    await store.setTag('t', digest);
    await writeFile(path.join(tmp.path, 'manifests', 'sha256', digest.slice(7)), 'tampered');
    await assert.rejects(store.getManifest(digest), /corrupt/);
    await writeFile(path.join(tmp.path, 'tags', 't'), 'garbage');
    await assert.rejects(store.getTag('t'), /corrupt tag/);
    assert.equal(sha256Digest('manifest'), digest);
  });

  describe('several processes at once', function () {
    function writer(dir: string, from: number, to: number, maxBytes: number): ChildProcess {
      return spawn(process.execPath, [WRITER, dir, String(from), String(to), String(maxBytes)], { stdio: ['ignore', 'pipe', 'pipe'] });
    }

    /** SIGKILLs `child` once it has reported `n` uploads; resolves, after it is gone, with the ids it reported. */
    async function killAfterUploads(child: ChildProcess, n: number): Promise<string[]> {
      let stderr = '';
      child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
      const done: string[] = [];
      await new Promise<void>((resolve, reject) => {
        let buf = '';
        child.stdout?.on('data', (b: Buffer) => {
          buf += b.toString();
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            if (line.startsWith('put ') && done.length < n) {
              done.push(line.slice(4));
              if (done.length === n) child.kill('SIGKILL');
            }
          }
        });
        child.on('exit', (code, signal) => {
          if (signal === 'SIGKILL') resolve();
          else reject(new Error(`writer exited (${code ?? signal}) before it was killed: ${stderr}`));
        });
      });
      return done;
    }

    it('loses nothing when writers in several processes put the same and different chunks', async function () {
      const dir = path.join(tmp.path, 'store');
      const ranges: [number, number][] = [
        [0, 40],
        [20, 60],
        [40, 80],
        [0, 80],
      ];
      const results = await Promise.all(ranges.map(([from, to]) => run(process.execPath, [WRITER, dir, String(from), String(to)])));
      for (const r of results) assert.match(r.stdout, /^done /m);
      const audit = await auditChunks(dir);
      const expected = Array.from({ length: 80 }, (_, i) => knownChunk(i).id).sort();
      assert.deepEqual(audit.ids, expected);
      assert.deepEqual(audit.temps, []);
      const store = await FileStore.open(dir);
      const { missing } = await findMissing(store, expected);
      assert.equal(missing.size, 0);
    });

    it('leaves no partial object under a final name when a writer is SIGKILLed mid-upload, and a rerun completes', async function () {
      // Big chunks (up to 16 MiB) keep each write in flight long enough that a
      // kill often lands inside one; several rounds make it near certain that
      // a store writing in place would be caught with a partial object.
      const dir = path.join(tmp.path, 'store');
      const total = 24;
      const maxBytes = 16 * 1024 * 1024;
      const expected: string[] = Array.from({ length: total }, (_, i) => knownChunk(i, 'chunkyard', maxBytes).id).sort();
      for (let round = 1; round <= 4; round++) {
        const child = writer(dir, 0, total, maxBytes);
        const confirmed = await killAfterUploads(child, 2);
        const audit = await auditChunks(dir);
        assert.ok(audit.ids.length < total, `round ${round}: killed before it finished`);
        for (const id of confirmed) assert.ok(audit.ids.includes(id), `round ${round}: chunk ${id} confirmed before the kill is there`);
        const store = await FileStore.open(dir);
        const listed: string[] = [];
        for await (const id of store.listChunks()) listed.push(id);
        assert.deepEqual(listed, audit.ids, `round ${round}: the listing shows only whole chunks`);
        for (const id of audit.ids) assert.ok(expected.includes(id));
      }
      const survived = (await auditChunks(dir)).ids.length;
      const rerun = await run(process.execPath, [WRITER, dir, '0', String(total), String(maxBytes)]);
      const summary = JSON.parse(/^done (.*)$/m.exec(rerun.stdout)?.[1] ?? 'null') as { uploaded: number; skipped: number };
      assert.equal(summary.uploaded + summary.skipped, total);
      assert.equal(summary.skipped, survived, 'the rerun skips exactly what survived');
      assert.deepEqual((await auditChunks(dir)).ids, expected);
    });
  });
});
