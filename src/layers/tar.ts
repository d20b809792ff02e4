/**
 * An uncompressed layer tar stream → LayerEntry values, one at a time.
 *
 * We parse the tar ourselves (tar-header.ts, pax.ts, sparse.ts) rather than
 * with tar-stream 3.2.2, whose extract() loses what layers rely on: it
 * decodes PAX values as UTF-8 text (binary xattrs like `security.capability`
 * and non-UTF-8 PAX paths are mangled), keeps one value per key (PAX sparse
 * 0.0 repeats keys), ignores global headers unless a local one follows, does
 * not expose old GNU sparse maps, allows 4 MiB meta entries and only accepts
 * the unsigned checksum. Behaviour follows Go's archive/tar, which umoci,
 * containerd and moby read layers with.
 */
import type { Readable } from 'node:stream';
import { InputError, InterruptedError, throwIfAborted } from '../errors.js';
import { ByteReader } from './byte-reader.js';
import { bytesToByteString, byteStringToDisplay, type ByteString } from './bytes.js';
import type { Attrs, EntryPath, LayerEntry } from './entry.js';
import { entryPathParts, joinEntryPath, normalizeEntryPath, splitEntryPath } from './paths.js';
import { mergeGlobals, paxFields, parsePaxRecords, type PaxFields, type PaxRecord } from './pax.js';
import { checkFragments, expandSparse, paxSparse, readOldGnuSparse, readSparseMap1, type SparseFragment } from './sparse.js';
import { BLOCK, cstring, decodeHeader, deviceNumbers, isZeroBlock, TarFormatError, type TarHeader } from './tar-header.js';

/** A regular file's logical content. Read `chunks` to the end before asking for the next entry (else it is skipped). */
export interface FileBody {
  readonly size: number;
  /**
   * Iterable once. Chunks are views that stay valid after the next read
   * (unless the reader was asked for `transientChunks`); chunks of sparse
   * holes share one zero buffer and must not be written to.
   */
  readonly chunks: AsyncIterable<Buffer>;
}

export interface ReadLayerOptions {
  readonly signal?: AbortSignal;
  /** Called with the size of every chunk pulled from the stream (tar bytes, for progress). */
  readonly onBytes?: (n: number) => void;
  /** Names the layer in error messages, e.g. its digest. */
  readonly label?: string;
  /**
   * The consumer is done with each FileBody chunk before it asks for the
   * next chunk or entry (it copies what it keeps), so the stream may reuse
   * chunk memory (ByteReader `transient`). Default false.
   */
  readonly transientChunks?: boolean;
}

/** PAX and GNU long-name data larger than this is refused (as Go and libarchive do). */
export const MAX_META_BYTES = 1 << 20;

const MAX_ID = 0xffff_ffff;

/** Where we are, for error messages. */
interface Where {
  readonly label: string | undefined;
  offset: number;
  /** The entry's name as read; turned into display text only for a message (most entries never need it). */
  name: Buffer | ByteString | undefined;
}

class Truncated extends Error {}

/**
 * Yields the layer's entries in tar order, with PAX/GNU extensions applied,
 * paths normalised (paths.ts) and whiteout markers turned into 'whiteout' /
 * 'opaque' entries. A tar without its end-of-archive blocks is accepted
 * (umoci ≤ 0.4.7 writes such layers); one cut off inside an entry is an
 * InputError "truncated tar: …". Whatever follows the end-of-archive blocks
 * is read and discarded, so a digest computed over the stream sees it all.
 */
export async function* readLayerEntries(stream: Readable, options: ReadLayerOptions = {}): AsyncGenerator<LayerEntry<FileBody>, void, undefined> {
  const { signal } = options;
  throwIfAborted(signal);
  const reader = new ByteReader(stream, { onBytes: options.onBytes, signal, transient: options.transientChunks });
  // Unblocks a read that waits on a stalled stream.
  const onAbort = (): void => void stream.destroy(new InterruptedError('interrupted'));
  signal?.addEventListener('abort', onAbort, { once: true });
  const where: Where = { label: options.label, offset: 0, name: undefined };
  try {
    yield* entries(reader, where);
  } catch (e) {
    if (signal?.aborted && !(e instanceof InputError)) throw new InterruptedError('interrupted', { cause: e });
    if (e instanceof TarFormatError) throw inputError(where, e.message);
    if (e instanceof Truncated) throw truncatedError(where, e.message);
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await reader.close();
  }
}

