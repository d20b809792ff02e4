/**
 * `s3://BUCKET/PREFIX` through @aws-sdk/client-s3, for AWS and S3-compatible
 * servers (`endpoint`). Same layout as the file store (layout.ts), under
 * PREFIX; the Store operations are object-store.ts's, on the S3Backend here.
 *
 * Atomicity comes free: S3 makes an object visible under its key only once
 * the whole PUT has landed, so no reader sees part of one, and a killed
 * uploader leaves nothing. A PUT that returned is durable, so sync() has
 * nothing to do.
 *
 * Retries, in two layers that do not overlap:
 *  - the SDK's standard strategy (exponential backoff with full jitter and a
 *    retry quota) retries each request on 5xx, 429/SlowDown and other
 *    throttling codes, timeouts and dropped connections, up to `maxAttempts`
 *    (5 here, the SDK's default is 3), until the response headers arrive;
 *  - a GET whose body breaks off after the headers is invisible to it, so
 *    getObject() retries those itself (retry.ts, 3 tries).
 * Per-request timeouts (connect 10 s, headers 60 s, idle socket 30 s) make a
 * hung server a retryable TimeoutError instead of a hang.
 *
 * Credentials come from the SDK's default chain (environment, shared
 * config/credentials files, SSO, web identity, container and instance
 * metadata) unless `s3ClientConfig.credentials` is given. No message ever
 * holds a credential; errors name the bucket, the key and the HTTP status.
 */
import {
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { ChunkyardError, InterruptedError, NotFoundError, StoreError, UsageError, throwIfAborted } from '../errors.js';
import { TAGS_DIR } from './layout.js';
import { type KeyPage, type ObjectBackend, ObjectStore, type PutObjectOptions } from './object-store.js';
import { withRetry } from './retry.js';
import { type CostModel, RequestCounter, type RequestCounts, type RequestKind } from './store.js';

export interface S3StoreOptions {
  /** An S3-compatible server, e.g. `http://127.0.0.1:9000`. Default: AWS. */
  readonly endpoint?: string;
  /** Default: the SDK's chain (AWS_REGION, the profile), else us-east-1. */
  readonly region?: string;
  /** Path-style URLs (`endpoint/bucket/key`). @default true with an endpoint, else false */
  readonly forcePathStyle?: boolean;
  /**
   * Extra S3Client config, applied last (over ours). Servers with quirks go
   * here, e.g. s3rver needs `requestChecksumCalculation` and
   * `responseChecksumValidation` set to 'WHEN_REQUIRED'.
   */
  readonly s3ClientConfig?: S3ClientConfig;
  /** Keys per LIST request (S3's MaxKeys, at most 1000). @default 1000 */
  readonly listPageSize?: number;
}

export interface S3Location {
  readonly bucket: string;
  /** '' or 'a/b' (no leading or trailing slash). */
  readonly prefix: string;
}

// S3's rules (3-63 of [a-z0-9.-]) plus the uppercase and `_` that old us-east-1 buckets may have.
const BUCKET_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$/;

/** `s3://BUCKET[/PREFIX]` → bucket and normalised prefix; UsageError when malformed. */
export function parseS3Url(url: string): S3Location {
  if (!url.startsWith('s3://')) throw new UsageError(`not an s3:// URL: ${JSON.stringify(url)}`);
  const rest = url.slice('s3://'.length);
  const slash = rest.indexOf('/');
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  if (!BUCKET_RE.test(bucket)) {
    throw new UsageError(`invalid bucket name ${JSON.stringify(bucket)} in ${url}: want s3://BUCKET/PREFIX`);
  }
  const parts = (slash < 0 ? '' : rest.slice(slash + 1)).split('/').filter((p) => p !== '');
  if (parts.some((p) => p === '.' || p === '..' || /[\u0000-\u001f\u007f]/.test(p))) {
    throw new UsageError(`invalid prefix in ${url}: '.', '..' and control characters are not allowed`);
  }
  return { bucket, prefix: parts.join('/') };
}

const DEFAULT_MAX_ATTEMPTS = 5;
const BODY_ATTEMPTS = 3;

export class S3Store extends ObjectStore {
  readonly costModel: CostModel;
  readonly #objects: S3Backend;

  private constructor(objects: S3Backend) {
    super(objects);
    this.#objects = objects;
    this.costModel = { kind: 'remote', listPageSize: objects.listPageSize };
  }

  static async open(url: string, options: S3StoreOptions = {}): Promise<S3Store> {
    const loc = parseS3Url(url);
    const pageSize = options.listPageSize ?? 1000;
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1000) {
      throw new UsageError(`list page size ${pageSize}: want an integer from 1 to 1000`);
    }
    if (options.endpoint !== undefined) {
      let u: URL;
      try {
        u = new URL(options.endpoint);
      } catch {
        throw new UsageError(`invalid endpoint ${JSON.stringify(options.endpoint)}: want a URL such as http://127.0.0.1:9000`);
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:') {
        throw new UsageError(`invalid endpoint ${u.origin}: want http:// or https://`);
      }
    }
    const base: S3ClientConfig = {
      ...(options.endpoint !== undefined ? { endpoint: options.endpoint } : {}),
      forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
      maxAttempts: DEFAULT_MAX_ATTEMPTS,
      requestHandler: { connectionTimeout: 10_000, requestTimeout: 60_000, socketTimeout: 30_000, throwOnRequestTimeout: true },
    };
    const extra = options.s3ClientConfig ?? {};
    const region = options.region ?? extra.region;
    let client = new S3Client({ ...base, ...extra, ...(region !== undefined ? { region } : {}) });
    if (region === undefined) {
      // No region given: ask the SDK's chain now, so a machine with none configured gets us-east-1 rather than a failure on the first request.
      try {
        await client.config.region();
      } catch {
        client.destroy();
        client = new S3Client({ ...base, ...extra, region: 'us-east-1' });
      }
    }
    return new S3Store(new S3Backend(client, loc, pageSize, options.endpoint));
  }

  requestCounts(): RequestCounts {
    return this.#objects.counts.snapshot();
  }

  async close(): Promise<void> {
    this.#objects.client.destroy();
  }
}

