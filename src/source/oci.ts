/**
 * `oci:DIR[:TAG]` — an OCI image layout directory. TAG matches the
 * `org.opencontainers.image.ref.name` annotation; without it the layout
 * must hold one image.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { InputError, NotFoundError } from '../errors.js';
import { DirectoryFiles } from './files.js';
import { openLayoutImage } from './layout.js';
import { parsePathAndTag } from './reference-path.js';
import type { ImageReference, ImageSource, OpenOptions, Transport } from './source.js';

export class OciLayoutReference implements ImageReference {
  readonly transport: Transport = ociTransport;
  constructor(
    /** As given (relative paths resolve against the working directory at open). */
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
    const dir = path.resolve(this.path);
    const st = await stat(dir).catch((e: unknown) => {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`${this.toString()}: no such directory ${dir}`);
      throw new InputError(`${this.toString()}: ${(e as Error).message}`, { cause: e });
    });
    if (!st.isDirectory()) throw new InputError(`${this.toString()}: ${dir} is not a directory (for a tar archive use oci-archive:)`);
    return openLayoutImage(new DirectoryFiles(dir), this, this.tag, options);
  }
}

export const ociTransport: Transport = {
  name: 'oci',
  parse(rest: string): OciLayoutReference {
    const { path: p, tag } = parsePathAndTag(rest, 'oci');
    return new OciLayoutReference(p, tag);
  },
};
