/**
 * The registry flags every command that takes a SOURCE shares (skopeo's
 * names): --creds, --authfile, --tls-verify, --cert-dir; and their mapping
 * to the library's RegistryOptions. The environment (REGISTRY_AUTH_FILE,
 * DOCKER_CONFIG, HOME, PATH for credential helpers) comes from `io.env`.
 */
import { type Command, Option } from 'commander';
import { UsageError } from '../errors.js';
import type { RegistryOptions } from '../source/registry/client.js';
import type { CliIO } from './io.js';

export interface RegistryFlags {
  creds?: string;
  authfile?: string;
  tlsVerify?: string;
  certDir?: string;
}

export function addRegistryOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--creds <user:password>', 'docker:// sources: registry credentials (default: auth files and credential helpers)'))
    .addOption(new Option('--authfile <file>', 'docker:// sources: auth file to use (default: $REGISTRY_AUTH_FILE, then $DOCKER_CONFIG/config.json or ~/.docker/config.json)'))
    .addOption(new Option('--tls-verify [bool]', 'docker:// sources: verify TLS certificates; false also allows plain HTTP (default: true)'))
    .addOption(new Option('--cert-dir <dir>', 'docker:// sources: directory of *.crt CA certificates (and *.cert/*.key client pair)'));
}

function parseBool(v: string | boolean | undefined, flag: string): boolean | undefined {
  if (v === undefined) return undefined;
  if (v === true || v === 'true' || v === '1') return true;
  if (v === false || v === 'false' || v === '0') return false;
  throw new UsageError(`${flag} takes true or false, not ${JSON.stringify(v)}`);
}

export function registryOptionsFrom(flags: RegistryFlags, io: CliIO): RegistryOptions {
  const tlsVerify = parseBool(flags.tlsVerify as string | boolean | undefined, '--tls-verify');
  return {
    ...(tlsVerify !== undefined ? { tlsVerify } : {}),
    ...(flags.certDir !== undefined ? { certDir: flags.certDir } : {}),
    credentials: {
      env: io.env,
      ...(flags.creds !== undefined ? { creds: flags.creds } : {}),
      ...(flags.authfile !== undefined ? { authFile: flags.authfile } : {}),
    },
  };
}
