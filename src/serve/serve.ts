/**
 * `serve`: a published image as an NBD export, its chunks loaded on demand
 * through the read path (published.ts). Read-only unless `writable`, which
 * puts a private copy-on-write overlay in front (as the paper's workers
 * have): writes stay local and vanish with the server.
 */
import type { BlockDevice } from '../blockdev/device.js';
import { cowOverlay } from '../blockdev/overlay.js';
import type { PrefetchHandle, PrefetchResult } from '../blockdev/view.js';
import { LatencyHistogram, latencySnapshot, type LatencySnapshot, type MetricsSnapshot } from '../cache/metrics.js';
import { NbdServer, type NbdAddress, type NbdErrorEvent, type NbdListen } from './nbd/server.js';
import { nbdUri } from './nbd/uri.js';
import { openPublished, type OpenPublishedOptions, type PublishedImage } from './published.js';

export interface ServeOptions extends OpenPublishedOptions {
  readonly listen: NbdListen;
  /** @default '' (the default export) */
  readonly exportName?: string;
  /** A local copy-on-write overlay whose scratch file lives in `dir`. */
  readonly writable?: { readonly dir: string };
  /** Write the order in which chunks were first read to this file at close. */
  readonly recordTrace?: string;
  /** Warm the chunks of this trace, in order, behind demand reads. */
  readonly prefetch?: string;
  /** Chunks prefetched at once. @default 4 */
  readonly prefetchConcurrency?: number;
  readonly onError?: (event: NbdErrorEvent) => void;
}

export interface ServeSnapshot extends MetricsSnapshot {
  /** Latency of NBD requests, from header read to reply queued. */
  readonly nbd: { readonly requests: number; readonly errors: number; readonly latency: LatencySnapshot };
  readonly prefetch?: ReturnType<PrefetchHandle['progress']>;
}

export interface ServeHandle {
  readonly image: PublishedImage;
  readonly address: NbdAddress;
  /** An NBD URI clients take (`nbd+unix:///?socket=…`, `nbd://127.0.0.1:10809/`). */
  readonly uri: string;
  readonly exportName: string;
  readonly size: number;
  readonly readOnly: boolean;
  /** Settles when a prefetch given in the options ends (undefined without one). */
  readonly prefetched: Promise<PrefetchResult> | undefined;
  snapshot(): ServeSnapshot;
  /** Stops serving (in-flight requests finish), writes the trace, closes everything. */
  close(): Promise<void>;
}

export async function serveImage(options: ServeOptions): Promise<ServeHandle> {
  const image = await openPublished(options);
  const { view } = image;
  let device: BlockDevice | undefined;
  let server: NbdServer | undefined;
  let prefetch: PrefetchHandle | undefined;
  const nbd = { requests: 0, errors: 0, latency: new LatencyHistogram() };
  try {
    if (options.recordTrace !== undefined) view.recordTrace();
    // Read the trace before serving: a bad trace file should stop the start, not a running server.
    const trace = options.prefetch !== undefined ? await view.readTrace(options.prefetch) : undefined;
    device = options.writable ? await cowOverlay(view, { dir: options.writable.dir }) : view;
    const exportName = options.exportName ?? '';
    server = new NbdServer({
      exports: { [exportName]: { device, description: `chunkyard ${image.ref} (${image.digest})` } },
      preferredBlockSize: image.header.chunks.size,
      ...(options.onError ? { onError: options.onError } : {}),
      onRequest: (e) => {
        nbd.requests++;
        if (e.error !== 0) nbd.errors++;
        nbd.latency.record(e.micros);
      },
    });
    const address = await server.listen(options.listen);
    if (trace !== undefined) {
      prefetch = view.prefetch(trace, { ...(options.prefetchConcurrency !== undefined ? { concurrency: options.prefetchConcurrency } : {}) });
    }
    let closing: Promise<void> | undefined;
    const srv = server;
    const dev = device;
    const pf = prefetch;
    return {
      image,
      address,
      uri: nbdUri(address, exportName),
      exportName,
      size: dev.size,
      readOnly: dev.readOnly,
      prefetched: pf?.done,
      snapshot: () => ({
        ...image.snapshot(),
        nbd: { requests: nbd.requests, errors: nbd.errors, latency: latencySnapshot(nbd.latency) },
        ...(pf ? { prefetch: pf.progress() } : {}),
      }),
      close: () =>
        (closing ??= (async () => {
          pf?.stop();
          await srv.close();
          if (dev !== view) await dev.close();
          if (options.recordTrace !== undefined) await view.writeTrace(options.recordTrace);
          await image.close();
        })()),
    };
  } catch (e) {
    prefetch?.stop();
    await server?.close();
    if (device !== undefined && device !== view) await device.close().catch(() => {});
    await image.close();
    throw e;
  }
}

