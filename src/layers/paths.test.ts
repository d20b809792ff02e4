import assert from 'node:assert/strict';
import { InputError } from '../errors.js';
import { utf8ToByteString, type ByteString } from './bytes.js';
import type { EntryPath } from './entry.js';
import { entryPathParts, joinEntryPath, normalizeEntryPath, splitEntryPath } from './paths.js';

const b = (s: string): ByteString => utf8ToByteString(s);

describe('normalizeEntryPath', () => {
  const cases: Array<[string, string]> = [
    ['etc/passwd', 'etc/passwd'],
    ['./etc/passwd', 'etc/passwd'],
    ['/etc/passwd', 'etc/passwd'],
    ['//etc//passwd/', 'etc/passwd'],
    ['etc/./passwd', 'etc/passwd'],
    ['./', ''],
    ['.', ''],
    ['', ''],
    ['/', ''],
    // `..` is lexical while it stays inside the root.
    ['a/b/../c', 'a/c'],
    ['a/..', ''],
    ['./x/./y/..', 'x'],
    ['...', '...'], // just a name
    ['.wh..wh..opq', '.wh..wh..opq'],
  ];
  for (const [raw, want] of cases) {
    it(`${JSON.stringify(raw)} → ${JSON.stringify(want)}`, () => {
      assert.equal(normalizeEntryPath(b(raw)), want);
    });
  }

  for (const raw of ['../../etc/passwd', '/../etc/passwd', 'a/../../b', '..', './../x']) {
    it(`refuses ${JSON.stringify(raw)}, which climbs out of the root`, () => {
      assert.throws(() => normalizeEntryPath(b(raw)), (e: unknown) => e instanceof InputError && /climbs out of the image root/.test(e.message));
    });
  }

  it('keeps non-UTF-8 bytes as they are', () => {
    const raw = Buffer.from([0x61, 0x2f, 0xff, 0xfe, 0x80]).toString('latin1') as ByteString;
    assert.equal(normalizeEntryPath(raw), raw);
  });

  it('keeps UTF-8 names as their bytes', () => {
    const p = normalizeEntryPath(b('./app/ünïcødé файл ✓.txt'));
    assert.deepEqual(Buffer.from(p, 'latin1'), Buffer.from('app/ünïcødé файл ✓.txt', 'utf8'));
  });

  it('rejects NUL with an InputError naming the entry', () => {
    assert.throws(
      () => normalizeEntryPath(b('etc/pass\0wd')),
      (e: unknown) => e instanceof InputError && /etc\/pass\\0wd/.test(e.message) && /NUL/.test(e.message),
    );
  });
});

describe('entry path helpers', () => {
  it('splits and joins', () => {
    assert.deepEqual(splitEntryPath('a/b/c' as EntryPath), { parent: 'a/b', name: 'c' });
    assert.deepEqual(splitEntryPath('c' as EntryPath), { parent: '', name: 'c' });
    assert.deepEqual(splitEntryPath('' as EntryPath), { parent: '', name: '' });
    assert.equal(joinEntryPath('' as EntryPath, 'x' as ByteString), 'x');
    assert.equal(joinEntryPath('a/b' as EntryPath, 'x' as ByteString), 'a/b/x');
    assert.deepEqual(entryPathParts('' as EntryPath), []);
    assert.deepEqual(entryPathParts('a/b' as EntryPath), ['a', 'b']);
  });
});
