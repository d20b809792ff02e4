/**
 * The files of an image layout or archive, whether they sit in a directory
 * or inside a tar: each is a byte range of some file on disk. Readers open a
 * fresh range stream per read, so a source holds no descriptors between
 * reads and nothing is ever extracted.
 */
import type { FileHandle } from 'node:fs/promises';
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { InputError, InterruptedError, NotFoundError, throwIfAborted } from '../errors.js';
import { type Digest, Digester } from './digest.js';
import { normalizeArchivePath, type TarIndex } from './tar-index.js';

/** `length` bytes of `file` starting at `start`. */
export interface FileRange {
  readonly file: string;
  readonly start: number;
  readonly size: number;
  /** For messages: `/dir/blobs/sha256/…` or `archive.tar:blobs/sha256/…`. */
  readonly where: string;
}

/** Read-only lookup of files by their path relative to the layout/archive root. */
export interface FileSet {
  /** The directory or archive, for messages. */
  readonly location: string;
  /** Undefined when absent. `name` is a relative `/`-separated path. */
  locate(name: string): Promise<FileRange | undefined>;
}

/** Resolves and stats an archive path; NotFoundError / InputError naming `ref`. */
export async function checkArchiveFile(file: string, ref: string): Promise<string> {
  const abs = path.resolve(file);
  const st = await stat(abs).catch((e: unknown) => {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`${ref}: no such file ${abs}`);
    throw new InputError(`${ref}: ${(e as Error).message}`, { cause: e });
  });
  if (!st.isFile()) throw new InputError(`${ref}: ${abs} is not a regular file${st.isDirectory() ? ' (for a layout directory use oci:)' : ''}`);
  return abs;
}

export class DirectoryFiles implements FileSet {
  constructor(readonly location: string) {}

  async locate(name: string): Promise<FileRange | undefined> {
    const rel = normalizeArchivePath(name);
    if (rel === undefined) return undefined;
    const file = path.join(this.location, ...rel.split('/'));
    let st;
    try {
      st = await stat(file);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw new InputError(`${file}: ${(e as Error).message}`, { cause: e });
    }
    if (!st.isFile()) throw new InputError(`${file}: not a regular file`);
    return { file, start: 0, size: st.size, where: file };
  }
}

export class ArchiveFiles implements FileSet {
  readonly location: string;
  constructor(readonly index: TarIndex) {
    this.location = index.archive;
  }

  async locate(name: string): Promise<FileRange | undefined> {
    const data = this.index.resolve(name);
    if (data === undefined) return undefined;
    return { file: this.index.archive, start: data.offset, size: data.size, where: `${this.index.archive}:${data.name}` };
  }
}

/** A filesystem error while reading `where`, as NotFoundError (gone) or InputError. */
export function fsError(e: unknown, where: string): Error {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new NotFoundError(`${where}: no such file (removed while reading?)`, { cause: e });
  return new InputError(`${where}: ${(e as Error).message}`, { cause: e });
}

/**
 * A Readable of the range's bytes. If the file is shorter than the range
 * the stream just ends early; the verifier downstream reports the short
 * size. The descriptor is closed on end, error or destroy (FileHandle.close
 * waits for an in-flight read).
 */
class RangeReadStream extends Readable {
  readonly #range: FileRange;
  #fh: FileHandle | undefined;
  #pos: number;
  readonly #end: number;

  constructor(range: FileRange, highWaterMark: number) {
    super({ highWaterMark });
    this.#range = range;
    this.#pos = range.start;
    this.#end = range.start + range.size;
  }

  override _construct(cb: (error?: Error | null) => void): void {
    open(this.#range.file, 'r').then(
      (fh) => {
        this.#fh = fh;
        cb();
      },
      (e: unknown) => cb(fsError(e, this.#range.where)),
    );
  }

  override _read(n: number): void {
    const fh = this.#fh;
    const len = Math.min(n, this.#end - this.#pos);
    if (fh === undefined || len <= 0) {
      this.push(null);
      return;
    }
    const buf = Buffer.allocUnsafe(len);
    fh.read(buf, 0, len, this.#pos).then(
      ({ bytesRead }) => {
        if (bytesRead === 0) {
          this.push(null);
          return;
        }
        this.#pos += bytesRead;
        this.push(bytesRead < len ? buf.subarray(0, bytesRead) : buf);
      },
      (e: unknown) => this.destroy(fsError(e, this.#range.where)),
    );
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    const fh = this.#fh;
    this.#fh = undefined;
    if (fh === undefined) cb(err);
    else fh.close().then(() => cb(err), () => cb(err));
  }
}

export interface RangeStreamOptions {
  readonly signal?: AbortSignal;
  /** Read size; default 1 MiB. */
  readonly highWaterMark?: number;
}

/** A fresh stream of the range; aborting `signal` destroys it with InterruptedError. */
export function openRange(range: FileRange, options: RangeStreamOptions = {}): Readable {
  const s = new RangeReadStream(range, options.highWaterMark ?? 1024 * 1024);
  if (options.signal !== undefined) destroyOnAbort(s, options.signal);
  return s;
}

/** Destroy `stream` with InterruptedError when `signal` aborts (also if already aborted). */
export function destroyOnAbort(stream: Readable, signal: AbortSignal): void {
  const onAbort = (): void => {
    stream.destroy(new InterruptedError('interrupted'));
  };
  if (signal.aborted) {
    process.nextTick(onAbort);
    return;
  }
  signal.addEventListener('abort', onAbort, { once: true });
  stream.once('close', () => signal.removeEventListener('abort', onAbort));
}

async function withHandle<T>(range: FileRange, fn: (fh: FileHandle) => Promise<T>): Promise<T> {
  let fh: FileHandle;
  try {
    fh = await open(range.file, 'r');
  } catch (e) {
    throw fsError(e, range.where);
  }
  try {
    return await fn(fh);
  } finally {
    await fh.close();
  }
}

/** Reads up to `length` bytes from `range` at `offset` (fewer at its end). */
export function readAt(range: FileRange, offset: number, length: number): Promise<Buffer> {
  const len = Math.max(0, Math.min(length, range.size - offset));
  return withHandle(range, async (fh) => {
    const buf = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const { bytesRead } = await fh.read(buf, got, len - got, range.start + offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return buf.subarray(0, got);
  });
}

/** The whole range in memory; refuses ranges larger than `max` (an InputError naming `what`). */
export async function readWhole(range: FileRange, max: number, what: string): Promise<Buffer> {
  if (range.size > max) throw new InputError(`${what} (${range.where}) is ${range.size} bytes, more than the ${max} allowed`);
  return readAt(range, 0, range.size);
}

/** sha256 of the range's bytes, streamed. */
export async function hashRange(range: FileRange, signal?: AbortSignal): Promise<Digest> {
  const d = new Digester();
  for await (const chunk of openRange(range, signal === undefined ? {} : { signal })) d.update(chunk as Buffer);
  throwIfAborted(signal);
  return d.digest();
}
