import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { blake3, loadBlake3Backend, type Blake3, type Blake3Backend } from './blake3.js';
import { run, skipWith, tmpDir } from '../testing/tools.js';

// Official BLAKE3 test vectors (github.com/BLAKE3-team/BLAKE3, test_vectors/test_vectors.json):
// input i % 251, the first 32 bytes of each output.
const KEY = Buffer.from('whats the Elvish word for friend', 'ascii');
const CONTEXT = 'BLAKE3 2019-12-27 16:29:52 test vectors context';
const VECTORS = [
  {
    len: 0,
    hash: 'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262',
    keyed: '92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26',
    derive: '2cc39783c223154fea8dfb7c1b1660f2ac2dcbd1c1de8277b0b0dd39b7e50d7d',
  },
  {
    len: 1,
    hash: '2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213',
    keyed: '6d7878dfff2f485635d39013278ae14f1454b8c0a3a2d34bc1ab38228a80c95b',
    derive: 'b3e2e340a117a499c6cf2398a19ee0d29cca2bb7404c73063382693bf66cb06c',
  },
  {
    len: 1025,
    hash: 'd00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444',
    keyed: '357dc55de0c7e382c900fd6e320acc04146be01db6a8ce7210b7189bd664ea69',
    derive: 'effaa245f065fbf82ac186839a249707c3bddf6d3fdda22d1b95a3c970379bcb',
  },
  {
    len: 31744,
    hash: '62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47',
    keyed: 'efa53b389ab67c593dba624d898d0f7353ab99e4ac9d42302ee64cbf9939a419',
    derive: '39772aef80e0ebe60596361e45b061e8f417429d529171b6764468c22928e28e',
  },
  {
    len: 102400,
    hash: 'bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085',
    keyed: '1c35d1a5811083fd7119f5d5d1ba027b4d01c0c6c49fb6ff2cf75393ea5db4a7',
    derive: '4652cff7a3f385a6103b5c260fc1593e13c778dbe608efb092fe7ee69df6e9c6',
  },
];

function input(len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = i % 251;
  return b;
}

function checkVectors(b: Blake3): void {
  for (const v of VECTORS) {
    const data = input(v.len);
    assert.equal(b.hash(data).toString('hex'), v.hash, `hash of ${v.len} bytes`);
    assert.equal(b.keyedHash(KEY, data).toString('hex'), v.keyed, `keyed hash of ${v.len} bytes`);
    assert.equal(b.deriveKey(CONTEXT, data).toString('hex'), v.derive, `derive_key of ${v.len} bytes`);
  }
}

describe('chunks/blake3', () => {
  for (const backend of ['native', 'wasm'] as Blake3Backend[]) {
    it(`${backend} backend matches the official test vectors`, async function () {
      let b: Blake3;
      try {
        b = await loadBlake3Backend(backend);
      } catch {
        skipWith(this, `needs the native BLAKE3 addon (@c4312/blake3-native did not build at npm install)`);
      }
      assert.equal(b.backend, backend);
      checkVectors(b);
    });
  }

  it('the process-wide instance is the native one when it built, and is correct', async () => {
    const native = await loadBlake3Backend('native').then(
      () => true,
      () => false,
    );
    assert.equal(blake3.backend, native ? 'native' : 'wasm');
    checkVectors(blake3);
  });

  it('falls back to wasm, with the same hashes, when the native addon cannot load', async () => {
    const tmp = await tmpDir('blake3-fallback');
    try {
      // A preload that makes the native package unloadable, as when it never built.
      const hook = path.join(tmp.path, 'no-native.cjs');
      await writeFile(
        hook,
        `const M = require('node:module');
         const orig = M._resolveFilename;
         M._resolveFilename = function (req, ...rest) {
           if (req === '@c4312/blake3-native') throw Object.assign(new Error('not built'), { code: 'MODULE_NOT_FOUND' });
           return orig.call(this, req, ...rest);
         };`,
      );
      const mod = path.join(path.dirname(fileURLToPath(import.meta.url)), 'blake3.js');
      const script = `const { blake3 } = await import(${JSON.stringify(mod)}); process.stdout.write(blake3.backend + ' ' + blake3.hash(Buffer.from('abc')).toString('hex'));`;
      const r = await run(process.execPath, ['-r', hook, '--input-type=module', '-e', script]);
      assert.equal(r.stdout, `wasm ${blake3.hash(Buffer.from('abc')).toString('hex')}`);
    } finally {
      await tmp.cleanup();
    }
  });

  it('refuses keys that are not 32 bytes', () => {
    assert.throws(() => blake3.keyedHash(Buffer.alloc(16), Buffer.alloc(1)), RangeError);
  });
});
