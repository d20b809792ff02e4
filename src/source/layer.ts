/**
 * A layer whose blob is a byte range of a file (a layout's blob file or an
 * entry of a tar archive). `open()` builds a fresh pipeline each call:
 *
 *   range read → size+digest check → decompress → diff_id check → consumer
 *
 * joined with stream.pipeline, so an error anywhere destroys every stage and
 * a consumer that stops early (destroy) closes the file descriptor.
 */
import { pipeline, type Readable } from 'node:stream';
import type { Digest } from './digest.js';
import { createDecompressor, type SupportedCompression } from './decompress.js';
import { destroyOnAbort, type FileRange, openRange } from './files.js';
import type { Layer } from './source.js';
import { createVerifier } from './verify.js';

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

  open(signal?: AbortSignal): Readable {
    const name = `layer ${this.index} ${this.digest}`;
    const stages: (Readable | NodeJS.ReadWriteStream)[] = [
      openRange(this.range),
      createVerifier({ digest: this.digest, size: this.size, what: `${name} (${this.range.where})` }),
    ];
    if (this.compression !== 'none') stages.push(createDecompressor(this.compression, name));
    // An uncompressed blob whose digest is its diff_id was just checked: don't hash it twice.
    if (this.compression !== 'none' || this.digest !== this.diffId) {
      stages.push(createVerifier({ digest: this.diffId, what: name, kind: 'diff_id' }));
    }
    const out = stages[stages.length - 1] as Readable;
    // Errors reach the consumer through `out` (pipeline destroys every stage
    // with the first error); the callback only keeps pipeline from throwing.
    pipeline(stages, () => {});
    if (signal !== undefined) destroyOnAbort(out, signal);
    return out;
  }
}
