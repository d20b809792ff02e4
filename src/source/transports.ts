/**
 * The list of transports and the one parser of `transport:reference`
 * strings (containers/image's alltransports). Importing this module has no
 * side effects: the list is a constant.
 *
 * A registry transport (`docker://host/repo:tag`) slots in as one more entry:
 * the prefix is split at the first colon, so its parse receives
 * `//host/repo:tag`.
 */
import { NotFoundError, UsageError } from '../errors.js';
import { detectImagePath } from './detect.js';
import { DockerArchiveReference, dockerArchiveTransport } from './docker-archive.js';
import { OciArchiveReference, ociArchiveTransport } from './oci-archive.js';
import { OciLayoutReference, ociTransport } from './oci.js';
import { splitPathAndRest } from './reference-path.js';
import { dockerTransport } from './registry/docker.js';
import type { ImageReference, Transport } from './source.js';

export const TRANSPORTS: readonly Transport[] = Object.freeze([ociTransport, ociArchiveTransport, dockerArchiveTransport, dockerTransport]);

export function findTransport(name: string): Transport | undefined {
  return TRANSPORTS.find((t) => t.name === name);
}

function known(): string {
  return TRANSPORTS.map((t) => t.name).join(', ');
}

/** What a transport name looks like (no dots: `image.tar:tag` is a missing file, not a transport). */
const TRANSPORT_NAME_RE = /^[a-z][a-z0-9-]*$/;

/**
 * Parses `transport:rest` (split at the first colon), or a bare path of an
 * existing layout directory or archive, whose kind is detected (optionally
 * followed by `:TAG`, `:NAME:TAG` or `:@N` as its transport allows).
 * Throws UsageError for an unknown transport, NotFoundError for a bare path
 * that does not exist, InputError for a malformed reference.
 */
export function parseImageReference(s: string): ImageReference {
  if (s === '') throw new UsageError('empty image reference');
  const colon = s.indexOf(':');
  if (colon > 0) {
    const t = findTransport(s.slice(0, colon));
    if (t !== undefined) return t.parse(s.slice(colon + 1));
  }
  // A bare path; the part before a colon may be the path (see splitPathAndRest).
  const { path, rest } = splitPathAndRest(s);
  let kind;
  try {
    kind = detectImagePath(path);
  } catch (e) {
    if (!(e instanceof NotFoundError)) throw e;
    const prefix = s.slice(0, colon);
    if (colon > 0 && TRANSPORT_NAME_RE.test(prefix)) {
      throw new UsageError(`unknown transport "${prefix}" in "${s}"; known transports: ${known()} (or give the path of an existing image layout or archive)`);
    }
    throw new NotFoundError(`${s}: no such file or directory (an image is TRANSPORT:REFERENCE, with transports ${known()}, or the path of a layout or archive)`);
  }
  if (rest === undefined) {
    switch (kind) {
      case 'oci':
        return new OciLayoutReference(path);
      case 'oci-archive':
        return new OciArchiveReference(path);
      case 'docker-archive':
        return new DockerArchiveReference(path);
    }
  }
  return (findTransport(kind) as Transport).parse(s);
}
