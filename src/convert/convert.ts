import type { KeyObject } from 'node:crypto';
import { DEFAULT_CHUNK_SIZE, type BuildSummary, type ShadowedData } from '../build/build.js';
import type { ChunkId } from '../chunks/id.js';
import { createSealer } from '../chunks/pool.js';
import type { ChunkRef } from '../chunks/seal.js';
import { throwIfAborted } from '../errors.js';
import type { Keys } from '../keys/keys.js';
import { describeImage } from '../manifest/from-image.js';
import { sealManifest } from '../manifest/seal.js';
import { signManifest } from '../manifest/sign.js';
import type { ImageSource } from '../source/source.js';
import type { Store } from '../store/store.js';
import { publish } from '../store/upload.js';
import { VERSION } from '../version.js';
import { chunkImage } from './image-chunks.js';
import { Presence } from './presence.js';

/** What one image adds to a store, chunk by chunk (same numbers for convert and its dry run). */
export interface ChunkCounts {
  /** All chunks of the image, holes included. */
  readonly total: number;
  /** All-zero chunks: holes, never stored. */
  readonly zero: number;
  /** Already in the store (or uploaded by an earlier image of the same run). */
  readonly existing: number;
  /** Equal to an earlier chunk of the same image. */
  readonly duplicate: number;
  /** Uploaded (or, dry, to upload). */
  readonly new: number;
}

export interface ByteCounts {
  readonly total: number;
  readonly zero: number;
  readonly existing: number;
  readonly duplicate: number;
  readonly new: number;
}

export interface RequestTally {
  readonly put: number;
  readonly head: number;
  readonly list: number;
  readonly get: number;
}

export interface ImageReport {
  readonly source: string;
  readonly chunkSize: number;
  readonly imageBytes: number;
  readonly chunks: ChunkCounts;
  readonly bytes: ByteCounts;
  /** Requests made (convert) or that a convert would make (stats): presence checks, chunk and manifest PUTs. */
  readonly requests: RequestTally;
  readonly presence: Presence['strategy'] | 'none';
  readonly build: BuildSummary;
}

export interface ConvertResult extends ImageReport {
  /** `sha256:…` of the manifest: usable as REF. */
  readonly manifest: string;
  readonly tag?: string;
  readonly manifestBytes: number;
  readonly signed: boolean;
}

export interface ConvertOptions {
  readonly store?: Store;
  readonly keys: Keys;
  readonly tag?: string;
  readonly chunkSize?: number;
  readonly shadowed?: ShadowedData;
  readonly headroom?: number;
  readonly signingKey?: KeyObject;
  /** Chunks in flight (sealing and uploading). @default 8 */
  readonly concurrency?: number;
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: { readonly chunks: number; readonly newBytes: number }) => void;
}

interface Tally {
  total: number;
  zero: number;
  existing: number;
  duplicate: number;
  new: number;
  puts: number;
}

/**
 * Streams the image through build → chunk → seal, asks the store which
 * chunks it lacks and (unless dry) uploads those. `pending` carries chunk
 * names that earlier images of the same run add, so a dry run over several
 * images counts cumulatively, as the real converts would.
 */
