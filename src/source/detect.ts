/**
 * What a bare path (given without a transport prefix) holds: a directory
 * with `oci-layout` is an OCI layout; a tar with `manifest.json` is a
 * `docker save` archive (Docker 25+ archives also hold `oci-layout`, so
 * manifest.json is looked for first); a tar with `oci-layout` alone is an
 * oci-archive. Synchronous because reference parsing is; reads tar headers
 * only.
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { InputError, NotFoundError } from '../errors.js';
import { indexTarFileSync } from './tar-index.js';

export type DetectedKind = 'oci' | 'oci-archive' | 'docker-archive';

export function detectImagePath(p: string): DetectedKind {
  const st = statSync(p, { throwIfNoEntry: false });
  if (st === undefined) throw new NotFoundError(`${p}: no such file or directory`);
  if (st.isDirectory()) {
    if (existsSync(path.join(p, 'oci-layout'))) return 'oci';
    throw new InputError(`${p}: a directory but not an OCI image layout (no oci-layout file)`);
  }
  if (!st.isFile()) throw new InputError(`${p}: not a regular file or directory`);
  const index = indexTarFileSync(p);
  if (index.has('manifest.json')) return 'docker-archive';
  if (index.has('oci-layout')) return 'oci-archive';
  throw new InputError(`${p}: a tar archive, but neither a docker save archive (no manifest.json) nor an OCI layout (no oci-layout)`);
}