function prefix(w: Where): string {
  return w.label !== undefined ? `${w.label}: ` : '';
}

function inputError(w: Where, msg: string): InputError {
  const what = w.name !== undefined ? `tar entry "${show(w.name)}" (offset ${w.offset})` : `tar header at offset ${w.offset}`;
  return new InputError(`${prefix(w)}${what}: ${msg}`);
}

function truncatedError(w: Where, msg: string): InputError {
  const what = w.name !== undefined ? `entry "${show(w.name)}" (offset ${w.offset})` : `header at offset ${w.offset}`;
  return new InputError(`${prefix(w)}truncated tar: ${what} ${msg}`);
}

function show(b: Buffer | ByteString): string {
  return byteStringToDisplay(typeof b === 'string' ? b : bytesToByteString(b)).replace(/\0/g, '\\0');
}

async function* entries(r: ByteReader, where: Where): AsyncGenerator<LayerEntry<FileBody>> {
  const globals = new Map<string, Buffer>();
  let localPax: PaxRecord[] | undefined;
  let longName: Buffer | undefined;
  let longLink: Buffer | undefined;
  const pendingMeta = (): boolean => localPax !== undefined || longName !== undefined || longLink !== undefined;

  for (;;) {
    where.offset = r.offset;
    where.name = undefined;
    const block = await r.readExact(BLOCK);
    if (block.length === 0) {
      if (pendingMeta()) throw new Truncated('ends after a PAX/GNU extension header, before its entry');
      return; // no end-of-archive blocks: accepted
    }
    if (block.length < BLOCK) throw new Truncated(`has only ${block.length} of ${BLOCK} bytes`);
    if (isZeroBlock(block)) {
      // End of archive: two zero blocks, or one zero block then EOF (Go accepts that too).
      const next = await r.readExact(BLOCK);
      if (next.length > 0 && next.length < BLOCK) throw new Truncated('ends inside the end-of-archive blocks');
      if (next.length === BLOCK && !isZeroBlock(next)) throw new TarFormatError('a zero block is followed by a header (corrupt archive)');
      if (pendingMeta()) throw new Truncated('ends after a PAX/GNU extension header, before its entry');
      await r.drain();
      return;
    }
    const h = decodeHeader(block, where.offset);
    where.name = h.name;

    switch (h.typeflag) {
      case 'x':
        localPax = parsePaxRecords(await readMeta(r, h, 'PAX header'));
        continue;
      case 'g':
        mergeGlobals(globals, parsePaxRecords(await readMeta(r, h, 'PAX global header')));
        continue;
      case 'L':
        longName = cstring(await readMeta(r, h, 'GNU long name'), 0, Number.MAX_SAFE_INTEGER);
        continue;
      case 'K':
        longLink = cstring(await readMeta(r, h, 'GNU long link name'), 0, Number.MAX_SAFE_INTEGER);
        continue;
    }

    const pax = paxFields(globals, localPax ?? []);
    // Precedence as in Go: header < PAX path < GNU long name.
    let name = longName ?? pax.path ?? h.name;
    const linkname = longLink ?? pax.linkpath ?? h.linkname;
    localPax = longName = longLink = undefined;
    let typeflag = h.typeflag;
    if (typeflag === '\0') typeflag = name[name.length - 1] === 0x2f ? '5' : '0'; // V7: trailing '/' marks a directory
    if (typeflag === '7') typeflag = '0'; // contiguous file: a regular file (umoci 0.4.7 rejects these; tar(5) says read as regular)
    const size = pax.size ?? h.size;
    if (size < 0) throw new TarFormatError(`negative size ${size}`);
    const headerOnly = '123456'.includes(typeflag);
    const dataSize = headerOnly ? 0 : size; // Go: these types have no data whatever the size field says
    let left = dataSize; // data bytes not yet read

    // Regular files may be sparse; the map may rename them and decides their logical size.
    let sparse: { fragments: readonly SparseFragment[]; size: number } | undefined;
    let map1: { size: number | undefined } | undefined;
    if (typeflag === 'S') {
      const old = await readOldGnuSparse(h, () => readBlock(r, 'GNU sparse extension header'));
      sparse = { fragments: old.fragments, size: old.realSize };
    } else if (typeflag === '0') {
      const ps = paxSparse(pax);
      if (ps !== undefined) {
        if (ps.name !== undefined) name = ps.name;
        if (ps.version === '0.x') sparse = { fragments: ps.fragments, size: ps.size ?? size };
        else map1 = { size: ps.size };
      }
    }
    where.name = name;

    const path = normalizeEntryPath(bytesToByteString(name));
    const marker = classifyWhiteout(path, where);
    if (marker === 'skip') {
      await skipData(r, left, dataSize);
      continue;
    }
    if (marker !== undefined) {
      await skipData(r, left, dataSize);
      yield marker;
      continue;
    }

    if (typeflag === 'V') {
      await skipData(r, left, dataSize); // GNU volume label: not a file
      continue;
    }
    const attrs = entryAttrs(h, pax);
    switch (typeflag) {
      case '0':
      case 'S': {
        if (map1 !== undefined) {
          const m = await readSparseMap1(async () => {
            if (left < BLOCK) throw new TarFormatError('GNU sparse 1.0 map runs past the entry data');
            const b = await readBlock(r, 'GNU sparse 1.0 map');
            left -= BLOCK;
            return b;
          });
          sparse = { fragments: m.fragments, size: map1.size ?? size };
        }
        if (sparse !== undefined) {
          const stored = checkFragments(sparse.fragments, sparse.size);
          if (stored !== left) throw new TarFormatError(`GNU sparse map describes ${stored} stored bytes, the entry holds ${left}`);
        }
        const body = new Body(r, where, left, sparse);
        yield { type: 'file', path, attrs, data: body };
        left = body.finish();
        await skipData(r, left, dataSize);
        continue;
      }
      case '5':
        yield { type: 'dir', path, attrs };
        break;
      case '2': {
        if (linkname.length === 0) throw new TarFormatError('symlink with an empty target');
        yield { type: 'symlink', path, attrs, target: bytesToByteString(linkname) };
        break;
      }
      case '1':
        yield { type: 'hardlink', path, attrs, target: normalizeEntryPath(bytesToByteString(linkname)) };
        break;
      case '3':
      case '4': {
        const { major, minor } = deviceNumbers(h);
        if (major < 0 || minor < 0 || major > MAX_ID || minor > MAX_ID) throw new TarFormatError(`bad device number ${major}:${minor}`);
        yield { type: typeflag === '3' ? 'char' : 'block', path, attrs, major, minor };
        break;
      }
      case '6':
        yield { type: 'fifo', path, attrs };
        break;
      default:
        // Includes GNU 'D' (dumpdir), 'M'/'N' (multivolume, old long names) and
        // vendor types. umoci refuses them too; skipping could silently drop a file.
        throw new TarFormatError(`unsupported entry type '${printable(h.typeflag)}'`);
    }
  }
}