async function chunkAndUpload(
  image: ImageSource,
  options: ConvertOptions,
  mode: { readonly dry: boolean; readonly pending: Set<ChunkId>; readonly askStore?: boolean },
): Promise<{ report: Omit<ImageReport, 'requests'> & { puts: number }; refs: (ChunkRef | null)[] }> {
  const { keys, signal } = options;
  const store = options.store;
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  // A rough count of distinct chunks (gzip layers expand ~3x): only a budget for listing the store.
  const expected = Math.ceil((image.layers.reduce((n, l) => n + l.size, 0) * 3) / chunkSize) + 1;
  const presence = mode.askStore === false ? undefined : await Presence.create(store!, expected, signal);
  const sealer = createSealer(keys.salt);
  const refs: (ChunkRef | null)[] = [];
  const seen = new Set<ChunkId>();
  const t: Tally = { total: 0, zero: 0, existing: 0, duplicate: 0, new: 0, puts: 0 };
  let release: ((b: Buffer) => void) | undefined;
  try {
    const { build, chunking } = await chunkImage(
      image,
      {
        chunkSize,
        maxInFlight: options.concurrency ?? 8,
        ...(options.shadowed !== undefined ? { shadowed: options.shadowed } : {}),
        ...(options.headroom !== undefined ? { headroom: options.headroom } : {}),
        ...(signal ? { signal } : {}),
      },
      async (index, data) => {
        t.total++;
        if (data === null) {
          refs[index] = null;
          t.zero++;
          return;
        }
        const sealed = await sealer.seal(index, data);
        release?.(sealed.plain);
        refs[index] = { id: sealed.id, key: sealed.key };
        if (seen.has(sealed.id)) {
          t.duplicate++;
          return;
        }
        seen.add(sealed.id);
        if (mode.pending.has(sealed.id)) {
          t.existing++;
          return;
        }
        if (!presence) return;
        const { present } = await presence.has(sealed.id, signal);
        if (present) {
          t.existing++;
          return;
        }
        t.new++;
        mode.pending.add(sealed.id);
        if (!mode.dry) {
          // Presence already asked: write without another HEAD.
          await store!.put(sealed.id, sealed.ciphertext, { check: 'none', ...(signal ? { signal } : {}) });
        }
        t.puts++;
        options.onProgress?.({ chunks: t.total, newBytes: t.new * chunkSize });
      },
      (sink) => {
        release = (b) => sink.release(b);
      },
    );
    throwIfAborted(signal);
    for (let i = 0; i < chunking.chunks; i++) if (refs[i] === undefined) refs[i] = null;
    const bytes = (n: number): number => n * chunkSize;
    return {
      refs,
      report: {
        source: image.reference.toString(),
        chunkSize,
        imageBytes: build.imageBytes,
        chunks: { total: t.total, zero: t.zero, existing: t.existing, duplicate: t.duplicate, new: t.new },
        bytes: { total: bytes(t.total), zero: bytes(t.zero), existing: bytes(t.existing), duplicate: bytes(t.duplicate), new: bytes(t.new) },
        presence: presence?.strategy ?? 'none',
        build,
        puts: t.puts,
      },
    };
  } finally {
    await sealer.close();
  }
}

function manifestFor(image: ImageSource, build: BuildSummary, keys: Keys, refs: readonly (ChunkRef | null)[], signingKey?: KeyObject): Buffer {
  const { source, runtime } = describeImage(image);
  const bytes = sealManifest(
    {
      createdBy: `chunkyard ${VERSION}`,
      source,
      runtime,
      filesystem: { type: 'ext4', size: build.imageBytes, blockSize: build.blockSize, uuid: build.uuid },
      chunkSize: build.chunkSize,
      saltEpoch: keys.salt.epoch,
    },
    refs,
    keys.manifestKey,
  );
  return signingKey ? signManifest(bytes, signingKey) : bytes;
}

/**
 * Converts an image into a store: uploads the chunks the store lacks, then
 * the manifest (only after every chunk it names is durable), then the tag.
 */
export async function convertImage(image: ImageSource, options: ConvertOptions & { readonly store: Store }): Promise<ConvertResult> {
  const before = options.store.requestCounts();
  const { report, refs } = await chunkAndUpload(image, options, { dry: false, pending: new Set() });
  const bytes = manifestFor(image, report.build, options.keys, refs, options.signingKey);
  const digest = await publish(options.store, bytes, options.tag, options.signal ? { signal: options.signal } : {});
  const after = options.store.requestCounts();
  const { puts: _puts, ...rest } = report;
  return {
    ...rest,
    requests: { put: after.put - before.put, head: after.head - before.head, list: after.list - before.list, get: after.get - before.get },
    manifest: digest,
    ...(options.tag !== undefined ? { tag: options.tag } : {}),
    manifestBytes: bytes.length,
    signed: options.signingKey !== undefined,
  };
}

