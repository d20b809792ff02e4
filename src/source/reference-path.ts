/**
 * The `PATH[:REST]` part of transport references, in skopeo's syntax: split
 * at the first colon. Paths may contain colons, so when the text before the
 * first colon names nothing on disk, a longer prefix ending at a later colon
 * (or the whole text) that does exist is taken as the path instead. Parsing
 * a reference is the only place this stats the filesystem.
 */
import { statSync } from 'node:fs';
import { InputError } from '../errors.js';

function exists(p: string): boolean {
  try {
    return statSync(p, { throwIfNoEntry: false }) !== undefined;
  } catch {
    return false;
  }
}

export interface PathAndRest {
  readonly path: string;
  /** What followed the path's colon; undefined when there was none. */
  readonly rest: string | undefined;
}

export function splitPathAndRest(s: string): PathAndRest {
  const first = s.indexOf(':');
  if (first < 0) return { path: s, rest: undefined };
  for (let i = first; i >= 0; i = s.indexOf(':', i + 1)) {
    if (i > 0 && exists(s.slice(0, i))) return { path: s.slice(0, i), rest: s.slice(i + 1) };
  }
  if (exists(s)) return { path: s, rest: undefined };
  return { path: s.slice(0, first), rest: s.slice(first + 1) };
}

/** OCI `ref.name` values: printable, no spaces (the annotation's grammar is loose in practice). */
const TAG_RE = /^[A-Za-z0-9._:@+/-]+$/;

/** `DIR[:TAG]` for oci and oci-archive. An empty TAG is the same as none. */
export function parsePathAndTag(rest: string, transport: string): { readonly path: string; readonly tag: string | undefined } {
  const { path, rest: tag } = splitPathAndRest(rest);
  if (path === '') throw new InputError(`invalid reference "${transport}:${rest}": missing path`);
  if (tag === undefined || tag === '') return { path, tag: undefined };
  if (!TAG_RE.test(tag)) throw new InputError(`invalid reference "${transport}:${rest}": bad tag ${JSON.stringify(tag)}`);
  return { path, tag };
}
