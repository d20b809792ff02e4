/**
 * A layer whose blob is a byte range of a file (a layout's blob file or an
 * entry of a tar archive). `open()` gives a fresh stream each call:
 *
 *   range read → size+digest check → decompress → diff_id check → consumer
 *
 * Blobs of OFF_THREAD_MIN_BYTES or more are read, checked and decompressed
 * on a worker thread (off-thread.ts), so that work overlaps the consumer's;
 * smaller ones go through the stream pipeline here (layer-pipeline.ts), where
 * starting a thread would cost more than the work. Both give the same bytes
 * and the same errors (off-thread.test.ts holds them to it).
 */
import type { Readable } from 'node:stream';
import type { Digest } from './digest.js';
import type { SupportedCompression } from './decompress.js';
import { destroyOnAbort, type FileRange } from './files.js';
import { type LayerBlob, openLayerPipeline } from './layer-pipeline.js';
import { openOffThread } from './off-thread.js';
import type { Layer } from './source.js';

/** Blobs at least this large are decompressed and hashed in a worker thread. */
export const OFF_THREAD_MIN_BYTES = 256 * 1024;

export interface FileLayerInit {
  readonly index: number;
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly diffId: Digest;
  readonly range: FileRange;
  /** Sniffed from the blob's first bytes when the source was opened. */
  readonly compression: SupportedCompression;
}

export class FileLayer implements Layer {
  readonly index: number;
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly diffId: Digest;
  readonly range: FileRange;
  readonly compression: SupportedCompression;

  constructor(init: FileLayerInit) {
    this.index = init.index;
    this.mediaType = init.mediaType;
    this.digest = init.digest;
    this.size = init.size;
    this.diffId = init.diffId;
    this.range = init.range;
    this.compression = init.compression;
  }

  get blob(): LayerBlob {
    return {
      range: this.range,
      digest: this.digest,
      size: this.size,
      diffId: this.diffId,
      compression: this.compression,
      name: `layer ${this.index} ${this.digest}`,
    };
  }

  open(signal?: AbortSignal): Readable {
    const out = this.size >= OFF_THREAD_MIN_BYTES ? openOffThread(this.blob) : openLayerPipeline(this.blob);
    if (signal !== undefined) destroyOnAbort(out, signal);
    return out;
  }
}
