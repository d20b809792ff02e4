import { Command, Option } from 'commander';
import { buildImage } from '../../index.js';
import { UsageError } from '../../errors.js';
import type { CliIO } from '../io.js';
import { formatBytes, parseChoice, parsePercent, parseSize } from '../options.js';
import { Progress } from '../progress.js';
import { addRegistryOptions, type RegistryFlags, registryOptionsFrom } from '../registry-options.js';

interface BuildFlags extends RegistryFlags {
  output?: string;
  platform?: string;
  chunkSize: string;
  shadowed: string;
  headroom: string;
  json?: boolean;
}

export function buildCommand(io: CliIO): Command {
  const cmd = new Command('build')
    .description('flatten an image into a deterministic ext4 image')
    .argument('<source>', 'image: docker://[HOST/]REPO[:TAG|@DIGEST], oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG|@N], or a path')
    .requiredOption('-o, --output <file>', 'ext4 image to write')
    .option('--platform <os/arch[/variant]>', 'member of a multi-platform image', 'linux/amd64')
    .option('--chunk-size <size>', 'chunk size the layout aligns to (power of two, 64K..4M)', '512K')
    .addOption(new Option('--shadowed <mode>', 'bytes of files a later layer deletes: keep (dedupes with the parent image) or zero').choices(['keep', 'zero']).default('keep'))
    .option('--headroom <percent>', 'free space and inodes to leave, in percent of what is used', '0')
    .option('--json', 'print a JSON summary on stdout');
  return addRegistryOptions(cmd).action(async (source: string, flags: BuildFlags) => {
      const started = process.hrtime.bigint();
      if (!flags.output) throw new UsageError('missing --output');
      const progress = new Progress(io);
      const summary = await buildImage(source, flags.output, {
        platform: flags.platform ?? 'linux/amd64',
        chunkSize: parseSize(flags.chunkSize, '--chunk-size'),
        shadowed: parseChoice(flags.shadowed, '--shadowed', ['keep', 'zero'] as const),
        headroom: parsePercent(flags.headroom, '--headroom'),
        signal: io.signal,
        registry: registryOptionsFrom(flags, io),
        onProgress: (p) => progress.update(`layer ${p.layer}/${p.layers}  ${formatBytes(p.layerBytes)}`),
      });
      progress.done();
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (flags.json) {
        io.stdout.write(JSON.stringify({ output: flags.output, ...summary, seconds: Math.round(seconds * 1000) / 1000 }) + '\n');
      } else {
        io.stdout.write(
          `${flags.output}: ${formatBytes(summary.imageBytes)} ext4, ${summary.files} files, ${summary.layers} layers, ${seconds.toFixed(1)}s\n`,
        );
      }
    });
}
