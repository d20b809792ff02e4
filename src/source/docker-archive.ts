/**
 * `docker-archive:FILE[:NAME[:TAG]|:@N]` — a `docker save` tarball, classic
 * or Docker 25+ (OCI layout inside). NAME:TAG matches the archive's
 * RepoTags (compared in familiar form, so `docker.io/library/alpine:3` and
 * `alpine:3` are the same); @N is the 0-based position in manifest.json.
 * Without either the archive must hold one image.
 */
import { InputError } from '../errors.js';
import { type DockerArchiveSelector, familiarDockerName } from './docker-reference.js';
import { openDockerSave } from './docker-save.js';
import { ArchiveFiles, checkArchiveFile } from './files.js';
import { splitPathAndRest } from './reference-path.js';
import type { ImageReference, ImageSource, OpenOptions, Transport } from './source.js';
import { indexTarFile } from './tar-index.js';

export { type DockerArchiveSelector, familiarDockerName } from './docker-reference.js';

export class DockerArchiveReference implements ImageReference {
  readonly transport: Transport = dockerArchiveTransport;
  constructor(
    readonly path: string,
    readonly selector: DockerArchiveSelector = { kind: 'only' },
  ) {}

  withinTransport(): string {
    switch (this.selector.kind) {
      case 'only':
        return this.path;
      case 'index':
        return `${this.path}:@${this.selector.index}`;
      case 'name':
        return `${this.path}:${this.selector.name}`;
    }
  }

  toString(): string {
    return `${this.transport.name}:${this.withinTransport()}`;
  }

  async open(options: OpenOptions = {}): Promise<ImageSource> {
    const file = await checkArchiveFile(this.path, this.toString());
    const index = await indexTarFile(file, options.signal);
    return openDockerSave(new ArchiveFiles(index), this, this.selector, options);
  }
}

export const dockerArchiveTransport: Transport = {
  name: 'docker-archive',
  parse(rest: string): DockerArchiveReference {
    const { path, rest: sel } = splitPathAndRest(rest);
    const bad = (why: string): never => {
      throw new InputError(`invalid reference "docker-archive:${rest}": ${why}`);
    };
    if (path === '') bad('missing path');
    if (sel === undefined || sel === '') return new DockerArchiveReference(path);
    if (sel.startsWith('@')) {
      if (!/^@(?:0|[1-9][0-9]{0,8})$/.test(sel)) bad(`${JSON.stringify(sel)} is not @N (a 0-based image number)`);
      return new DockerArchiveReference(path, { kind: 'index', index: Number(sel.slice(1)) });
    }
    const familiar = familiarDockerName(sel);
    if (familiar === undefined) {
      bad(sel.includes('@') ? 'digest references are not supported, use NAME:TAG or @N' : `${JSON.stringify(sel)} is not a valid NAME[:TAG]`);
    }
    return new DockerArchiveReference(path, { kind: 'name', name: sel, familiar: familiar as string });
  },
};
