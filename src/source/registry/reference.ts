/**
 * Docker image references as `docker://` takes them (skopeo's syntax, the
 * grammar of distribution/reference): `[HOST[:PORT]/]REPO[:TAG|@DIGEST]`,
 * normalised the way docker does it — no host means Docker Hub
 * (`docker.io`), a one-component Hub name gets `library/`, and no tag nor
 * digest means `:latest`. A first component is a host only when it has a
 * `.` or `:`, is `localhost`, or has upper case (splitDockerDomain).
 */
import { InputError } from '../../errors.js';
import { type Digest, parseDigest } from '../digest.js';

export const DOCKER_HUB_DOMAIN = 'docker.io';
/** Where Docker Hub's Distribution API actually answers. */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';
const LEGACY_HUB_DOMAIN = 'index.docker.io';

/** A DNS name or IPv4 (dotted labels), or a bracketed IPv6 literal, then an optional port. */
const DOMAIN_RE = /^(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?))*|\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9]+)?\])(?::[0-9]{1,5})?$/;
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
/** distribution/reference's NameTotalLengthMax. */
const NAME_MAX = 255;

/** What a reference points at: a tag (mutable) or a digest (pinned). */
export type RegistryTarget = { readonly kind: 'tag'; readonly tag: string } | { readonly kind: 'digest'; readonly digest: Digest };

export class DockerImageName {
  constructor(
    /** `docker.io`, `quay.io`, `127.0.0.1:5000`, `[::1]:5000` (as written, Docker Hub normalised). */
    readonly domain: string,
    /** The repository path within the registry: `library/alpine`, `org/app`. */
    readonly path: string,
    readonly target: RegistryTarget,
  ) {}

  /** The fully qualified form: `docker.io/library/alpine:latest`. */
  get fullName(): string {
    return `${this.domain}/${this.path}${this.suffix}`;
  }

  /** The short form docker prints (`alpine:latest`, `quay.io/x/y@sha256:…`); parses back to an equal name. */
  get familiar(): string {
    let name = `${this.domain}/${this.path}`;
    if (this.domain === DOCKER_HUB_DOMAIN) {
      name = this.path.startsWith('library/') && this.path.split('/').length === 2 ? this.path.slice('library/'.length) : this.path;
    }
    return `${name}${this.suffix}`;
  }

  /** The host:port to connect to (Docker Hub's API host for docker.io). */
  get apiHost(): string {
    return this.domain === DOCKER_HUB_DOMAIN ? DOCKER_HUB_API_HOST : this.domain;
  }

  /** `tag` or `sha256:…`, as it goes into `/v2/<name>/manifests/<ref>`. */
  get manifestRef(): string {
    return this.target.kind === 'tag' ? this.target.tag : this.target.digest;
  }

  private get suffix(): string {
    return this.target.kind === 'tag' ? `:${this.target.tag}` : `@${this.target.digest}`;
  }

  equals(o: DockerImageName): boolean {
    return this.fullName === o.fullName;
  }

  toString(): string {
    return this.fullName;
  }
}

/**
 * Parses `[HOST[:PORT]/]REPO[:TAG|@DIGEST]`. Throws InputError naming the
 * reference and what is wrong. A tag and a digest together are refused, as
 * containers/image refuses them (which one would be meant is ambiguous).
 */
export function parseDockerImageName(s: string): DockerImageName {
  const bad = (why: string): InputError => new InputError(`invalid docker reference ${JSON.stringify(s)}: ${why}`);
  if (s === '') throw bad('empty');
  let rest = s;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = rest.slice(at + 1);
    try {
      digest = parseDigest(d, 'digest');
    } catch {
      throw bad(`digest ${JSON.stringify(d)} is not sha256:<64 lowercase hex>`);
    }
    rest = rest.slice(0, at);
  }
  // A tag is after the last colon that follows the last slash (a colon before it is a port).
  let tag: string | undefined;
  const slash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > slash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw bad(`tag ${JSON.stringify(tag)} is not [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`);
  }
  if (tag !== undefined && digest !== undefined) throw bad('both a tag and a digest (give one)');

  const parts = rest.split('/');
  const head = parts[0] ?? '';
  let domain = DOCKER_HUB_DOMAIN;
  if (parts.length > 1 && (head.includes('.') || head.includes(':') || head === 'localhost' || head !== head.toLowerCase())) {
    if (!DOMAIN_RE.test(head)) throw bad(`${JSON.stringify(head)} is not a valid registry host[:port]`);
    const port = /:([0-9]+)$/.exec(head.endsWith(']') ? '' : head)?.[1];
    if (port !== undefined && Number(port) > 65535) throw bad(`port ${port} is out of range`);
    domain = head === LEGACY_HUB_DOMAIN ? DOCKER_HUB_DOMAIN : head;
    parts.shift();
  }
  if (parts.length === 0 || parts.some((p) => p === '')) throw bad('empty repository name component');
  for (const p of parts) {
    if (!PATH_COMPONENT_RE.test(p)) {
      throw bad(p !== p.toLowerCase() ? 'repository name must be lowercase' : `repository name component ${JSON.stringify(p)} is invalid`);
    }
  }
  if (domain === DOCKER_HUB_DOMAIN && parts.length === 1) parts.unshift('library');
  const path = parts.join('/');
  if (`${domain}/${path}`.length > NAME_MAX) throw bad(`repository name longer than ${NAME_MAX} characters`);
  const target: RegistryTarget = digest !== undefined ? { kind: 'digest', digest } : { kind: 'tag', tag: tag ?? 'latest' };
  return new DockerImageName(domain, path, target);
}
