/**
 * Build a real OCI image layout from layer tars with umoci, so tests can
 * compare our flattening with `umoci unpack` on hand-made layers.
 * Test-only code.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from './tools.js';

/**
 * `<dir>/oci` with tag `tag` whose layers are `layers` (uncompressed tars,
 * base first; umoci stores them gzipped). Needs umoci on PATH.
 */
export async function umociImageOf(dir: string, layers: readonly Buffer[], tag = 'test'): Promise<{ layout: string; tag: string }> {
  const layout = path.join(dir, 'oci');
  await run('umoci', ['init', '--layout', layout]);
  await run('umoci', ['new', '--image', `${layout}:${tag}`]);
  for (const [i, tar] of layers.entries()) {
    const file = path.join(dir, `layer${i}.tar`);
    await writeFile(file, tar);
    await run('umoci', ['raw', 'add-layer', '--image', `${layout}:${tag}`, file]);
  }
  return { layout, tag };
}
