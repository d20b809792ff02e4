/**
 * The registry flags every command that takes a SOURCE shares (skopeo's
 * names): --creds, --authfile, --tls-verify, --cert-dir, and our
 * --registry-prefetch; and their mapping to the library's RegistryOptions.
 * The environment (REGISTRY_AUTH_FILE, DOCKER_CONFIG, HOME, PATH for
 * credential helpers; XDG_CONFIG_HOME and HOME for the per-user certs.d)
 * comes from `io.env`.
 */
import path from 'node:path';
import { type Command, Option } from 'commander';
import { UsageError } from '../errors.js';
import type { RegistryOptions } from '../source/registry/client.js';
import type { CliIO } from './io.js';

export interface RegistryFlags {
  creds?: string;
  authfile?: string;
  tlsVerify?: string;
  certDir?: string;
  registryPrefetch?: string;
}

/** Bounds of --registry-prefetch: each layer ahead is a temp file and a connection. */
export const MAX_REGISTRY_PREFETCH = 8;
export const DEFAULT_REGISTRY_PREFETCH = 3;

export function addRegistryOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--creds <user:password>', 'docker:// sources: registry credentials (default: auth files and credential helpers)'))
    .addOption(new Option('--authfile <file>', 'docker:// sources: auth file to use (default: $REGISTRY_AUTH_FILE, then $DOCKER_CONFIG/config.json or ~/.docker/config.json)'))
    .addOption(new Option('--tls-verify [bool]', 'docker:// sources: verify TLS certificates; false also allows plain HTTP (default: true)'))
    .addOption(
      new Option(
        '--cert-dir <dir>',
        'docker:// sources: directory of *.crt CA certificates (and *.cert/*.key client pair) (default: HOST[:PORT]/ under ~/.config/containers/certs.d, /etc/containers/certs.d, /etc/docker/certs.d…)',
      ),
    )
    .addOption(
      new Option('--registry-prefetch <n>', `docker:// sources: layers downloaded ahead of the one being read, 0-${MAX_REGISTRY_PREFETCH}; 0 fetches each layer when it is read (default: ${DEFAULT_REGISTRY_PREFETCH})`),
    );
}

function parseBool(v: string | boolean | undefined, flag: string): boolean | undefined {
  if (v === undefined) return undefined;
  if (v === true || v === 'true' || v === '1') return true;
  if (v === false || v === 'false' || v === '0') return false;
  throw new UsageError(`${flag} takes true or false, not ${JSON.stringify(v)}`);
}

function parsePrefetch(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) > MAX_REGISTRY_PREFETCH) {
    throw new UsageError(`--registry-prefetch takes a whole number from 0 to ${MAX_REGISTRY_PREFETCH}, not ${JSON.stringify(v)}`);
  }
  return Number(v);
}

/**
 * The certs.d roots containers/image searches for a `HOST[:PORT]` directory,
 * highest priority first (containers-certs.d(5)): the user's, then the
 * rootful or rootless system ones, /etc/containers/certs.d, the same under
 * /usr/share, and docker's /etc/docker/certs.d as the compatibility fallback.
 */
export function defaultCertDirRoots(env: Readonly<Record<string, string | undefined>>, uid: number): string[] {
  const roots: string[] = [];
  const xdg = env['XDG_CONFIG_HOME'];
  const home = env['HOME'];
  if (xdg !== undefined && xdg !== '') roots.push(path.join(xdg, 'containers', 'certs.d'));
  else if (home !== undefined && home !== '') roots.push(path.join(home, '.config', 'containers', 'certs.d'));
  const system = (base: string): string[] =>
    uid === 0 ? [`${base}/containers/certs.rootful.d`] : [`${base}/containers/certs.rootless.d/${uid}`, `${base}/containers/certs.rootless.d`];
  roots.push(...system('/etc'), '/etc/containers/certs.d', ...system('/usr/share'), '/usr/share/containers/certs.d', '/etc/docker/certs.d');
  return roots;
}

export function registryOptionsFrom(flags: RegistryFlags, io: CliIO, uid: number = process.getuid?.() ?? 0): RegistryOptions {
  const tlsVerify = parseBool(flags.tlsVerify as string | boolean | undefined, '--tls-verify');
  const prefetch = parsePrefetch(flags.registryPrefetch);
  return {
    ...(tlsVerify !== undefined ? { tlsVerify } : {}),
    ...(flags.certDir !== undefined ? { certDir: flags.certDir } : { certDirRoots: defaultCertDirRoots(io.env, uid) }),
    ...(prefetch !== undefined ? { prefetchLayers: prefetch } : {}),
    credentials: {
      env: io.env,
      ...(flags.creds !== undefined ? { creds: flags.creds } : {}),
      ...(flags.authfile !== undefined ? { authFile: flags.authfile } : {}),
    },
  };
}
