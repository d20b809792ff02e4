import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { NotFoundError } from '../errors.js';
import { tmpDir } from '../testing/tools.js';
import { checkRange, fileBlockDevice, isWritable } from './device.js';

describe('blockdev/device', function () {
  it('fileBlockDevice reads a file, and writes it only when writable', async function () {
    const tmp = await tmpDir('filedev');
    try {
      const p = path.join(tmp.path, 'f.img');
      const bytes = Buffer.from(Array.from({ length: 5000 }, (_, i) => i & 0xff));
      await writeFile(p, bytes);
      const ro = await fileBlockDevice(p);
      assert.equal(ro.size, 5000);
      assert.equal(ro.readOnly, true);
      assert.equal(isWritable(ro), false);
      assert.deepEqual(await ro.read(4990, 10), bytes.subarray(4990));
      await assert.rejects(ro.read(4990, 11), RangeError);
      await ro.close();

      const rw = await fileBlockDevice(p, { writable: true });
      assert.ok(isWritable(rw));
      await rw.write(10, Buffer.from('hello'));
      await rw.flush();
      await assert.rejects(rw.write(4999, Buffer.from('xx')), RangeError);
      await rw.close();
      assert.equal((await readFile(p)).toString('latin1', 10, 15), 'hello');
      assert.equal((await readFile(p)).length, 5000);

      await assert.rejects(fileBlockDevice(path.join(tmp.path, 'missing')), NotFoundError);
      await assert.rejects(fileBlockDevice(tmp.path), /not a regular file/);
    } finally {
      await tmp.cleanup();
    }
  });

  it('checkRange accepts exactly the ranges inside the device', function () {
    checkRange(10, 0, 10);
    checkRange(10, 10, 0);
    assert.throws(() => checkRange(10, 9, 2), RangeError);
    assert.throws(() => checkRange(10, -1, 1), RangeError);
    assert.throws(() => checkRange(10, 0.5, 1), RangeError);
  });
});
