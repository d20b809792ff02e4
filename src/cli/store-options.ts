import { Command, Option } from 'commander';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { loadKeys, type Keys } from '../keys/keys.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import type { CliIO } from './io.js';

/** Where keys and the local store live when no flag or variable says otherwise (XDG base dirs). */
export function defaultKeyFile(env: CliIO['env']): string {
  return join(env['XDG_CONFIG_HOME'] || join(env['HOME'] || homedir(), '.config'), 'chunkyard', 'key.json');
}

export function defaultStoreUrl(env: CliIO['env']): string {
  if (env['CHUNKYARD_STORE']) return env['CHUNKYARD_STORE'];
  return `file://${join(env['XDG_DATA_HOME'] || join(env['HOME'] || homedir(), '.local', 'share'), 'chunkyard', 'store')}`;
}

export interface StoreFlags {
  store?: string;
  endpoint?: string;
  region?: string;
  pathStyle?: boolean;
}

export interface KeyFlags {
  keyFile?: string;
}

export function addStoreOptions(cmd: Command): Command {
  return cmd
    .option('--store <url>', 'chunk store: file://DIR, DIR or s3://BUCKET/PREFIX (default: $CHUNKYARD_STORE or ~/.local/share/chunkyard/store)')
    .option('--endpoint <url>', 'S3-compatible endpoint (s3:// stores)')
    .option('--region <region>', 'S3 region (s3:// stores)')
    .addOption(new Option('--path-style', 'path-style S3 addressing (default with --endpoint)'));
}

export function addKeyOption(cmd: Command): Command {
  return cmd.option('--key-file <file>', 'key file from `chunkyard keygen` (default: $CHUNKYARD_KEY, then ~/.config/chunkyard/key.json)');
}

export async function storeFrom(flags: StoreFlags, io: CliIO): Promise<Store> {
  return openStore(flags.store ?? defaultStoreUrl(io.env), {
    ...(flags.endpoint !== undefined ? { endpoint: flags.endpoint } : {}),
    ...(flags.region !== undefined ? { region: flags.region } : {}),
    ...(flags.pathStyle !== undefined ? { forcePathStyle: flags.pathStyle } : {}),
    signal: io.signal,
  });
}

/** --key-file, else CHUNKYARD_KEY, else the default key file if it exists. */
export async function keysFrom(flags: KeyFlags, io: CliIO): Promise<Keys> {
  const fallback = defaultKeyFile(io.env);
  const file = flags.keyFile ?? (io.env['CHUNKYARD_KEY'] ? undefined : existsSync(fallback) ? fallback : undefined);
  return loadKeys({ file, env: io.env['CHUNKYARD_KEY'] });
}

/** Keys if any source gives them, else undefined (verify works without a key). */
export async function optionalKeysFrom(flags: KeyFlags, io: CliIO): Promise<Keys | undefined> {
  if (flags.keyFile === undefined && !io.env['CHUNKYARD_KEY'] && !existsSync(defaultKeyFile(io.env))) return undefined;
  return keysFrom(flags, io);
}
