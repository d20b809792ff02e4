import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { repoRoot } from './testing/tools.js';
import { VERSION } from './version.js';

describe('VERSION', () => {
  it('matches package.json', async () => {
    const pkg = JSON.parse(await readFile(path.join(repoRoot(), 'package.json'), 'utf8')) as { version: string };
    assert.equal(VERSION, pkg.version);
  });
});
