/**
 * `oci-archive:FILE[:TAG]` — an OCI image layout packed as a tar. The tar is
 * indexed (headers only) and blobs are read as byte ranges of the archive:
 * nothing is extracted.
 */
import { InputError } from '../errors.js';
import { ArchiveFiles, checkArchiveFile } from './files.js';
import { openLayoutImage } from './layout.js';
import { parsePathAndTag } from './reference-path.js';
import type { ImageReference, ImageSource, OpenOptions, Transport } from './source.js';
import { indexTarFile } from './tar-index.js';

export class OciArchiveReference implements ImageReference {
  readonly transport: Transport = ociArchiveTransport;
  constructor(
    readonly path: string,
    readonly tag: string | undefined = undefined,
  ) {}

  withinTransport(): string {
    return this.tag === undefined ? this.path : `${this.path}:${this.tag}`;
  }

  toString(): string {
    return `${this.transport.name}:${this.withinTransport()}`;
  }

  async open(options: OpenOptions = {}): Promise<ImageSource> {
    const file = await checkArchiveFile(this.path, this.toString());
    const index = await indexTarFile(file, options.signal);
    if (!index.has('oci-layout') && index.has('manifest.json')) {
      throw new InputError(`${this.toString()}: no oci-layout in the archive; it is a docker save archive, open it as docker-archive:`);
    }
    return openLayoutImage(new ArchiveFiles(index), this, this.tag, options);
  }
}

export const ociArchiveTransport: Transport = {
  name: 'oci-archive',
  parse(rest: string): OciArchiveReference {
    const { path: p, tag } = parsePathAndTag(rest, 'oci-archive');
    return new OciArchiveReference(p, tag);
  },
};
