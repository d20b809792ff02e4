/**
 * Devices and a server harness for NBD tests. Test-only code.
 */
import path from 'node:path';
import { checkRange } from '../blockdev/device.js';
import type { BlockDevice } from '../blockdev/device.js';
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
