import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { loadKeys } from '../../keys/keys.js';
import { loadPublicKey, loadSigningKey } from '../../keys/signing.js';
import { CliLog } from '../../testing/store-files.js';
import { tmpDir, type TmpDir } from '../../testing/tools.js';

describe('chunkyard keygen (CLI)', function () {
  let dir: TmpDir;
  beforeEach(async () => {
    dir = await tmpDir('keygen');
  });
  afterEach(async () => dir?.cleanup());

  it('writes the key file and the signing key to different default paths, 0600, and never overwrites', async function () {
    const cli = new CliLog({ HOME: dir.path });
    const keyFile = path.join(dir.path, '.config', 'chunkyard', 'key.json');
    const k = await cli.ok(['keygen', '--json']);
    assert.deepEqual(Object.keys(JSON.parse(k.stdout) as object).sort(), ['file', 'keyId']);
    assert.equal((JSON.parse(k.stdout) as { file: string }).file, keyFile);
    assert.equal((await stat(keyFile)).mode & 0o777, 0o600);
    const s = JSON.parse((await cli.ok(['keygen', '--signing', '--json'])).stdout) as { file: string; publicKey: string; signer: string };
    assert.equal(s.file, path.join(dir.path, '.config', 'chunkyard', 'signing.pem'));
    assert.equal(s.publicKey, `${s.file}.pub`);
    assert.match(s.signer, /^[0-9a-f]{16}$/);
    assert.equal((await stat(s.file)).mode & 0o777, 0o600);
    await loadSigningKey(s.file);
    await loadPublicKey(s.publicKey);
    // The key file is untouched by --signing and still loads.
    const keys = await loadKeys({ file: keyFile });
    assert.equal(keys.manifestKey.length, 32);
    const before = await readFile(keyFile, 'utf8');
    const again = await cli.run(['keygen']);
    assert.equal(again.code, 2, again.stderr);
    assert.match(again.stderr, /already exists: refusing to overwrite it/);
    assert.equal(await readFile(keyFile, 'utf8'), before);
    assert.equal(cli.assertNoKeyLeaked([keys]) > 0, true);
  });
});
