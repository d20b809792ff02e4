/**
 * Test-only helpers for looking at a file store from the outside (the way a
 * tamperer or a crash would see it) and for running the CLI with every
 * output kept, so a suite can check at the end that no key ever leaked.
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { chunkName } from '../chunks/seal.js';
import { main } from '../cli/main.js';
import type { Keys } from '../keys/keys.js';
import { captureIO } from './capture.js';

export { sha256File } from './streams.js';

export interface ChunkFiles {
  /** Files under a final name `chunks/xx/<64 hex>`. */
  readonly final: readonly { readonly id: string; readonly file: string }[];
  /** Anything else under chunks/ (a killed writer's `.name.random.tmp`). */
  readonly other: readonly string[];
}

/** Every file under `<store>/chunks/`, sorted into final names and the rest. */
export async function chunkFiles(storeDir: string): Promise<ChunkFiles> {
  const root = path.join(storeDir, 'chunks');
  const final: { id: string; file: string }[] = [];
  const other: string[] = [];
  let shards: string[];
  try {
    shards = await readdir(root);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { final, other };
    throw e;
  }
  for (const shard of shards.sort()) {
    for (const name of (await readdir(path.join(root, shard))).sort()) {
      const file = path.join(root, shard, name);
      if (/^[0-9a-f]{2}$/.test(shard) && /^[0-9a-f]{64}$/.test(name) && name.startsWith(shard)) final.push({ id: name, file });
      else other.push(file);
    }
  }
  return { final, other };
}

/** Every chunk under a final name hashes (BLAKE3) to that name: no partial or foreign object is visible. */
export async function assertChunksNamedByContent(storeDir: string): Promise<ChunkFiles> {
  const files = await chunkFiles(storeDir);
  for (const { id, file } of files.final) assert.equal(chunkName(await readFile(file)), id, `${file} does not hash to its name`);
  return files;
}

/** Files under a store subdirectory (`manifests/sha256`, `tags`), or [] if it does not exist. */
export async function storeEntries(storeDir: string, sub: string): Promise<string[]> {
  try {
    return (await readdir(path.join(storeDir, sub))).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

export interface CliRun {
  readonly argv: readonly string[];
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the CLI in-process, keeping every run for `assertNoKeyLeaked`. */
export class CliLog {
  readonly runs: CliRun[] = [];
  constructor(private readonly env: Readonly<Record<string, string | undefined>> = {}) {}

  async run(argv: readonly string[], env?: Readonly<Record<string, string | undefined>>): Promise<CliRun> {
    const c = captureIO({ env: env ?? this.env });
    const code = await main(argv, c.io);
    const r = { argv, code, stdout: c.stdoutText(), stderr: c.stderr() };
    this.runs.push(r);
    return r;
  }

  /** Runs and requires exit 0 (the assertion message shows stderr). */
  async ok(argv: readonly string[], env?: Readonly<Record<string, string | undefined>>): Promise<CliRun> {
    const r = await this.run(argv, env);
    assert.equal(r.code, 0, `chunkyard ${argv.join(' ')} exited ${r.code}: ${r.stderr}`);
    return r;
  }

  /** No secret of `keys`, in base64, base64url or hex, appears in any output so far. Returns how many outputs were searched. */
  assertNoKeyLeaked(keys: readonly Keys[]): number {
    const secrets: string[] = [];
    for (const k of keys) {
      for (const b of [k.manifestKey, k.salt.secret]) secrets.push(b.toString('base64'), b.toString('base64url'), b.toString('hex'));
    }
    let searched = 0;
    for (const r of this.runs) {
      for (const [what, text] of [['stdout', r.stdout], ['stderr', r.stderr]] as const) {
        searched++;
        for (const s of secrets) assert.ok(!text.includes(s), `a key appears in the ${what} of chunkyard ${r.argv.join(' ')}`);
      }
    }
    return searched;
  }
}
