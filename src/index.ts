/**
 * chunkyard's library API. The CLI (src/cli/) is a thin layer over this; the
 * library never touches argv, the console or process.exit.
 */
import { UsageError } from './errors.js';
import { buildToFile, checkChunkSize, type BuildOptions, type BuildSummary } from './build/build.js';
import { parseImageReference } from './source/transports.js';
import { parsePlatform } from './source/platform.js';

export * from './errors.js';
export type { BuildOptions, BuildSummary, BuildProgress, ShadowedData } from './build/build.js';
export { buildToSink, buildToFile, DEFAULT_CHUNK_SIZE } from './build/build.js';
export { parseImageReference } from './source/transports.js';
export type { ImageSource, ImageReference, Layer, Platform } from './source/source.js';

export interface BuildImageOptions extends Omit<BuildOptions, 'chunkSize'> {
  /** os/arch[/variant] @default 'linux/amd64' */
  readonly platform?: string;
  readonly chunkSize?: number;
}

/** Opens `source` (a transport reference or a path) and builds its ext4 image into `outPath`. */
export async function buildImage(source: string, outPath: string, options: BuildImageOptions = {}): Promise<BuildSummary> {
  let chunkSize: number | undefined;
  try {
    if (options.chunkSize !== undefined) chunkSize = checkChunkSize(options.chunkSize);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const ref = parseImageReference(source);
  const image = await ref.open({
    platform: parsePlatform(options.platform ?? 'linux/amd64'),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  try {
    const { platform: _p, ...rest } = options;
    return await buildToFile(image, outPath, { ...rest, ...(chunkSize !== undefined ? { chunkSize } : {}) });
  } finally {
    await image.close();
  }
}
