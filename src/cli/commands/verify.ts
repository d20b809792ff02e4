import { Command, Option } from 'commander';
import { loadPublicKey } from '../../keys/signing.js';
import { extractImage, openImage, verifyImage } from '../../index.js';
import { IntegrityError, UsageError } from '../../errors.js';
import type { CliIO } from '../io.js';
import { formatBytes, parseChoice, parsePercent } from '../options.js';
import { Progress } from '../progress.js';
import { addRegistryOptions, type RegistryFlags, registryOptionsFrom } from '../registry-options.js';
import { addKeyOption, addStoreOptions, keysFrom, optionalKeysFrom, storeFrom, type KeyFlags, type StoreFlags } from '../store-options.js';

export function verifyCommand(io: CliIO): Command {
  const cmd = new Command('verify')
    .description('check a published image: every chunk present and whole; with the key, every plaintext authentic and the filesystem sound')
    .argument('<ref>', 'manifest digest (sha256:…) or tag')
    .option('--public-key <file>', 'check the manifest signature with this Ed25519 public key')
    .option('--rebuild <source>', 'rebuild from the source image and require an identical manifest (needs the key)')
    .option('--platform <os/arch[/variant]>', 'with --rebuild: member of a multi-platform image', 'linux/amd64')
    // Not recorded in the manifest, so a rebuild must be told what convert was.
    .addOption(new Option('--shadowed <mode>', 'with --rebuild: the --shadowed the image was converted with').choices(['keep', 'zero']))
    .option('--headroom <percent>', 'with --rebuild: the --headroom the image was converted with')
    .option('--json', 'print a JSON report');
  addStoreOptions(cmd);
  addKeyOption(cmd);
  addRegistryOptions(cmd);
  type Flags = StoreFlags & KeyFlags & RegistryFlags & { publicKey?: string; rebuild?: string; platform: string; shadowed?: string; headroom?: string; json?: boolean };
  return cmd.action(async (ref: string, flags: Flags) => {
    if (flags.rebuild === undefined && (flags.shadowed !== undefined || flags.headroom !== undefined)) {
      throw new UsageError('--shadowed and --headroom only apply with --rebuild');
    }
    const rebuildOptions = {
      ...(flags.shadowed !== undefined ? { shadowed: parseChoice(flags.shadowed, '--shadowed', ['keep', 'zero'] as const) } : {}),
      ...(flags.headroom !== undefined ? { headroom: parsePercent(flags.headroom, '--headroom') } : {}),
    };
    const keys = await optionalKeysFrom(flags, io);
    const publicKey = flags.publicKey !== undefined ? await loadPublicKey(flags.publicKey) : undefined;
    const store = await storeFrom(flags, io);
    let rebuild;
    const progress = new Progress(io);
    try {
      // Opened inside the try, so a bad source still closes the store.
      rebuild = flags.rebuild !== undefined ? await openImage(flags.rebuild, { platform: flags.platform, signal: io.signal, registry: registryOptionsFrom(flags, io) }) : undefined;
      const r = await verifyImage(store, ref, {
        ...(keys ? { keys } : {}),
        ...(publicKey ? { publicKey } : {}),
        ...(rebuild ? { rebuild, rebuildOptions } : {}),
        signal: io.signal,
        onProgress: (p) => progress.update(`chunks ${p.checked}/${p.total}`),
      });
      progress.done();
      if (flags.json) {
        io.stdout.write(JSON.stringify(r) + '\n');
      } else {
        for (const p of r.problems) io.stdout.write(`${p.kind}: ${p.message}\n`);
        const parts = [
          `${r.chunks.checked}/${r.chunks.total - r.chunks.holes} chunks checked`,
          r.decrypted ? 'decrypted and authenticated' : 'names only (no key)',
          ...(r.filesystemInodes !== undefined ? [`filesystem walked (${r.filesystemInodes} inodes)`] : []),
          ...(r.signature !== 'not checked' ? [`signature ${r.signature}`] : []),
          ...(r.rebuild !== undefined ? [`rebuild ${r.rebuild}`] : []),
        ];
        io.stdout.write(`${r.manifest}: ${r.ok ? 'OK' : `${r.problems.length} problem(s)`}; ${parts.join(', ')}\n`);
      }
      if (!r.ok) throw new IntegrityError(`verify ${ref}: ${r.problems.length} problem(s), first: ${r.problems[0]!.message}`, { reportedOnStdout: flags.json === true });
    } finally {
      progress.done();
      await rebuild?.close();
      await store.close();
    }
  });
}

export function extractCommand(io: CliIO): Command {
  const cmd = new Command('extract')
    .description('write a published image back to an ext4 file (holes stay sparse)')
    .argument('<ref>', 'manifest digest (sha256:…) or tag')
    .requiredOption('-o, --output <file>', 'ext4 image to write')
    .option('--json', 'print a JSON summary');
  addStoreOptions(cmd);
  addKeyOption(cmd);
  return cmd.action(async (ref: string, flags: StoreFlags & KeyFlags & { output: string; json?: boolean }) => {
    const keys = await keysFrom(flags, io);
    const store = await storeFrom(flags, io);
    const progress = new Progress(io);
    try {
      const r = await extractImage(store, ref, flags.output, {
        keys,
        signal: io.signal,
        onProgress: (d, t) => progress.update(`chunks ${d}/${t}`),
      });
      progress.done();
      io.stdout.write(
        flags.json ? JSON.stringify({ output: flags.output, ...r }) + '\n' : `${flags.output}: ${formatBytes(r.imageBytes)} from ${r.manifest} (${r.chunks} chunks, ${r.holes} holes)\n`,
      );
    } finally {
      progress.done();
      await store.close();
    }
  });
}
