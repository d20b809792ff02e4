/**
 * The block-device contract between the read path's views (chunk view,
 * copy-on-write overlay, a plain file) and whoever exposes them (the NBD
 * server, `cat`). Offsets and lengths are bytes; callers keep requests inside
 * `[0, size)` (`checkRange`), and a device may throw RangeError otherwise.
 *
 * Capabilities are explicit: `write`/`flush` exist only on devices that can
 * do them, and `readOnly` says whether a consumer may offer writes at all.
 */
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { InputError, NotFoundError, throwIfAborted } from '../errors.js';

export interface BlockDevice {
  /** Size in bytes; constant for the device's life. */
  readonly size: number;
  /** True when `write` must not be offered to clients (it may still be absent). */
  readonly readOnly: boolean;
  /** Exactly `length` bytes from `offset` (a fresh Buffer the caller may keep). */
  read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer>;
  /** Writes `data` at `offset`; resolved means later reads see it (not that it is durable). */
  write?(offset: number, data: Buffer, signal?: AbortSignal): Promise<void>;
  /** Makes every write resolved so far durable (as far as the device can). */
  flush?(): Promise<void>;
  /**
   * Optional: which parts of `[offset, offset + length)` are known to read as
   * zeros, without reading them. Runs cover the range exactly, in order,
   * with adjacent runs of the same kind merged; `zero: false` means "data,
   * or not known". Must be cheap (no chunk fetches): the NBD server answers
   * BLOCK_STATUS and sends READ holes from it, so clients can skip holes.
   */
  extents?(offset: number, length: number, signal?: AbortSignal): Promise<Extent[]>;
  /** Releases the device's resources; no call may follow. */
  close(): Promise<void>;
}

/** One run of a device's extents (see BlockDevice.extents). */
export interface Extent {
  readonly length: number;
  /** True: reads as all zeros (a hole). False: data, or unknown. */
  readonly zero: boolean;
}

/** Appends a run to `runs`, merging it into the last one when it is of the same kind; empty runs are dropped. */
export function pushExtent(runs: Extent[], length: number, zero: boolean): void {
  if (length <= 0) return;
  const last = runs[runs.length - 1];
  if (last !== undefined && last.zero === zero) runs[runs.length - 1] = { length: last.length + length, zero };
  else runs.push({ length, zero });
}

/** A device that accepts writes. */
export type WritableBlockDevice = BlockDevice & {
  readonly readOnly: false;
  write(offset: number, data: Buffer, signal?: AbortSignal): Promise<void>;
  flush(): Promise<void>;
};

export function isWritable(device: BlockDevice): device is WritableBlockDevice {
  return !device.readOnly && typeof device.write === 'function' && typeof device.flush === 'function';
}

/** Throws RangeError unless `[offset, offset + length)` lies inside a device of `size` bytes. */
export function checkRange(size: number, offset: number, length: number, what = 'device'): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new RangeError(`Cannot access ${length} bytes at offset ${offset} of ${what}: outside its ${size} bytes`);
  }
}

/** pread until `length` bytes are in `buf` at `bufOffset`; a short file reads as zeros past its end. */
export async function readFully(fh: FileHandle, buf: Buffer, bufOffset: number, length: number, position: number): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, bufOffset + done, length - done, position + done);
    if (bytesRead === 0) {
      buf.fill(0, bufOffset + done, bufOffset + length);
      return;
    }
    done += bytesRead;
  }
}

/** pwrite until all of `data` is written at `position`. */
export async function writeFully(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

export interface FileBlockDeviceOptions {
  /** Open read-write and offer `write`/`flush` (default: read-only). */
  readonly writable?: boolean;
}

/**
 * A plain file as a BlockDevice: for tests and for
 * comparing with `nbdkit file`. Its size is fixed at open; writes never grow it.
 */
export async function fileBlockDevice(path: string, options: FileBlockDeviceOptions = {}): Promise<BlockDevice> {
  const writable = options.writable === true;
  let fh: FileHandle;
  try {
    fh = await open(path, writable ? 'r+' : 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`${path}: no such file to serve as a block device`, { cause: e });
    throw e;
  }
  let size: number;
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new InputError(`${path}: not a regular file (only plain files are served by fileBlockDevice)`);
    size = st.size;
  } catch (e) {
    await fh.close();
    throw e;
  }
  const what = path;
  const read = async (offset: number, length: number, signal?: AbortSignal): Promise<Buffer> => {
    throwIfAborted(signal);
    checkRange(size, offset, length, what);
    const buf = Buffer.allocUnsafe(length);
    await readFully(fh, buf, 0, length, offset);
    return buf;
  };
  const close = (): Promise<void> => fh.close();
  if (!writable) return { size, readOnly: true, read, close };
  const device: WritableBlockDevice = {
    size,
    readOnly: false,
    read,
    async write(offset, data, signal) {
      throwIfAborted(signal);
      checkRange(size, offset, data.length, what);
      await writeFully(fh, data, offset);
    },
    flush: () => fh.datasync(),
    close,
  };
  return device;
}
