import assert from 'node:assert/strict';
import { parseImageReference } from '../source/transports.js';
import { exampleImageDir } from '../testing/tools.js';
import { generateKeys } from '../keys/keys.js';
import { describeImage } from './from-image.js';
import { parseManifest } from './schema.js';
import { sealManifest } from './seal.js';

describe('manifest/from-image', () => {
  it('takes source and runtime config from an opened image (examples/hello), and they seal and parse', async () => {
    const image = await parseImageReference(`oci:${exampleImageDir()}:latest`).open();
    try {
      const { source, runtime } = describeImage(image);
      const rc = image.config.config ?? {};
      assert.equal(source.manifestDigest, image.manifestDigest);
      assert.equal(source.configDigest, image.configDigest);
      assert.deepEqual(source.diffIds, image.config.rootfs.diff_ids);
      assert.equal(source.platform, `${image.config.os}/${image.config.architecture}`);
      assert.equal('reference' in source, false, 'no local path in a manifest');
      assert.deepEqual(runtime.env, rc.Env ?? []);
      assert.deepEqual(runtime.cmd, rc.Cmd ?? null);
      assert.deepEqual(runtime.entrypoint, rc.Entrypoint ?? null);
      assert.equal(runtime.workingDir, rc.WorkingDir ?? '');
      const bytes = sealManifest(
        { createdBy: 'chunkyard test', source, runtime, filesystem: { type: 'ext4', size: 65536, blockSize: 4096, uuid: 'u' }, chunkSize: 65536, saltEpoch: 0 },
        [null],
        generateKeys().manifestKey,
      );
      const h = parseManifest(bytes).header;
      assert.deepEqual(h.source, source);
      assert.deepEqual(h.runtime, runtime);
    } finally {
      await image.close();
    }
  });
});
