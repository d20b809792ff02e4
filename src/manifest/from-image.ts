import { formatPlatform } from '../source/platform.js';
import type { ImageSource } from '../source/source.js';
import type { ManifestRuntime, ManifestSource } from './schema.js';

/** The manifest's `source` and `runtime` sections for an opened image. */
export function describeImage(image: ImageSource): { source: ManifestSource; runtime: ManifestRuntime } {
  const cfg = image.config;
  const rc = cfg.config ?? {};
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(rc.Labels ?? {})) labels[k] = v;
  return {
    source: {
      manifestDigest: image.manifestDigest,
      configDigest: image.configDigest,
      diffIds: [...cfg.rootfs.diff_ids],
      platform: formatPlatform({
        os: cfg.os ?? 'linux',
        architecture: cfg.architecture ?? 'amd64',
        ...(cfg.variant !== undefined ? { variant: cfg.variant } : {}),
      }),
    },
    runtime: {
      entrypoint: rc.Entrypoint ? [...rc.Entrypoint] : null,
      cmd: rc.Cmd ? [...rc.Cmd] : null,
      env: [...(rc.Env ?? [])],
      workingDir: rc.WorkingDir ?? '',
      user: rc.User ?? '',
      labels,
    },
  };
}