/** Objects in a bucket under the store's prefix; retries and error mapping as described at the top of this file. */
class S3Backend implements ObjectBackend {
  readonly url: string;
  readonly counts = new RequestCounter();
  readonly #bucket: string;
  /** '' or 'prefix/'. */
  readonly #base: string;
  readonly #where: string;

  constructor(
    readonly client: S3Client,
    loc: S3Location,
    readonly listPageSize: number,
    endpoint: string | undefined,
  ) {
    this.#bucket = loc.bucket;
    this.#base = loc.prefix === '' ? '' : `${loc.prefix}/`;
    this.url = `s3://${loc.bucket}${loc.prefix === '' ? '' : `/${loc.prefix}`}`;
    // Named in network errors; an origin never carries userinfo.
    this.#where = endpoint === undefined ? '' : ` at ${new URL(endpoint).origin}`;
    // Count what goes on the wire: this step runs once per attempt (inside the retry loop).
    client.middlewareStack.add(
      (next) => async (args) => {
        const req = args.request as { method?: string; query?: Record<string, unknown> } | undefined;
        this.counts.add(requestKind(req?.method, req?.query));
        return next(args);
      },
      { step: 'deserialize', name: 'chunkyardRequestCounter' },
    );
  }

  /** A PUT is durable once it has been answered. */
  async sync(): Promise<void> {}

