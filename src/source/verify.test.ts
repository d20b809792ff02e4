import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { IntegrityError } from '../errors.js';
import { readAllBytes } from '../testing/streams.js';
import { sha256Digest } from './digest.js';
import { checkBuffer, createVerifier } from './verify.js';

describe('source/verify', () => {
  const data = Buffer.from('some blob content');
  const digest = sha256Digest(data);

  it('passes matching bytes through unchanged', async () => {
    const out = await readAllBytes(Readable.from([data.subarray(0, 5), data.subarray(5)]).pipe(createVerifier({ digest, size: data.length, what: 'blob x' })));
    assert.ok(out.equals(data));
    checkBuffer(data, { digest, size: data.length, what: 'blob x' });
  });

  it('checks size first, then digest, naming the blob and what it hashed to', async () => {
    const other = Buffer.from('some blob contenT');
    const run = (buf: Buffer, size?: number): Promise<Buffer> =>
      readAllBytes(Readable.from([buf]).pipe(createVerifier({ digest, what: `blob ${digest}`, ...(size !== undefined ? { size } : {}) })));
    await assert.rejects(run(other, data.length), (e: unknown) => e instanceof IntegrityError && e.message === `blob ${digest}: content hashes to ${sha256Digest(other)}, expected ${digest}`);
    await assert.rejects(run(data.subarray(1), data.length), (e: unknown) => e instanceof IntegrityError && e.message === `blob ${digest}: ${data.length - 1} bytes, expected ${data.length}`);
    await assert.rejects(run(Buffer.concat([data, data]), data.length), (e: unknown) => e instanceof IntegrityError && /more than the expected/.test(e.message));
    assert.throws(() => checkBuffer(other, { digest, what: 'cfg' }), IntegrityError);
    assert.throws(() => checkBuffer(data, { digest, size: 3, what: 'cfg' }), (e: unknown) => e instanceof IntegrityError && /bytes, expected 3/.test(e.message));
    const diff = await readAllBytes(Readable.from([other]).pipe(createVerifier({ digest, what: 'layer 0', kind: 'diff_id' }))).catch((e: unknown) => e);
    assert.ok(diff instanceof IntegrityError && /diff_id is/.test(diff.message));
  });
});
