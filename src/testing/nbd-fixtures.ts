/**
 * Devices and a server harness for NBD tests. Test-only code.
 */
import path from 'node:path';
import { checkRange, pushExtent } from '../blockdev/device.js';
import type { BlockDevice, Extent } from '../blockdev/device.js';
import { NbdServer } from '../serve/nbd/server.js';
import type { NbdAddress, NbdErrorEvent, NbdExport, NbdListen, NbdServerOptions } from '../serve/nbd/server.js';
import { tmpDir } from './tools.js';
import type { TmpDir } from './tools.js';

/** A device over a Buffer; writable devices write into it. Counts reads. */
export function memoryDevice(bytes: Buffer, options: { writable?: boolean } = {}): BlockDevice & { reads: number } {
  const dev = {
    reads: 0,
    size: bytes.length,
    readOnly: options.writable !== true,
    async read(offset: number, length: number) {
      dev.reads++;
      checkRange(bytes.length, offset, length);
      return Buffer.from(bytes.subarray(offset, offset + length));
    },
    close: async () => {},
  };
  if (options.writable !== true) return dev;
  return Object.assign(dev, {
    async write(offset: number, data: Buffer) {
      checkRange(bytes.length, offset, data.length);
      data.copy(bytes, offset);
    },
    flush: async () => {},
  });
}

export interface HoleyDevice extends BlockDevice {
  /** read() calls so far. */
  reads: number;
  /** Bytes returned by read() so far. */
  bytesRead: number;
  /** extents() calls so far. */
  extentCalls: number;
}

/**
 * A read-only in-memory device with declared holes: `data` with every hole
 * zeroed, and (unless `extents: false`) an `extents` that reports the holes
 * as zero runs. Counts reads and bytes read, so tests can see holes skipped.
 */
export function holeyDevice(data: Buffer, holes: ReadonlyArray<{ readonly offset: number; readonly length: number }>, options: { extents?: boolean } = {}): HoleyDevice {
  const bytes = Buffer.from(data);
  const sorted = [...holes].sort((a, b) => a.offset - b.offset);
  for (const h of sorted) {
    checkRange(bytes.length, h.offset, h.length, 'the holey device');
    bytes.fill(0, h.offset, h.offset + h.length);
  }
  const dev: HoleyDevice = {
    reads: 0,
    bytesRead: 0,
    extentCalls: 0,
    size: bytes.length,
    readOnly: true,
    async read(offset: number, length: number) {
      checkRange(bytes.length, offset, length);
      dev.reads++;
      dev.bytesRead += length;
      return Buffer.from(bytes.subarray(offset, offset + length));
    },
    close: async () => {},
  };
  if (options.extents === false) return dev;
  dev.extents = async (offset: number, length: number): Promise<Extent[]> => {
    checkRange(bytes.length, offset, length);
    dev.extentCalls++;
    const end = offset + length;
    const out: Extent[] = [];
    let pos = offset;
    for (const h of sorted) {
      const from = Math.max(pos, h.offset);
      const to = Math.min(end, h.offset + h.length);
      if (to <= from) continue;
      pushExtent(out, from - pos, false);
      pushExtent(out, to - from, true);
      pos = to;
    }
    pushExtent(out, end - pos, false);
    return out;
  };
  return dev;
}

/**
 * Wraps a device so reads are held until `batch` of them have arrived, then
 * completed in reverse order of arrival (so replies must go out of order).
 */
export function reversingDevice(inner: BlockDevice, batch: number): BlockDevice {
  let held: Array<() => void> = [];
  return {
    size: inner.size,
    readOnly: true,
    read(offset, length, signal) {
      return new Promise<void>((resolve) => {
        held.push(resolve);
        if (held.length === batch) {
          const release = held.reverse();
          held = [];
          // One per macrotask, so each completion is written before the next one starts.
          release.forEach((r, i) => setTimeout(r, i));
        }
      }).then(() => inner.read(offset, length, signal));
    },
    close: () => inner.close(),
  };
}

/** A device whose reads wait until `release()` (or abort), for tests of in-flight behaviour. */
export function gatedDevice(inner: BlockDevice): BlockDevice & { release(): void; waiting: number; aborted: number } {
  let gate!: () => void;
  let opened = new Promise<void>((r) => (gate = r));
  const dev = {
    waiting: 0,
    aborted: 0,
    size: inner.size,
    readOnly: true,
    async read(offset: number, length: number, signal?: AbortSignal) {
      dev.waiting++;
      try {
        await new Promise<void>((resolve, reject) => {
          void opened.then(resolve);
          signal?.addEventListener('abort', () => {
            dev.aborted++;
            reject(new Error('aborted'));
          });
        });
      } finally {
        dev.waiting--;
      }
      return inner.read(offset, length, signal);
    },
    release() {
      gate();
      opened = Promise.resolve();
    },
    close: () => inner.close(),
  };
  return dev;
}

/** A device whose reads fail. */
export function failingDevice(size: number, message = 'backend exploded'): BlockDevice {
  return {
    size,
    readOnly: true,
    read: async () => {
      throw new Error(message);
    },
    close: async () => {},
  };
}

export interface ServerHarness {
  readonly server: NbdServer;
  readonly address: NbdAddress;
  readonly dir: TmpDir;
  readonly errors: NbdErrorEvent[];
  close(): Promise<void>;
}

/** An NbdServer on a unix socket in a fresh temp dir (or on `listen`), collecting onError events. */
export async function startServer(
  exports: Record<string, NbdExport>,
  options: Omit<NbdServerOptions, 'exports'> & { listen?: NbdListen } = {},
): Promise<ServerHarness> {
  const dir = await tmpDir('nbd');
  const errors: NbdErrorEvent[] = [];
  const { listen, ...rest } = options;
  const server = new NbdServer({
    exports,
    ...rest,
    onError: (e) => {
      errors.push(e);
      rest.onError?.(e);
    },
  });
  const address = await server.listen(listen ?? { unix: path.join(dir.path, 'nbd.sock') });
  return {
    server,
    address,
    dir,
    errors,
    close: async () => {
      await server.close();
      await dir.cleanup();
    },
  };
}
