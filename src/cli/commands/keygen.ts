import { Command } from 'commander';
import { dirname, join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { generateKeys, keyId, writeKeyFile } from '../../keys/keys.js';
import { generateSigningKey, writeSigningKeyFiles } from '../../keys/signing.js';
import type { CliIO } from '../io.js';
import { defaultKeyFile } from '../store-options.js';

/** `signing.pem` beside the default key file. */
function defaultSigningKeyFile(env: CliIO['env']): string {
  return join(dirname(defaultKeyFile(env)), 'signing.pem');
}

export function keygenCommand(io: CliIO): Command {
  return new Command('keygen')
    .description('write a new key file (manifest key and dedup salt), mode 0600')
    .option('-o, --output <file>', 'where to write it (default: ~/.config/chunkyard/key.json, with --signing ~/.config/chunkyard/signing.pem)')
    .option('--signing', 'write an Ed25519 signing key pair instead (FILE and FILE.pub)')
    .option('--force', 'replace an existing file')
    .option('--if-missing', 'do nothing if the file already exists (for scripts)')
    .option('--json', 'print {file, keyId} as JSON')
    .action(async (flags: { output?: string; signing?: boolean; force?: boolean; ifMissing?: boolean; json?: boolean }) => {
      // The signing key never defaults to the key file's path: a PEM there would break every command that reads the key.
      const file = flags.output ?? (flags.signing ? defaultSigningKeyFile(io.env) : defaultKeyFile(io.env));
      if (flags.ifMissing && existsSync(file)) {
        io.stdout.write(flags.json ? JSON.stringify({ file, existing: true }) + '\n' : `${file} exists; left as it is\n`);
        return;
      }
      await mkdir(dirname(file), { recursive: true, mode: 0o700 });
      if (flags.signing) {
        const fingerprint = await writeSigningKeyFiles(file, await generateSigningKey(), { force: flags.force === true });
        io.stdout.write(flags.json ? JSON.stringify({ file, publicKey: `${file}.pub`, signer: fingerprint }) + '\n' : `wrote ${file} and ${file}.pub (signer ${fingerprint})\n`);
        return;
      }
      const keys = generateKeys();
      await writeKeyFile(file, keys, { force: flags.force === true });
      const id = keyId(keys.manifestKey);
      io.stdout.write(flags.json ? JSON.stringify({ file, keyId: id }) + '\n' : `wrote ${file} (key ${id}); keep it safe: without it your images cannot be read\n`);
    });
}
