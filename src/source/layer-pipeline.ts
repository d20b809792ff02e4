/**
 * The stages that turn a layer blob into its checked, uncompressed tar:
 *
 *   range read → size+digest check → decompress → diff_id check
 *
 * joined with stream.pipeline, so an error anywhere destroys every stage and
 * a consumer that stops early (destroy) closes the file descriptor. Used for
 * small blobs (layer.ts), and by the layer worker when node lacks what its
 * faster synchronous decoding needs (layer-worker.ts); so it takes only
 * cloneable data.
 */
import { pipeline, type Readable } from 'node:stream';
import type { Digest } from './digest.js';
import { createDecompressor, type SupportedCompression } from './decompress.js';
import { type FileRange, openRange } from './files.js';
import { createVerifier } from './verify.js';

/** Everything needed to open a layer's uncompressed stream: plain data, so it can cross to a worker. */
export interface LayerBlob {
  readonly range: FileRange;
  readonly digest: Digest;
  readonly size: number;
  readonly diffId: Digest;
  readonly compression: SupportedCompression;
  /** Names the layer in messages: `layer 1 sha256:…`. */
  readonly name: string;
}

export function openLayerPipeline(blob: LayerBlob): Readable {
  const stages: (Readable | NodeJS.ReadWriteStream)[] = [
    openRange(blob.range),
    createVerifier({ digest: blob.digest, size: blob.size, what: `${blob.name} (${blob.range.where})` }),
  ];
  if (blob.compression !== 'none') stages.push(createDecompressor(blob.compression, blob.name));
  // An uncompressed blob whose digest is its diff_id was just checked: don't hash it twice.
  if (blob.compression !== 'none' || blob.digest !== blob.diffId) {
    stages.push(createVerifier({ digest: blob.diffId, what: blob.name, kind: 'diff_id' }));
  }
  const out = stages[stages.length - 1] as Readable;
  // Errors reach the consumer through `out` (pipeline destroys every stage
  // with the first error); the callback only keeps pipeline from throwing.
  pipeline(stages, () => {});
  return out;
}
