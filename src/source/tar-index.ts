/**
 * An index of a tar archive on disk: entry name → where its data lies. Built
 * by reading headers only (data is skipped with a seek), so a multi-GB
 * `docker save` or oci-archive tarball is indexed in a few hundred small
 * reads and its blobs are then served as byte ranges of the archive — never
 * extracted, never held in memory.
 *
 * One header scanner (a generator that asks for reads) serves both an async
 * driver (opening images) and a sync one (detecting what a bare path is,
 * which happens while parsing a reference).
 *
 * Handles ustar prefixes, PAX `path`/`linkpath`/`size`, GNU `L`/`K` long
 * names, base-256 sizes; see reference/oci.md §7.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { InputError, throwIfAborted } from '../errors.js';
import { sniffCompression } from './decompress.js';

const BLOCK = 512;
/** Meta entries (PAX headers, GNU long names) larger than this are hostile (Go and libarchive cap them too). */
const MAX_META = 1024 * 1024;
/**
 * Image archives hold a few entries per layer; a hostile archive of millions
 * of empty entries would otherwise grow the index without bound.
 */
const MAX_ENTRIES = 200_000;

export type TarEntry =
  | { readonly type: 'file'; readonly name: string; readonly offset: number; readonly size: number }
  | { readonly type: 'symlink'; readonly name: string; readonly target: string }
  | { readonly type: 'hardlink'; readonly name: string; readonly target: string }
  | { readonly type: 'directory'; readonly name: string }
  | { readonly type: 'other'; readonly name: string; readonly typeflag: string };

/** Where a regular file's data lies inside the archive. */
export interface TarFileData {
  /** The normalised name of the entry holding the data (the link target for links). */
  readonly name: string;
  readonly offset: number;
  readonly size: number;
}

/**
 * `./blobs/x`, `/blobs/x` and `blobs/x/` all become `blobs/x`. Names that
 * escape the archive (`../x`) or name its root give undefined: they can
 * never be looked up.
 */
export function normalizeArchivePath(name: string): string | undefined {
  if (name.includes('\0')) return undefined;
  let n = path.posix.normalize(name.replace(/^\/+/, ''));
  n = n.replace(/\/+$/, '');
  if (n === '' || n === '.' || n === '..' || n.startsWith('../')) return undefined;
  return n;
}

export class TarIndex {
  readonly #entries: ReadonlyMap<string, TarEntry>;

  constructor(
    /** The archive's path, for reading and for messages. */
    readonly archive: string,
    entries: ReadonlyMap<string, TarEntry>,
  ) {
    this.#entries = entries;
  }

