/**
 * Docker image names as `docker-archive:` uses them: which image of an
 * archive a reference selects, and the familiar form `docker save` writes
 * in RepoTags.
 */

/** Which image of a docker-archive. */
export type DockerArchiveSelector =
  | { readonly kind: 'only' }
  | { readonly kind: 'index'; readonly index: number }
  /** `name` as written; `familiar` is what is compared with RepoTags. */
  | { readonly kind: 'name'; readonly name: string; readonly familiar: string };

const DOMAIN_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?$/;
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/**
 * `[domain/]path[:tag]` → its familiar form with a tag (`alpine:latest`,
 * `quay.io/x/y:1`), as `docker save` writes RepoTags. Undefined when it is
 * not a valid tagged-or-taggable docker reference (digests are refused).
 * The first component is a domain when it has a `.` or `:`, is `localhost`,
 * or has upper case (docker's splitDockerDomain rule).
 */
export function familiarDockerName(ref: string): string | undefined {
  if (ref.includes('@')) return undefined;
  const slash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  const [name, tag] = colon > slash ? [ref.slice(0, colon), ref.slice(colon + 1)] : [ref, 'latest'];
  if (!TAG_RE.test(tag)) return undefined;
  const parts = name.split('/');
  let domain: string | undefined;
  const head = parts[0] ?? '';
  if (parts.length > 1 && (head.includes('.') || head.includes(':') || head === 'localhost' || head !== head.toLowerCase())) {
    if (!DOMAIN_RE.test(head)) return undefined;
    domain = head;
    parts.shift();
  }
  if (parts.length === 0 || !parts.every((c) => PATH_COMPONENT_RE.test(c))) return undefined;
  if (domain === 'docker.io' || domain === 'index.docker.io') domain = undefined;
  if (domain === undefined && parts.length === 2 && parts[0] === 'library') parts.shift();
  return `${domain !== undefined ? `${domain}/` : ''}${parts.join('/')}:${tag}`;
}
