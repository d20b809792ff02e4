import { InputError } from '../errors.js';
import { byteStringToDisplay, type ByteString } from './bytes.js';
import type { EntryPath } from './entry.js';

/**
 * Lexical path rules for tar entry names, like umoci 0.4.7's `CleanPath`
 * (oci/layer/utils.go): a leading `/` or `./` is dropped, `//` and `.`
 * collapse, and `..` is resolved lexically: `/abs/path` is `abs/path`,
 * `a/../b` is `b`. Where umoci silently clamps a name that climbs above the
 * root (`../../etc/passwd`), we refuse it: no honest layer writer emits one,
 * so it is a hostile or broken layer and the user should hear about it.
 * Symlinks are not considered here; see resolve.ts.
 */
export function normalizeEntryPath(raw: ByteString): EntryPath {
  if (raw.includes('\0')) throw new InputError(`tar entry name "${display(raw)}" contains a NUL byte`);
  const out: string[] = [];
  for (const part of raw.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) throw new InputError(`tar entry "${display(raw)}" climbs out of the image root`);
      out.pop();
    } else out.push(part);
  }
  return out.join('/') as EntryPath;
}

/** Components of a normalised path ('' has none). */
export function entryPathParts(p: EntryPath): ByteString[] {
  return p === '' ? [] : (p.split('/') as ByteString[]);
}

/** `a/b/c` → { parent: 'a/b', name: 'c' }; the root has parent '' and name ''. */
export function splitEntryPath(p: EntryPath): { parent: EntryPath; name: ByteString } {
  const i = p.lastIndexOf('/');
  if (i < 0) return { parent: '' as EntryPath, name: p };
  return { parent: p.slice(0, i) as EntryPath, name: p.slice(i + 1) as ByteString };
}

export function joinEntryPath(parent: EntryPath, name: ByteString): EntryPath {
  return (parent === '' ? name : `${parent}/${name}`) as EntryPath;
}

/** A path for messages: UTF-8 decoded, '/' for the root. */
export function displayPath(p: ByteString): string {
  return p === '' ? '/' : byteStringToDisplay(p);
}

function display(raw: ByteString): string {
  return byteStringToDisplay(raw).replace(/\0/g, '\\0');
}