/** Prices for the dry-run cost estimate (S3 Standard, us-east-1, USD). */
export interface Prices {
  /** Per 1000 PUT/LIST requests. @default 0.005 */
  readonly putPer1000: number;
  /** Per 1000 GET/HEAD requests. @default 0.0004 */
  readonly getPer1000: number;
  /** Per GB-month stored. @default 0.023 */
  readonly storagePerGbMonth: number;
}

export const S3_STANDARD_PRICES: Prices = { putPer1000: 0.005, getPer1000: 0.0004, storagePerGbMonth: 0.023 };

export interface StatsReport {
  readonly images: readonly (ImageReport & { readonly cost: Cost })[];
  readonly total: { readonly chunks: ChunkCounts; readonly bytes: ByteCounts; readonly requests: RequestTally; readonly cost: Cost };
}

export interface Cost {
  /** One-off request cost of the conversion. */
  readonly requests: number;
  /** Monthly storage of the new bytes. */
  readonly storagePerMonth: number;
}

/**
 * The dry run: what converting `images` in order into the store would upload,
 * without writing anything. Each image counts the chunks earlier images of
 * the list would have added as existing.
 */
export async function statsImages(
  images: readonly ImageSource[],
  options: Omit<ConvertOptions, 'tag' | 'signingKey' | 'onProgress'> & { readonly store: Store; readonly prices?: Prices },
): Promise<StatsReport> {
  const prices = options.prices ?? S3_STANDARD_PRICES;
  const pending = new Set<ChunkId>();
  const reports: (ImageReport & { cost: Cost })[] = [];
  for (const image of images) {
    const before = options.store.requestCounts();
    const { report } = await chunkAndUpload(image, options, { dry: true, pending });
    const after = options.store.requestCounts();
    // What the convert would do on top of the presence checks: one PUT per new chunk, the manifest and a tag.
    const requests: RequestTally = {
      put: report.puts + 2,
      head: after.head - before.head,
      list: after.list - before.list,
      get: after.get - before.get,
    };
    const { puts: _p, ...rest } = report;
    reports.push({ ...rest, requests, cost: costOf(requests, rest.bytes.new, prices) });
  }
  const sum = <K extends string>(pick: (r: ImageReport) => Record<K, number>): Record<K, number> => {
    const out = {} as Record<K, number>;
    for (const r of reports) for (const [k, v] of Object.entries(pick(r)) as [K, number][]) out[k] = (out[k] ?? 0) + v;
    return out;
  };
  const chunks = sum((r) => ({ ...r.chunks })) as unknown as ChunkCounts;
  const bytes = sum((r) => ({ ...r.bytes })) as unknown as ByteCounts;
  const requests = sum((r) => ({ ...r.requests })) as unknown as RequestTally;
  return { images: reports, total: { chunks, bytes, requests, cost: costOf(requests, bytes.new, prices) } };
}

function costOf(r: RequestTally, newBytes: number, p: Prices): Cost {
  const requests = ((r.put + r.list) * p.putPer1000 + (r.head + r.get) * p.getPer1000) / 1000;
  return { requests, storagePerMonth: (newBytes / 1e9) * p.storagePerGbMonth };
}

/**
 * The (unsigned) manifest a convert of `image` with these keys would publish,
 * computed without a store: what `verify --rebuild` compares against.
 */
export async function manifestFromImage(
  image: ImageSource,
  options: Omit<ConvertOptions, 'store' | 'tag' | 'signingKey'>,
): Promise<Buffer> {
  const { report, refs } = await chunkAndUpload(image, options, { dry: true, pending: new Set(), askStore: false });
  return manifestFor(image, report.build, options.keys, refs);
}
