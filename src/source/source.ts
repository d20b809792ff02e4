import type { Readable } from 'node:stream';
import type { Digest } from './digest.js';
import type { RegistryOptions } from './registry/client.js';

/**
 * The contract every transport (oci, oci-archive, docker-archive, and later
 * docker:// registries) implements. Shaped after containers/image:
 * Transport → ImageReference → ImageSource.
 */

/** linux/amd64, linux/arm64/v8, … (normalised as containerd does). */
export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

export interface OpenOptions {
  /** Which member of a multi-platform index to take. Default linux/amd64. */
  readonly platform?: Platform;
  readonly signal?: AbortSignal;
  /** How `docker://` sources reach registries (TLS, credentials, retries); other transports ignore it. */
  readonly registry?: RegistryOptions;
}

export interface Transport {
  /** The prefix before the first colon: `oci`, `oci-archive`, `docker-archive`. */
  readonly name: string;
  /** Parses what follows `name:`; throws InputError when malformed. */
  parse(rest: string): ImageReference;
}

export interface ImageReference {
  readonly transport: Transport;
  /** Round-trips: `transport.parse(ref.withinTransport())` gives an equal reference. */
  withinTransport(): string;
  /** `transport:withinTransport` */
  toString(): string;
  open(options?: OpenOptions): Promise<ImageSource>;
}

/** The runtime part of an OCI image config (`config` object), as a runtime needs it. */
export interface RuntimeConfig {
  readonly User?: string;
  readonly Env?: readonly string[];
  readonly Entrypoint?: readonly string[] | null;
  readonly Cmd?: readonly string[] | null;
  readonly WorkingDir?: string;
  readonly Labels?: Readonly<Record<string, string>> | null;
  readonly ExposedPorts?: Readonly<Record<string, unknown>>;
  readonly Volumes?: Readonly<Record<string, unknown>>;
  readonly StopSignal?: string;
}

export interface ImageConfig {
  readonly architecture?: string;
  readonly os?: string;
  readonly variant?: string;
  readonly config?: RuntimeConfig;
  readonly rootfs: { readonly type: string; readonly diff_ids: readonly Digest[] };
}

export interface Layer {
  /** Position in the image, base = 0. */
  readonly index: number;
  readonly mediaType: string;
  /** Digest of the blob as stored (usually compressed). */
  readonly digest: Digest;
  /** Size of the blob as stored. */
  readonly size: number;
  /** sha256 of the uncompressed tar, from the config's rootfs.diff_ids. */
  readonly diffId: Digest;
  /**
   * A fresh stream of the *uncompressed* tar each call (openers, not streams:
   * data is re-read, never buffered whole). Compression is sniffed from magic
   * bytes. The stream fails with IntegrityError at EOF if the blob's size or
   * digest, or the uncompressed diff_id, do not match, and always reads its
   * input to EOF (trailing padding counts toward the diff_id).
   */
  open(signal?: AbortSignal): Readable;
}

export interface ImageSource {
  readonly reference: ImageReference;
  /** Digest of the image manifest (for docker-archive legacy form: of the config). */
  readonly manifestDigest: Digest;
  readonly configDigest: Digest;
  readonly config: ImageConfig;
  /** Base first. Same length as config.rootfs.diff_ids. */
  readonly layers: readonly Layer[];
  /** Releases temp files or handles the source holds. Idempotent. */
  close(): Promise<void>;
}