/**
 * `.wh.NAME` → whiteout of NAME; `.wh..wh..opq` → opaque parent; other
 * `.wh..wh.*` (aufs bookkeeping: `.wh..wh.plnk`, `.wh..wh.aufs`, and whatever
 * is inside them) → 'skip'. As umoci and moby do, the typeflag does not matter.
 */
function classifyWhiteout(path: EntryPath, where: Where): LayerEntry<never> | 'skip' | undefined {
  const parts = entryPathParts(path);
  for (let i = 0; i < parts.length - 1; i++) {
    const p = parts[i] ?? '';
    if (p.startsWith('.wh..wh.')) return 'skip';
    if (p.startsWith('.wh.')) throw new TarFormatError(`a whiteout name ("${show(p as ByteString)}") is used as a directory`);
  }
  const { parent, name } = splitEntryPath(path);
  if (!name.startsWith('.wh.')) return undefined;
  if (name === '.wh..wh..opq') return { type: 'opaque', path: parent };
  if (name.startsWith('.wh..wh.')) return 'skip';
  const target = name.slice(4) as ByteString;
  if (target === '' || target === '.' || target === '..') {
    where.name = path;
    throw new TarFormatError(`whiteout "${show(name)}" names no file`);
  }
  return { type: 'whiteout', path: joinEntryPath(parent, target) };
}