  /** Keys under `prefix`, relative to the store's prefix, one page per LIST request, in key order. */
  async *listObjects(prefix: string, startAfter: string | undefined, signal: AbortSignal | undefined): AsyncIterable<KeyPage> {
    let token: string | undefined;
    do {
      throwIfAborted(signal);
      const cmd = new ListObjectsV2Command({
        Bucket: this.#bucket,
        Prefix: this.#base + prefix,
        MaxKeys: this.listPageSize,
        ...(token !== undefined ? { ContinuationToken: token } : startAfter !== undefined ? { StartAfter: this.#base + startAfter } : {}),
      });
      let out: ListObjectsV2CommandOutput;
      try {
        out = await this.client.send(cmd, signal ? { abortSignal: signal } : {});
      } catch (e) {
        throw this.#error(e, 'LIST', `${prefix}*`, signal);
      }
      token = out.IsTruncated === true ? out.NextContinuationToken : undefined;
      if (out.IsTruncated === true && token === undefined) {
        throw new StoreError(`${this.url}/${prefix}: LIST answered "truncated" without a continuation token`);
      }
      const keys = (out.Contents ?? []).flatMap((o) => (o.Key?.startsWith(this.#base) ? [o.Key.slice(this.#base.length)] : []));
      yield { keys, more: token !== undefined };
    } while (token !== undefined);
  }

  async getObject(rel: string, signal: AbortSignal | undefined): Promise<Buffer | undefined> {
    throwIfAborted(signal);
    return withRetry(
      async () => {
        let out;
        try {
          out = await this.client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: this.#base + rel }), signal ? { abortSignal: signal } : {});
        } catch (e) {
          if (isNotFound(e) && errorName(e) !== 'NoSuchBucket') return undefined;
          throw this.#error(e, 'GET', rel, signal);
        }
        if (out.Body === undefined) throw new StoreError(`${this.url}/${rel}: GET returned no body`);
        let bytes: Uint8Array;
        try {
          bytes = await out.Body.transformToByteArray();
        } catch (e) {
          if (signal?.aborted) throw new InterruptedError('interrupted', { cause: e });
          throw new BodyError(`${this.url}/${rel}: GET body broke off: ${oneLine(e)}`, { cause: e });
        }
        if (out.ContentLength !== undefined && bytes.length !== out.ContentLength) {
          throw new BodyError(`${this.url}/${rel}: GET body has ${bytes.length} bytes, the server announced ${out.ContentLength}`);
        }
        return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      },
      { attempts: BODY_ATTEMPTS, retryable: (e) => e instanceof BodyError, ...(signal ? { signal } : {}) },
    );
  }

  async headObject(rel: string, signal: AbortSignal | undefined): Promise<boolean> {
    throwIfAborted(signal);
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: this.#base + rel }), signal ? { abortSignal: signal } : {});
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw this.#error(e, 'HEAD', rel, signal);
    }
  }

  async putObject(rel: string, body: Uint8Array, options: PutObjectOptions): Promise<void> {
    const { signal } = options;
    throwIfAborted(signal);
    const contentType = rel.startsWith(`${TAGS_DIR}/`) ? 'text/plain; charset=utf-8' : 'application/octet-stream';
    try {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.#bucket, Key: this.#base + rel, Body: body, ContentLength: body.byteLength, ContentType: contentType }),
        signal ? { abortSignal: signal } : {},
      );
    } catch (e) {
      throw this.#error(e, 'PUT', rel, signal);
    }
  }

  /** Any SDK failure as one of our errors, in one line naming bucket, key, status and attempts. */
  #error(e: unknown, op: string, rel: string, signal: AbortSignal | undefined): Error {
    if (e instanceof ChunkyardError) return e;
    const meta = (e as { $metadata?: { httpStatusCode?: number; attempts?: number } }).$metadata ?? {};
    const status = meta.httpStatusCode;
    // A HEAD error has no body, so the SDK can only call it "Unknown" (or "NotFound"); name it by its status.
    const raw = errorName(e);
    const name = (raw === 'Unknown' || raw === 'UnknownError') && status !== undefined ? (STATUS_NAMES[status] ?? `HTTP${status}`) : raw;
    if (signal?.aborted || name === 'AbortError') return new InterruptedError('interrupted', { cause: e });
    const where = `${this.url}/${rel}`;
    const tries = meta.attempts !== undefined && meta.attempts > 1 ? ` after ${meta.attempts} attempts` : '';
    const http = status !== undefined ? ` (HTTP ${status})` : '';
    if (name === 'CredentialsProviderError' || /could not load credentials/i.test(oneLine(e))) {
      return new StoreError(
        `${this.url}: no AWS credentials found for ${op} ${rel} (looked in the environment, shared config and credentials files, SSO, web identity, container and instance metadata)`,
        { cause: e },
      );
    }
    if (name === 'NoSuchBucket') return new NotFoundError(`${this.url}: no such bucket ${this.#bucket}${http} on ${op} ${rel}${this.#where}`, { cause: e });
    if (status === 403 || CREDENTIAL_ERRORS.has(name)) {
      const hint = op === 'HEAD' ? '; S3 answers 403, not 404, for a missing key when the caller lacks s3:ListBucket' : '';
      return new StoreError(`${where}: ${op} refused: ${name}${http}: check the credentials (default chain or AWS_PROFILE) and the bucket policy${hint}`, { cause: e });
    }
    const code = (e as NodeJS.ErrnoException).code;
    const what = status !== undefined ? `${name}${http}` : `${name}${code !== undefined && code !== name ? ` ${code}` : ''}${this.#where}`;
    return new StoreError(`${where}: ${op} failed: ${what}${tries}: ${oneLine(e)}`, { cause: e });
  }
}

const STATUS_NAMES: Readonly<Record<number, string>> = {
  400: 'BadRequest',
  403: 'Forbidden',
  404: 'NotFound',
  429: 'TooManyRequests',
  500: 'InternalError',
  501: 'NotImplemented',
  502: 'BadGateway',
  503: 'ServiceUnavailable',
  504: 'GatewayTimeout',
};

const CREDENTIAL_ERRORS = new Set(['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken', 'TokenRefreshRequired']);

/** A GET body that broke off after the headers: the one failure getObject() retries itself. */
class BodyError extends StoreError {}

function errorName(e: unknown): string {
  return (e as { name?: string } | undefined)?.name ?? 'Error';
}

function isNotFound(e: unknown): boolean {
  const name = errorName(e);
  return name === 'NoSuchKey' || name === 'NotFound' || (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404;
}

function oneLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return (msg.split('\n')[0] ?? '').slice(0, 300) || errorName(e);
}

/** Which counter an HTTP request goes to: a GET with `list-type` is a LIST. */
function requestKind(method: string | undefined, query: Record<string, unknown> | undefined): RequestKind {
  switch (method?.toUpperCase()) {
    case 'HEAD':
      return 'head';
    case 'PUT':
    case 'POST':
      return 'put';
    case 'DELETE':
      return 'delete';
    default:
      return query !== undefined && 'list-type' in query ? 'list' : 'get';
  }
}
