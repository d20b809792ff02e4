import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { corpusDir, corpusPath, haveTool, repoRoot, requireTool, run, tmpDir, withLoopMount } from './tools.js';

describe('testing/tools', function () {
  it('finds tools on PATH and reports missing ones', async function () {
    assert.equal(await haveTool('sh'), true);
    assert.equal(await haveTool('chunkyard-no-such-tool'), false);
  });

  it('repoRoot holds package.json; the corpus resolves beside it', function () {
    assert.ok(existsSync(path.join(repoRoot(), 'package.json')));
    assert.equal(corpusPath(), path.resolve(repoRoot(), '../shared/corpus/oci'));
    const c = corpusDir();
    if (c !== undefined) assert.ok(existsSync(path.join(c, 'index.json')));
  });

  it('run collects output, feeds input and keeps binary stdout', async function () {
    assert.equal((await run('cat', [], { input: 'abc' })).stdout, 'abc');
    const r = await run('sh', ['-c', 'printf "\\377\\000"; exit 4'], { allowFail: true, stdoutBuffer: true });
    assert.equal(r.code, 4);
    assert.deepEqual(r.stdout, Buffer.from([0xff, 0]));
    assert.equal((await run('sh', ['-c', 'kill -9 $$'], { allowFail: true })).code, 128 + 9);
  });

  it('run rejects with the exit code and stderr, and names a missing command', async function () {
    await assert.rejects(run('sh', ['-c', 'echo oops >&2; exit 3']), /^CommandError: sh -c 'echo oops >&2; exit 3' exited with 3: oops$/m);
    await assert.rejects(run('chunkyard-no-such-tool', []), /chunkyard-no-such-tool: command not found/);
  });

  it('tmpDir makes a fresh dir under os.tmpdir() and cleanup removes it', async function () {
    const t = await tmpDir('tools/test');
    assert.ok(t.path.startsWith(os.tmpdir() + path.sep));
    await writeFile(path.join(t.path, 'f'), 'x');
    await t.cleanup();
    assert.equal(existsSync(t.path), false);
    await t.cleanup(); // idempotent
  });

  describe('withLoopMount', function () {
    before(function () {
      requireTool(this, 'mke2fs');
    });

    it('mounts read-only, then unmounts and removes the mount point', async function () {
      const t = await tmpDir('loop');
      try {
        const img = path.join(t.path, 'fs.ext4');
        await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'toolstest', img, '4M']);
        let seen = '';
        const got = await withLoopMount(this, img, async (dir) => {
          seen = dir;
          assert.ok(existsSync(path.join(dir, 'lost+found')));
          await assert.rejects(writeFile(path.join(dir, 'x'), 'x'), { code: 'EROFS' });
          return 42;
        });
        assert.equal(got, 42);
        assert.equal((await readFile('/proc/mounts', 'utf8')).includes(` ${seen} `), false);
        assert.equal(existsSync(seen), false);
      } finally {
        await t.cleanup();
      }
    });

    it('unmounts when the callback throws, and fails on a non-filesystem', async function () {
      const t = await tmpDir('loop');
      try {
        const img = path.join(t.path, 'fs.ext4');
        await run('mke2fs', ['-q', '-F', '-t', 'ext4', img, '4M']);
        let seen = '';
        await assert.rejects(
          withLoopMount(this, img, async (dir) => {
            seen = dir;
            throw new Error('boom');
          }),
          /boom/,
        );
        assert.equal((await readFile('/proc/mounts', 'utf8')).includes(` ${seen} `), false);
        const zeros = path.join(t.path, 'zeros.img');
        await writeFile(zeros, Buffer.alloc(1 << 20));
        await assert.rejects(withLoopMount(this, zeros, async () => 1), /mount -o loop,ro .*zeros\.img failed/);
      } finally {
        await t.cleanup();
      }
    });
  });
});
