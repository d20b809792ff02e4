import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chunkFile, ChunkingSink, type ChunkConsumer, type ChunkingSummary } from '../chunks/chunker.js';
import { buildToFile, buildToSink, type BuildOptions, type BuildSummary } from '../build/build.js';
import type { ImageSource } from '../source/source.js';

export interface ImageChunks {
  readonly build: BuildSummary;
  readonly chunking: ChunkingSummary;
}

/**
 * Builds the image and hands it to `consumer` chunk by chunk. With the
 * default `--shadowed keep` the chunks stream straight from the builder; the
 * `zero` mode rewrites data behind the stream, so it goes through a temporary
 * image file first.
 */
export async function chunkImage(
  image: ImageSource,
  options: BuildOptions & { readonly chunkSize: number; readonly maxInFlight?: number },
  consumer: ChunkConsumer,
  release?: (sink: { release(b: Buffer): void }) => void,
): Promise<ImageChunks> {
  const chunkOpts = {
    ...(options.maxInFlight !== undefined ? { maxInFlight: options.maxInFlight } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  };
  if ((options.shadowed ?? 'keep') === 'keep') {
    const sink = new ChunkingSink(options.chunkSize, consumer, chunkOpts);
    release?.(sink);
    const build = await buildToSink(image, sink, options);
    return { build, chunking: sink.summary! };
  }
  const dir = await mkdtemp(join(tmpdir(), 'chunkyard-convert-'));
  try {
    const file = join(dir, 'image.ext4');
    const build = await buildToFile(image, file, options);
    const chunking = await chunkFile(file, options.chunkSize, consumer, chunkOpts);
    return { build, chunking };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
