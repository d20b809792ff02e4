import { Command, Option } from 'commander';
import { loadSigningKey } from '../../keys/signing.js';
import { convertImage, openImage, statsImages, type ConvertResult, type StatsReport } from '../../index.js';
import { UsageError } from '../../errors.js';
import type { CliIO } from '../io.js';
import { formatBytes, parseChoice, parsePercent, parseSize } from '../options.js';
import { Progress } from '../progress.js';
import { addRegistryOptions, type RegistryFlags, registryOptionsFrom } from '../registry-options.js';
import { addKeyOption, addStoreOptions, keysFrom, storeFrom, type KeyFlags, type StoreFlags } from '../store-options.js';

interface ImageFlags extends RegistryFlags {
  platform: string;
  chunkSize: string;
  shadowed: string;
  headroom: string;
}

function addImageOptions(cmd: Command): Command {
  return addRegistryOptions(cmd)
    .option('--platform <os/arch[/variant]>', 'member of a multi-platform image', 'linux/amd64')
    .option('--chunk-size <size>', 'chunk size (power of two, 64K..4M)', '512K')
    .addOption(new Option('--shadowed <mode>', 'bytes of files a later layer deletes: keep or zero').choices(['keep', 'zero']).default('keep'))
    .option('--headroom <percent>', 'free space and inodes to leave, in percent', '0');
}

function imageOptions(flags: ImageFlags): { chunkSize: number; shadowed: 'keep' | 'zero'; headroom: number } {
  return {
    chunkSize: parseSize(flags.chunkSize, '--chunk-size'),
    shadowed: parseChoice(flags.shadowed, '--shadowed', ['keep', 'zero'] as const),
    headroom: parsePercent(flags.headroom, '--headroom'),
  };
}

interface PriceFlags {
  putPrice: string;
  getPrice: string;
  gbMonthPrice: string;
}

function price(s: string, what: string): number {
  const n = Number(s);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`invalid ${what} ${JSON.stringify(s)}: want a non-negative number`);
  return n;
}

export function convertCommand(io: CliIO): Command {
  const cmd = new Command('convert')
    .description('build, chunk, encrypt and upload an image; print its manifest reference')
    .argument('<source>', 'image reference (oci:, oci-archive:, docker-archive:) or path')
    .option('--tag <name>', 'name the manifest in the store')
    .option('--sign-key <file>', 'sign the manifest with this Ed25519 private key (chunkyard keygen --signing)')
    .option('--dry-run', 'upload nothing: print what would be uploaded (like `stats`)')
    .option('--json', 'print a JSON summary');
  addImageOptions(cmd);
  addStoreOptions(cmd);
  addKeyOption(cmd);
  return cmd.action(async (source: string, flags: ImageFlags & StoreFlags & KeyFlags & { tag?: string; signKey?: string; dryRun?: boolean; json?: boolean }) => {
    const opts = imageOptions(flags);
    const keys = await keysFrom(flags, io);
    const signingKey = flags.signKey !== undefined ? await loadSigningKey(flags.signKey) : undefined;
    const store = await storeFrom(flags, io);
    let image;
    const progress = new Progress(io);
    try {
      // Opened inside the try, so a bad source still closes the store.
      image = await openImage(source, { platform: flags.platform, signal: io.signal, registry: registryOptionsFrom(flags, io) });
      if (flags.dryRun) {
        const report = await statsImages([image], { store, keys, ...opts, signal: io.signal });
        printStats(io, report, flags.json === true);
        return;
      }
      const result = await convertImage(image, {
        store,
        keys,
        ...opts,
        ...(flags.tag !== undefined ? { tag: flags.tag } : {}),
        ...(signingKey ? { signingKey } : {}),
        signal: io.signal,
        onProgress: (p) => progress.update(`chunks ${p.chunks}  new ${formatBytes(p.newBytes)}`),
      });
      progress.done();
      printConvert(io, result, flags.json === true);
    } finally {
      progress.done();
      await image?.close();
      await store.close();
    }
  });
}

function printConvert(io: CliIO, r: ConvertResult, json: boolean): void {
  if (json) {
    const { build, ...rest } = r;
    io.stdout.write(JSON.stringify({ ...rest, files: build.files, layers: build.layers }) + '\n');
    return;
  }
  io.stderr.write(
    `${r.source}: ${r.chunks.total} chunks (${r.chunks.zero} zero, ${r.chunks.duplicate} duplicate, ${r.chunks.existing} already stored), ` +
      `uploaded ${r.chunks.new} (${formatBytes(r.bytes.new)}), manifest ${formatBytes(r.manifestBytes)}${r.tag ? `, tagged ${r.tag}` : ''}\n`,
  );
  io.stdout.write(`${r.manifest}\n`);
}

export function statsCommand(io: CliIO): Command {
  const cmd = new Command('stats')
    .description('dry run: what converting these images, in order, would upload (writes nothing)')
    .argument('<source...>', 'image references or paths')
    .option('--put-price <usd>', 'price per 1000 PUT/LIST requests', '0.005')
    .option('--get-price <usd>', 'price per 1000 GET/HEAD requests', '0.0004')
    .option('--gb-month-price <usd>', 'storage price per GB-month', '0.023')
    .option('--json', 'print a JSON report');
  addImageOptions(cmd);
  addStoreOptions(cmd);
  addKeyOption(cmd);
  return cmd.action(async (sources: string[], flags: ImageFlags & StoreFlags & KeyFlags & PriceFlags & { json?: boolean }) => {
    const opts = imageOptions(flags);
    const prices = {
      putPer1000: price(flags.putPrice, '--put-price'),
      getPer1000: price(flags.getPrice, '--get-price'),
      storagePerGbMonth: price(flags.gbMonthPrice, '--gb-month-price'),
    };
    const keys = await keysFrom(flags, io);
    const store = await storeFrom(flags, io);
    const images = [];
    try {
      for (const s of sources) images.push(await openImage(s, { platform: flags.platform, signal: io.signal, registry: registryOptionsFrom(flags, io) }));
      printStats(io, await statsImages(images, { store, keys, ...opts, prices, signal: io.signal }), flags.json === true);
    } finally {
      for (const i of images) await i.close();
      await store.close();
    }
  });
}

function printStats(io: CliIO, r: StatsReport, json: boolean): void {
  if (json) {
    io.stdout.write(JSON.stringify({ images: r.images.map(({ build: _b, ...rest }) => rest), total: r.total }) + '\n');
    return;
  }
  const row = (name: string, c: StatsReport['total']['chunks'], b: StatsReport['total']['bytes'], req: StatsReport['total']['requests'], cost: StatsReport['total']['cost']): string =>
    `${name}\n  chunks: ${c.total} total, ${c.zero} zero, ${c.duplicate} duplicate, ${c.existing} already stored, ${c.new} new (${formatBytes(b.new)} to upload)\n` +
    `  requests: ${req.put} PUT, ${req.head} HEAD, ${req.list} LIST  cost: $${cost.requests.toFixed(6)} once + $${cost.storagePerMonth.toFixed(6)}/month\n`;
  for (const i of r.images) io.stdout.write(row(i.source, i.chunks, i.bytes, i.requests, i.cost));
  if (r.images.length > 1) io.stdout.write(row('total', r.total.chunks, r.total.bytes, r.total.requests, r.total.cost));
}
