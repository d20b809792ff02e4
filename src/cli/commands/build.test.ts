import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { main } from '../main.js';
import { captureIO } from '../../testing/capture.js';
import { blobFile, writeOciLayout } from '../../testing/oci-writer.js';
import { tarOf, type TarItem } from '../../testing/tar-writer.js';
import { tmpDir, type TmpDir } from '../../testing/tools.js';

const T = 1_700_000_000;
const goodLayer = (): Buffer =>
  tarOf([
    { name: 'etc/', type: 'dir', mtime: T },
    { name: 'etc/hostname', data: 'box\n', mtime: T },
    { name: 'bin/', type: 'dir', mtime: T },
    { name: 'bin/tool', data: Buffer.alloc(200_000, 0x41), mode: 0o755, mtime: T },
  ]);

async function runCli(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const c = captureIO();
  const code = await main(argv, c.io);
  return { code, stdout: c.stdoutText(), stderr: c.stderr() };
}

describe('chunkyard build (CLI)', function () {
  let dir: TmpDir;
  beforeEach(async () => {
    dir = await tmpDir('build-cli');
  });
  afterEach(async () => dir?.cleanup());

  /** Asserts one clear error line, the exit code, and that nothing was left in the output dir. */
  async function fails(source: string, code: number, message: RegExp): Promise<void> {
    const outDir = path.join(dir.path, 'out');
    await mkdir(outDir, { recursive: true });
    const r = await runCli(['build', source, '-o', path.join(outDir, 'img.ext4')]);
    assert.equal(r.code, code, `exit code; stderr: ${r.stderr}`);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
    assert.match(lines[0]!, /^chunkyard: /);
    assert.match(lines[0]!, message);
    assert.deepEqual(await readdir(outDir), [], 'no output file, no partial file');
  }

  it('builds, and prints a JSON summary', async () => {
    const layout = path.join(dir.path, 'layout');
    await writeOciLayout(layout, [{ tag: 'v1', layers: [goodLayer()] }]);
    const out = path.join(dir.path, 'img.ext4');
    const r = await runCli(['build', `oci:${layout}:v1`, '-o', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(summary['layers'], 1);
    assert.equal(summary['files'], 2);
    assert.equal(summary['chunkSize'], 512 * 1024);
    assert.equal(typeof summary['seconds'], 'number');
    assert.equal(summary['imageBytes'], (await readFile(out)).length);
    assert.equal(r.stderr, '', 'no progress when stderr is not a terminal');
  });

  it('honours --chunk-size and rejects a bad one with exit 2', async () => {
    const layout = path.join(dir.path, 'layout');
    await writeOciLayout(layout, [{ tag: 'v1', layers: [goodLayer()] }]);
    const out = path.join(dir.path, 'img.ext4');
    const r = await runCli(['build', `oci:${layout}:v1`, '-o', out, '--chunk-size', '64K', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { imageBytes: number }).imageBytes % (64 * 1024), 0);
    const bad = await runCli(['build', `oci:${layout}:v1`, '-o', path.join(dir.path, 'x.ext4'), '--chunk-size', '100K']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /chunk size/);
  });

  it('a blob with one flipped byte: exit 5, no output', async () => {
    const layout = path.join(dir.path, 'layout');
    const [e] = await writeOciLayout(layout, [{ tag: 'v1', layers: [goodLayer()] }]);
    const blob = blobFile(layout, e!.images[0]!.layerDigests[0]!);
    const b = await readFile(blob);
    b[Math.floor(b.length / 2)]! ^= 0x01;
    await writeFile(blob, b);
    await fails(`oci:${layout}:v1`, 5, /sha256:[0-9a-f]{64}/);
  });

  it('a truncated gzip layer (digest consistent): exit 3, no output', async () => {
    const layout = path.join(dir.path, 'layout');
    const tar = goodLayer();
    const gz = gzipSync(tar);
    await writeOciLayout(layout, [{ tag: 'v1', layers: [tar], layerBlobs: [gz.subarray(0, gz.length - 40)] }]);
    await fails(`oci:${layout}:v1`, 3, /truncated/);
  });

  it('a manifest naming a missing blob: exit 4, no output', async () => {
    const layout = path.join(dir.path, 'layout');
    const [e] = await writeOciLayout(layout, [{ tag: 'v1', layers: [goodLayer()] }]);
    await unlink(blobFile(layout, e!.images[0]!.layerDigests[0]!));
    await fails(`oci:${layout}:v1`, 4, /sha256:[0-9a-f]{64}/);
  });

  const hostile: Array<[string, TarItem[], RegExp]> = [
    ['a tar entry ../../etc/passwd', [{ name: '../../etc/passwd', data: 'root::0:0::/:/bin/sh\n' }], /climbs out of the image root/],
    [
      'a write through a symlinked parent that escapes',
      [
        { name: 'up', type: 'symlink', linkname: '../../..' },
        { name: 'up/etc/passwd', data: 'x' },
      ],
      /above the image root/,
    ],
    ['a hardlink to a path outside the root', [{ name: 'h', type: 'hardlink', linkname: '../../etc/shadow' }], /climbs out of the image root/],
  ];
  for (const [what, items, re] of hostile) {
    it(`${what}: exit 3, no output`, async () => {
      const layout = path.join(dir.path, 'layout');
      await writeOciLayout(layout, [{ tag: 'v1', layers: [tarOf(items)] }]);
      await fails(`oci:${layout}:v1`, 3, re);
    });
  }

  it('malformed JSON (index.json): exit 3, no output', async () => {
    const layout = path.join(dir.path, 'layout');
    await writeOciLayout(layout, [{ tag: 'v1', layers: [goodLayer()] }]);
    await writeFile(path.join(layout, 'index.json'), '{"schemaVersion": 2, "manifests": [');
    await fails(`oci:${layout}:v1`, 3, /index\.json/);
  });

  it('an unknown transport and a missing source: exit 2 and 4', async () => {
    await fails('nosuch:thing', 2, /transport/);
    await fails(`oci:${path.join(dir.path, 'absent')}`, 4, /absent/);
  });

  it('an interrupted build leaves no output', async () => {
    const layout = path.join(dir.path, 'layout');
    await writeOciLayout(layout, [{ tag: 'v1', layers: [goodLayer()] }]);
    const outDir = path.join(dir.path, 'out');
    await mkdir(outDir);
    const c = captureIO();
    c.abort();
    const code = await main(['build', `oci:${layout}:v1`, '-o', path.join(outDir, 'img.ext4')], c.io);
    assert.equal(code, 130, c.stderr());
    assert.deepEqual(await readdir(outDir), []);
  });
});
