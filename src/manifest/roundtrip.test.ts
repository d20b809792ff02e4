import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { buildToFile, buildToSink } from '../build/build.js';
import { ChunkingSink } from '../chunks/chunker.js';
import type { ChunkId } from '../chunks/id.js';
import { createSealer } from '../chunks/pool.js';
import type { ChunkRef } from '../chunks/seal.js';
import { generateKeys } from '../keys/keys.js';
import { parseImageReference } from '../source/transports.js';
import { exampleImageDir, tmpDir } from '../testing/tools.js';
import { describeImage } from './from-image.js';
import { manifestDigest, parseManifest } from './schema.js';
import { manifestSalt, openManifest, sealManifest } from './seal.js';

const CHUNK = 64 * 1024;

/**
 * The pieces together, as convert/extract will use them: build → chunker →
 * seal pool → (a Map as the store) + manifest; then manifest → open each
 * chunk → the image, byte for byte what buildToFile writes.
 */
describe('manifest round trip (examples/hello)', () => {
  it('build → chunks → seal → manifest → open → the same image; a second run gives the same manifest', async () => {
    const keys = generateKeys();
    const ref = parseImageReference(`oci:${exampleImageDir()}:latest`);
    const tmp = await tmpDir('roundtrip');
    const sealer = createSealer(keys.salt, { threads: 2 });
    try {
      const convert = async (store: Map<ChunkId, Buffer>): Promise<Buffer> => {
        const image = await ref.open();
        try {
          const refs: (ChunkRef | null)[] = [];
          const sink = new ChunkingSink(CHUNK, async (i, data) => {
            if (data === null) {
              refs[i] = null;
              return;
            }
            const s = await sealer.seal(i, data);
            store.set(s.id, s.ciphertext);
            refs[i] = { id: s.id, key: s.key };
          });
          const summary = await buildToSink(image, sink, { chunkSize: CHUNK, headroom: 2 });
          const { source, runtime } = describeImage(image);
          return sealManifest(
            { createdBy: 'chunkyard test', source, runtime, filesystem: { type: 'ext4', size: summary.imageBytes, blockSize: summary.blockSize, uuid: summary.uuid }, chunkSize: CHUNK, saltEpoch: keys.salt.epoch },
            refs,
            keys.manifestKey,
          );
        } finally {
          await image.close();
        }
      };
      const store = new Map<ChunkId, Buffer>();
      const bytes = await convert(store);
      const again = await convert(new Map());
      assert.equal(manifestDigest(again), manifestDigest(bytes), 'deterministic');

      // Without keys: names only, all present in the store, holes not stored.
      const listed = parseManifest(bytes);
      const named = listed.chunks.filter((c): c is ChunkId => c !== null);
      assert.ok(listed.chunks.includes(null), 'the image has holes');
      assert.equal(new Set(named).size, store.size);

      // With keys: every chunk opens and the image comes back.
      const opened = openManifest(bytes, keys.manifestKey);
      const out = Buffer.alloc(opened.header.chunks.count * CHUNK);
      const salt = manifestSalt(opened.header, { epoch: keys.salt.epoch + 1, secret: keys.salt.secret }); // the key file moved on an epoch since
      const s2 = createSealer(salt, { threads: 1 });
      try {
        await Promise.all(
          opened.chunks.map(async (c, i) => {
            if (c !== null) (await s2.open(Buffer.from(store.get(c.id)!), c)).copy(out, i * CHUNK);
          }),
        );
      } finally {
        await s2.close();
      }
      const file = path.join(tmp.path, 'hello.ext4');
      const image = await ref.open();
      try {
        await buildToFile(image, file, { chunkSize: CHUNK, headroom: 2 });
      } finally {
        await image.close();
      }
      const expected = await readFile(file);
      assert.equal(opened.header.filesystem.size, expected.length);
      const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
      assert.equal(sha(out.subarray(0, opened.header.filesystem.size)), sha(expected));
    } finally {
      await sealer.close();
      await tmp.cleanup();
    }
  });
});