function entryAttrs(h: TarHeader, pax: PaxFields): Attrs {
  const uid = pax.uid ?? h.uid;
  const gid = pax.gid ?? h.gid;
  if (uid < 0 || uid > MAX_ID) throw new TarFormatError(`uid ${uid} is out of range`);
  if (gid < 0 || gid > MAX_ID) throw new TarFormatError(`gid ${gid} is out of range`);
  return {
    mode: h.mode & 0o7777, // the type comes from the typeflag; some writers add S_IFxxx bits
    uid,
    gid,
    mtime: pax.mtime ?? { sec: h.mtime, nsec: 0 },
    xattrs: pax.xattrs,
  };
}

/** Skips an entry's `left` unread data bytes and the padding after its `dataSize` bytes. */
async function skipData(r: ByteReader, left: number, dataSize: number): Promise<void> {
  if (left > 0 && (await r.skip(left)) < left) throw new Truncated(`has fewer data bytes than its size ${dataSize}`);
  if (dataSize % BLOCK !== 0) await skipPadding(r, dataSize);
}

async function readBlock(r: ByteReader, what: string): Promise<Buffer> {
  const b = await r.readExact(BLOCK);
  if (b.length < BLOCK) throw new Truncated(`ends inside its ${what}`);
  return b;
}

async function readMeta(r: ByteReader, h: TarHeader, what: string): Promise<Buffer> {
  if (h.size > MAX_META_BYTES) throw new TarFormatError(`${what} of ${h.size} bytes is larger than ${MAX_META_BYTES} (refused)`);
  const data = await r.readExact(h.size);
  if (data.length < h.size) throw new Truncated(`ends inside its ${what}`);
  await skipPadding(r, h.size);
  return data;
}

async function skipPadding(r: ByteReader, size: number): Promise<void> {
  const pad = (BLOCK - (size % BLOCK)) % BLOCK;
  if ((await r.skip(pad)) < pad) throw new Truncated('ends inside the padding after its data');
}

function printable(flag: string): string {
  const c = flag.charCodeAt(0);
  return c >= 0x21 && c < 0x7f ? flag : `\\x${c.toString(16).padStart(2, '0')}`;
}

/**
 * A file entry's content, read straight from the tar stream. Once the reader
 * moves on (`finish`), reading it further is a programming error.
 */
class Body implements FileBody {
  readonly size: number;
  readonly chunks: AsyncIterable<Buffer>;
  #left: number;
  #state: 'open' | 'reading' | 'finished' = 'open';
  #iterated = false;

  constructor(
    private readonly r: ByteReader,
    where: Where,
    stored: number,
    sparse: { fragments: readonly SparseFragment[]; size: number } | undefined,
  ) {
    this.#left = stored;
    this.size = sparse?.size ?? stored;
    const name = where.name;
    const offset = where.offset;
    const truncated = (): InputError => truncatedError({ label: where.label, name, offset }, `has fewer data bytes than its size ${stored}`);
    const read = (n: number): AsyncGenerator<Buffer> => this.#read(n, truncated);
    const gen = sparse !== undefined ? expandSparse(sparse.fragments, sparse.size, read) : read(stored);
    this.chunks = {
      [Symbol.asyncIterator]: () => {
        if (this.#iterated) throw new Error('FileBody.chunks can be iterated only once');
        this.#iterated = true;
        return gen;
      },
    };
  }

  async *#read(n: number, truncated: () => InputError): AsyncGenerator<Buffer> {
    while (n > 0) {
      if (this.#state === 'finished') throw new Error('FileBody read after readLayerEntries moved to the next entry');
      this.#state = 'reading';
      const b = await this.r.readSome(n);
      this.#state = 'open';
      if (b === null) throw truncated();
      n -= b.length;
      this.#left -= b.length;
      yield b;
    }
  }

  /** Stops further reads; returns how many stored bytes are still unread (to skip). */
  finish(): number {
    if (this.#state === 'reading') throw new Error('readLayerEntries: next entry requested while a FileBody read is still pending');
    this.#state = 'finished';
    return this.#left;
  }
}