  /** Normalised names of all entries, in archive order (of the entry kept, for duplicates). */
  names(): string[] {
    return [...this.#entries.keys()];
  }

  entry(name: string): TarEntry | undefined {
    const n = normalizeArchivePath(name);
    return n === undefined ? undefined : this.#entries.get(n);
  }

  has(name: string): boolean {
    return this.entry(name) !== undefined;
  }

  /**
   * The data of the regular file `name`, following one level of symlink or
   * hardlink (`docker save` writes a layer repeated within an image once and
   * makes the duplicate's `layer.tar` a symlink to it). Undefined when the
   * name, or the target of its link, is absent. Throws InputError for links
   * that leave the archive, chains of links, or non-files.
   */
  resolve(name: string): TarFileData | undefined {
    const e = this.entry(name);
    if (e === undefined) return undefined;
    if (e.type === 'file') return { name: e.name, offset: e.offset, size: e.size };
    if (e.type === 'symlink' || e.type === 'hardlink') {
      // Symlink targets are relative to the link's directory; hardlink targets are archive paths.
      const raw = e.type === 'symlink' && !e.target.startsWith('/') ? path.posix.join(path.posix.dirname(e.name), e.target) : e.target;
      const targetName = normalizeArchivePath(raw);
      if (targetName === undefined) {
        throw new InputError(`${this.archive}: ${e.type} ${e.name} -> ${e.target} points outside the archive`);
      }
      const t = this.#entries.get(targetName);
      if (t === undefined) return undefined;
      if (t.type !== 'file') {
        throw new InputError(`${this.archive}: ${e.type} ${e.name} -> ${e.target} does not point to a regular file (only one level of links is followed)`);
      }
      return { name: t.name, offset: t.offset, size: t.size };
    }
    throw new InputError(`${this.archive}: ${e.name} is a ${e.type === 'other' ? `type '${e.typeflag}' entry` : e.type}, not a regular file`);
  }
}

// --- the scanner ---------------------------------------------------------------

type ScanStep = { readonly kind: 'read'; readonly position: number; readonly length: number } | { readonly kind: 'entry'; readonly entry: TarEntry };

/**
 * Yields read requests (answered through `next(buffer)`, possibly short at
 * EOF) and entries (answered with `next()`). Stops at the end-of-archive
 * zero block or at EOF on a block boundary.
 */
function* scanTar(archive: string, fileSize: number): Generator<ScanStep, void, Buffer | undefined> {
  let pos = 0;
  let pax: Map<string, string> | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;
  const readData = function* (at: number, size: number, kind: string): Generator<ScanStep, Buffer, Buffer | undefined> {
    if (size > MAX_META) throw new InputError(`${archive}: ${kind} at offset ${at - BLOCK} is ${size} bytes (limit ${MAX_META})`);
    const buf = yield { kind: 'read', position: at, length: size };
    if (buf === undefined || buf.length < size) throw new InputError(`${archive}: truncated tar archive (${kind} at offset ${at - BLOCK})`);
    return buf;
  };
  for (;;) {
    if (pos >= fileSize) return; // EOF on a block boundary without end marker: accepted, as Go does
    const hdr = yield { kind: 'read', position: pos, length: BLOCK };
    if (hdr === undefined) throw new InputError(`${archive}: truncated tar archive (header at offset ${pos})`);
    if (pos === 0 && (hdr.length < BLOCK || !checksumOk(hdr))) {
      // Say why the very first header is bad: `docker save | gzip` is a common mistake.
      const c = sniffCompression(hdr);
      if (c !== 'none') throw new InputError(`${archive}: is ${c}-compressed; decompress it first (e.g. ${c === 'gzip' ? 'gunzip' : c === 'zstd' ? 'unzstd' : c === 'bzip2' ? 'bunzip2' : 'unxz'})`);
      throw new InputError(`${archive}: not a tar archive (${hdr.length < BLOCK ? 'too short' : 'bad header checksum'})`);
    }
    if (hdr.length < BLOCK) throw new InputError(`${archive}: truncated tar archive (header at offset ${pos})`);
    if (hdr.every((b) => b === 0)) return;
    if (!checksumOk(hdr)) throw new InputError(`${archive}: corrupt tar header at offset ${pos} (bad checksum)`);
    const typeflag = String.fromCharCode(hdr[156] ?? 0);
    let size = parseNumeric(hdr, 124, 12, archive, pos);
    const dataStart = pos + BLOCK;
    switch (typeflag) {
      case 'x': {
        pax = parsePax(yield* readData(dataStart, size, 'PAX header'), archive, pos);
        pos = dataStart + roundUp(size);
        continue;
      }
      case 'L':
        longName = cString(yield* readData(dataStart, size, 'GNU long name'), 0, size);
        pos = dataStart + roundUp(size);
        continue;
      case 'K':
        longLink = cString(yield* readData(dataStart, size, 'GNU long link name'), 0, size);
        pos = dataStart + roundUp(size);
        continue;
      case 'g': // global PAX defaults: Go parses and drops them; names we care about never come from there
        pos = dataStart + roundUp(size);
        continue;
    }
    const name = pax?.get('path') ?? longName ?? headerName(hdr);
    const linkname = pax?.get('linkpath') ?? longLink ?? cString(hdr, 157, 100);
    const paxSize = pax?.get('size');
    if (paxSize !== undefined) {
      if (!/^[0-9]+$/.test(paxSize) || !Number.isSafeInteger(Number(paxSize))) {
        throw new InputError(`${archive}: bad PAX size ${JSON.stringify(paxSize)} for entry at offset ${pos}`);
      }
      size = Number(paxSize);
    }
    pax = undefined;
    longName = undefined;
    longLink = undefined;
    // Header-only types carry no data whatever their size field says (as Go's reader).
    const headerOnly = '123456'.includes(typeflag);
    const dataLen = headerOnly ? 0 : size;
    if (dataStart + dataLen > fileSize) throw new InputError(`${archive}: truncated tar archive (entry ${JSON.stringify(name)} at offset ${pos})`);
    let entry: TarEntry;
    if (typeflag === '0' || typeflag === '7' || typeflag === '\0') {
      entry = typeflag === '\0' && name.endsWith('/') ? { type: 'directory', name } : { type: 'file', name, offset: dataStart, size };
    } else if (typeflag === '1') entry = { type: 'hardlink', name, target: linkname };
    else if (typeflag === '2') entry = { type: 'symlink', name, target: linkname };
    else if (typeflag === '5') entry = { type: 'directory', name };
    else entry = { type: 'other', name, typeflag };
    yield { kind: 'entry', entry };
    pos = dataStart + roundUp(dataLen);
  }
}

function roundUp(n: number): number {
  return Math.ceil(n / BLOCK) * BLOCK;
}

function cString(buf: Buffer, off: number, len: number): string {
  const field = buf.subarray(off, off + len);
  const nul = field.indexOf(0);
  return field.subarray(0, nul < 0 ? field.length : nul).toString('utf8');
}

function headerName(hdr: Buffer): string {
  const name = cString(hdr, 0, 100);
  // POSIX ustar ("ustar\0" + "00") has a 155-byte prefix; GNU ("ustar  \0") does not.
  const magic = hdr.subarray(257, 263).toString('latin1');
  if (magic === 'ustar\0') {
    const prefix = cString(hdr, 345, 155);
    if (prefix !== '') return `${prefix}/${name}`;
  }
  return name;
}

/** Octal ASCII (NUL/space padded) or GNU base-256 (high bit set). */
function parseNumeric(hdr: Buffer, off: number, len: number, archive: string, pos: number): number {
  const first = hdr[off] ?? 0;
  if (first & 0x80) {
    if (first & 0x40) throw new InputError(`${archive}: negative size in tar header at offset ${pos}`);
    let v = first & 0x3f;
    for (let i = 1; i < len; i++) {
      v = v * 256 + (hdr[off + i] ?? 0);
      if (!Number.isSafeInteger(v)) throw new InputError(`${archive}: size too large in tar header at offset ${pos}`);
    }
    return v;
  }
  const s = hdr.subarray(off, off + len).toString('latin1').replace(/^[\0 ]+|[\0 ]+$/g, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new InputError(`${archive}: bad number ${JSON.stringify(s)} in tar header at offset ${pos}`);
  return parseInt(s, 8);
}

/** The stored checksum may be the unsigned or (old writers) the signed byte sum. */
function checksumOk(hdr: Buffer): boolean {
  const s = hdr.subarray(148, 156).toString('latin1').replace(/^[\0 ]+|[\0 ]+$/g, '');
  if (!/^[0-7]+$/.test(s)) return false;
  const stored = parseInt(s, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : (hdr[i] ?? 0);
    unsigned += b;
    signed += b >= 128 ? b - 256 : b;
  }
  return stored === unsigned || stored === signed;
}

/** PAX records: `"<len> <key>=<value>\n"`, len counting the whole record. */
function parsePax(buf: Buffer, archive: string, pos: number): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  const bad = (): never => {
    throw new InputError(`${archive}: malformed PAX header at offset ${pos}`);
  };
  while (i < buf.length) {
    if (buf[i] === 0) break; // NUL padding
    const sp = buf.indexOf(0x20, i);
    if (sp < 0) bad();
    const lenStr = buf.subarray(i, sp).toString('latin1');
    if (!/^[0-9]+$/.test(lenStr)) bad();
    const len = Number(lenStr);
    const end = i + len;
    if (len <= sp - i + 1 || end > buf.length || buf[end - 1] !== 0x0a) bad();
    const rec = buf.subarray(sp + 1, end - 1);
    const eq = rec.indexOf(0x3d);
    if (eq < 0) bad();
    out.set(rec.subarray(0, eq).toString('utf8'), rec.subarray(eq + 1).toString('utf8'));
    i = end;
  }
  return out;
}

// --- drivers ---------------------------------------------------------------------

function addEntry(archive: string, entries: Map<string, TarEntry>, e: TarEntry): void {
  if (entries.size >= MAX_ENTRIES) throw new InputError(`${archive}: more than ${MAX_ENTRIES} entries; not an image archive`);
  const name = normalizeArchivePath(e.name);
  if (name === undefined) return; // never reachable by lookup: `../x`, `/`, NUL
  // A later entry of the same name replaces an earlier one (tar semantics);
  // delete first so archive order reflects the entry that is kept.
  entries.delete(name);
  entries.set(name, { ...e, name });
}

/** Index `archive` (a regular file) by reading its headers. */
export async function indexTarFile(archive: string, signal?: AbortSignal): Promise<TarIndex> {
  const fh = await open(archive, 'r');
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new InputError(`${archive}: not a regular file (archives are read by offset; save a stream to a file first)`);
    const entries = new Map<string, TarEntry>();
    const gen = scanTar(archive, st.size);
    let r = gen.next();
    while (r.done !== true) {
      const step = r.value;
      if (step.kind === 'entry') {
        addEntry(archive, entries, step.entry);
        r = gen.next();
        continue;
      }
      throwIfAborted(signal);
      const buf = Buffer.allocUnsafe(step.length);
      let got = 0;
      while (got < step.length) {
        const { bytesRead } = await fh.read(buf, got, step.length - got, step.position + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      r = gen.next(buf.subarray(0, got));
    }
    return new TarIndex(archive, entries);
  } finally {
    await fh.close();
  }
}

/**
 * Synchronous twin of indexTarFile, for detecting what a bare path holds
 * while a reference is parsed (parsing is synchronous). Reads headers only.
 */
export function indexTarFileSync(archive: string): TarIndex {
  const fd = openSync(archive, 'r');
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new InputError(`${archive}: not a regular file`);
    const entries = new Map<string, TarEntry>();
    const gen = scanTar(archive, st.size);
    let r = gen.next();
    while (r.done !== true) {
      const step = r.value;
      if (step.kind === 'entry') {
        addEntry(archive, entries, step.entry);
        r = gen.next();
        continue;
      }
      const buf = Buffer.allocUnsafe(step.length);
      let got = 0;
      while (got < step.length) {
        const n = readSync(fd, buf, got, step.length - got, step.position + got);
        if (n === 0) break;
        got += n;
      }
      r = gen.next(buf.subarray(0, got));
    }
    return new TarIndex(archive, entries);
  } finally {
    closeSync(fd);
  }
}
