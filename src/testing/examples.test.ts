/**
 * The examples in examples/ keep working: each runs as a user would run it.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { repoRoot, run } from './tools.js';

describe('examples/library.mjs', function () {
  this.timeout(120_000);

  it('converts the bundled image, reads a file through its chunks and serves it over NBD', async () => {
    const r = await run(process.execPath, [path.join(repoRoot(), 'examples', 'library.mjs')]);
    assert.match(r.stdout, /^converted: sha256:[0-9a-f]{64}, \d+ new chunks$/m);
    assert.match(r.stdout, /^greeting\.txt: "Hello, world!\\n" \((\d+) of (\d+) chunks fetched\)$/m);
    const [, fetched, total] = /\((\d+) of (\d+) chunks fetched\)/.exec(r.stdout)!;
    assert.ok(Number(fetched) < Number(total), r.stdout);
    assert.match(r.stdout, /^serving at nbd\+unix:\/\/\/\?socket=.*hello\.sock \(\d+ bytes, read-only: true\)$/m);
    assert.match(r.stdout, /^ext4 magic over NBD: 0xef53$/m);
  });
});
