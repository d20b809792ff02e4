/**
 * Real processes against one file store: two converts of images that share a
 * base, at the same time; and a convert killed with SIGKILL mid-upload, then
 * run again. Nothing partial may ever be visible under a final name.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { generateKeys, openStore, verifyImage, writeKeyFile, type Keys } from '../index.js';
import { chunkName } from '../chunks/seal.js';
import { parseManifest } from '../manifest/schema.js';
import { parseDigest } from '../source/digest.js';
import { assertChunksNamedByContent, chunkFiles, CliLog, storeEntries } from '../testing/store-files.js';
import { repoRoot, requireCorpus, tmpDir, type TmpDir } from '../testing/tools.js';

interface Child {
  readonly pid: number;
  kill(signal: NodeJS.Signals): void;
  /** Whether it has exited. */
  done(): boolean;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

/** `node bin/chunkyard.js ARGS` as a child process (the installed CLI, not in-process). */
function chunkyard(args: readonly string[], env: NodeJS.ProcessEnv): Child {
  const child = spawn(process.execPath, [path.join(repoRoot(), 'bin', 'chunkyard.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  let finished = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      finished = true;
      resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
  });
  return { pid: child.pid!, kill: (s) => child.kill(s), done: () => finished, exited };
}

/** Distinct chunk names a stored manifest refers to. */
async function namesOf(storeDir: string, digest: string): Promise<Set<string>> {
  const store = await openStore(storeDir);
  const bytes = await store.getManifest(parseDigest(digest, 'manifest digest'));
  assert.ok(bytes, `manifest ${digest} is stored`);
  return new Set(parseManifest(bytes).chunks.filter((c): c is NonNullable<typeof c> => c !== null));
}

describe('convert: concurrent and killed writers on one file store (child processes)', function () {
  let corpus: string;
  let dir: TmpDir;
  let keyFile: string;
  let keys: Keys;
  let env: NodeJS.ProcessEnv;
  let cli: CliLog;
  const src = (tag: string): string => `oci:${corpus}:${tag}`;

  before(async function () {
    corpus = requireCorpus(this);
    dir = await tmpDir('convert-procs');
    keys = generateKeys();
    keyFile = path.join(dir.path, 'key.json');
    await writeKeyFile(keyFile, keys);
    env = { ...process.env, HOME: path.join(dir.path, 'home'), CHUNKYARD_KEY: '', CHUNKYARD_STORE: '' };
    cli = new CliLog({ HOME: env['HOME'] });
  });
  after(async () => dir?.cleanup());

  it('two converts sharing a base, at once: both succeed and verify, the store holds the union of their chunks', async function () {
    const store = path.join(dir.path, 'shared');
    const a = chunkyard(['convert', src('py'), '--store', store, '--key-file', keyFile, '--tag', 'py'], env);
    const b = chunkyard(['convert', src('py-app'), '--store', store, '--key-file', keyFile, '--tag', 'py-app'], env);
    const [ra, rb] = await Promise.all([a.exited, b.exited]);
    for (const [tag, r] of [['py', ra], ['py-app', rb]] as const) cli.runs.push({ argv: ['convert', tag], code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr });
    assert.equal(ra.code, 0, `py: ${ra.stderr}`);
    assert.equal(rb.code, 0, `py-app: ${rb.stderr}`);
    const da = ra.stdout.trim();
    const db = rb.stdout.trim();
    assert.match(da, /^sha256:[0-9a-f]{64}$/);
    assert.match(db, /^sha256:[0-9a-f]{64}$/);
    const s = await openStore(store);
    for (const [tag, d] of [['py', da], ['py-app', db]] as const) {
      assert.equal(await s.getTag(tag), d);
      const r = await verifyImage(s, tag, { keys });
      assert.deepEqual(r.problems, [], tag);
      assert.ok(r.ok && r.decrypted && (r.filesystemInodes ?? 0) > 1000, tag);
    }
    const union = new Set([...(await namesOf(store, da)), ...(await namesOf(store, db))]);
    const files = await assertChunksNamedByContent(store);
    assert.equal(files.final.length, union.size, 'exactly the chunks the two manifests name');
    assert.deepEqual(files.other, [], 'no temp files left');
    // Both raced to upload base's chunks; each said how many it wrote itself.
    process.stdout.write(`      py + py-app at once: ${union.size} distinct chunks stored\n`);
  });

  it('a convert killed with SIGKILL mid-upload leaves no manifest, tag or partial chunk; run again, it completes and verifies', async function () {
    const store = path.join(dir.path, 'killed');
    const child = chunkyard(['convert', src('base'), '--store', store, '--key-file', keyFile, '--tag', 'base'], env);
    // Kill once some chunks are stored, well before the last of base's ~270. Meanwhile,
    // every chunk that appears under its final name is read at once: it must be whole.
    const checked = new Set<string>();
    while (!child.done()) {
      for (const { id, file } of (await chunkFiles(store)).final) {
        if (checked.has(id)) continue;
        assert.equal(chunkName(await readFile(file)), id, `${file}, read while the convert runs, does not hash to its name`);
        checked.add(id);
      }
      if (checked.size >= 40) break;
      await sleep(10);
    }
    const seen = checked.size;
    assert.equal(child.done(), false, `the convert finished before it could be killed (${seen} chunks seen)`);
    child.kill('SIGKILL');
    const killed = await child.exited;
    cli.runs.push({ argv: ['convert', 'base', '(killed)'], code: -1, stdout: killed.stdout, stderr: killed.stderr });
    assert.equal(killed.signal, 'SIGKILL');
    assert.equal(killed.stdout, '', 'no digest printed');
    assert.deepEqual(await storeEntries(store, 'manifests/sha256'), [], 'no manifest from the killed run');
    assert.deepEqual(await storeEntries(store, 'tags'), [], 'no tag from the killed run');
    const left = await assertChunksNamedByContent(store);
    assert.ok(left.final.length >= 40);

    // Again, in-process this time, to read its --json.
    const again = await cli.ok(['convert', src('base'), '--store', store, '--key-file', keyFile, '--tag', 'base', '--json']);
    const r = JSON.parse(again.stdout) as { manifest: string; chunks: { total: number; zero: number; existing: number; duplicate: number; new: number } };
    assert.equal(r.chunks.existing, left.final.length, 'the killed run\'s chunks are reused');
    assert.equal(r.chunks.existing + r.chunks.new + r.chunks.duplicate + r.chunks.zero, r.chunks.total);
    const s = await openStore(store);
    const v = await verifyImage(s, 'base', { keys });
    assert.deepEqual(v.problems, []);
    assert.ok(v.ok && v.decrypted);
    const after = await assertChunksNamedByContent(store);
    assert.equal(after.final.length, (await namesOf(store, r.manifest)).size);
    process.stdout.write(
      `      killed after ${left.final.length} chunks (${left.other.length} temp files left by the kill); rerun: ${r.chunks.existing} reused, ${r.chunks.new} uploaded\n`,
    );
  });

  it('no output of these runs carries the manifest key or the salt secret', function () {
    assert.ok(cli.assertNoKeyLeaked([keys]) >= 8);
  });
});
