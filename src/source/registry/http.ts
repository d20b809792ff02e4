/**
 * The HTTP layer under the registry client: one request over node's
 * http/https with a keep-alive agent, an idle timeout (while waiting for
 * headers and between body bytes), abort, and redirects followed by hand so
 * the registry's Authorization header never reaches another origin (blob
 * storage behind a 307 gets its own signed URL, not our token).
 */
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { rootCertificates } from 'node:tls';
import { InputError, InterruptedError } from '../../errors.js';

export interface TlsSettings {
  /** false: accept any certificate (`--tls-verify=false`). */
  readonly verify: boolean;
  /** Extra CA certificates (PEM), added to node's roots. */
  readonly ca?: readonly string[];
  /** Client certificates (PEM), each with the key at the same position in `key`. */
  readonly cert?: readonly string[];
  readonly key?: readonly string[];
}

export interface HttpRequest {
  readonly method: 'GET' | 'HEAD' | 'POST';
  readonly url: URL;
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: string;
  readonly signal?: AbortSignal;
}

/** A network-level failure (refused, reset, timed out): worth a retry. */
export class TransientError extends InputError {
  override name = 'InputError';
}

/**
 * A TLS failure that neither a retry nor plain HTTP would fix: the server's
 * certificate is not trusted (`certificate`), or the server refused our
 * handshake with an alert, typically for want of a client certificate
 * (`handshake`).
 */
export class TlsError extends InputError {
  override name = 'InputError';
  constructor(
    message: string,
    readonly kind: 'certificate' | 'handshake',
    /** node's error code, e.g. UNABLE_TO_VERIFY_LEAF_SIGNATURE. */
    readonly tlsCode: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** OpenSSL's certificate verification results as node reports them (err.code), and node's own name check. */
const CERT_CODES = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** The network error as TlsError when it is one of those, else as a TransientError (worth a retry). */
function networkError(e: NodeJS.ErrnoException, req: HttpRequest): InputError {
  const code = e.code ?? '';
  const what = `${req.method} ${redact(req.url)}`;
  if (CERT_CODES.has(code)) return new TlsError(`${what}: TLS certificate not trusted (${code}: ${e.message})`, 'certificate', code, { cause: e });
  // An alert from the server (e.g. ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE, ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED).
  if (/^ERR_SSL_.*ALERT/.test(code)) {
    const alert = code.replace(/^ERR_SSL_(SSLV3_|TLSV1\d*_)?ALERT_/, '').toLowerCase().replace(/_/g, ' ');
    return new TlsError(`${what}: the server refused the TLS handshake (alert: ${alert})`, 'handshake', code, { cause: e });
  }
  return new TransientError(`${what}: ${code !== '' ? code : e.message}`, { cause: e });
}

const MAX_REDIRECTS = 10;

export class HttpAgent {
  readonly #http = new http.Agent({ keepAlive: true, maxSockets: 16 });
  readonly #https: https.Agent;
  readonly #timeoutMs: number;

  constructor(tls: TlsSettings, timeoutMs: number) {
    this.#timeoutMs = timeoutMs;
    this.#https = new https.Agent({
      keepAlive: true,
      maxSockets: 16,
      rejectUnauthorized: tls.verify,
      ...(tls.ca !== undefined && tls.ca.length > 0 ? { ca: [...rootCertificates, ...tls.ca] } : {}),
      ...(tls.cert !== undefined && tls.cert.length > 0 ? { cert: [...tls.cert] } : {}),
      ...(tls.key !== undefined && tls.key.length > 0 ? { key: [...tls.key] } : {}),
    });
  }

  /**
   * Sends the request and follows redirects. Authorization is sent only to
   * the origin of the first URL. Resolves with the final response (any status).
   */
  async request(req: HttpRequest): Promise<IncomingMessage> {
    let url = req.url;
    const origin = req.url.origin;
    let method = req.method;
    let body = req.body;
    for (let hops = 0; ; hops++) {
      const headers: Record<string, string> = { ...req.headers };
      if (url.origin !== origin) {
        for (const k of Object.keys(headers)) if (k.toLowerCase() === 'authorization') delete headers[k];
      }
      const res = await this.#once({ method, url, headers, ...(body !== undefined ? { body } : {}), ...(req.signal !== undefined ? { signal: req.signal } : {}) });
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if (![301, 302, 303, 307, 308].includes(status) || location === undefined) return res;
      res.resume();
      if (hops >= MAX_REDIRECTS) throw new InputError(`${req.url.href}: more than ${MAX_REDIRECTS} redirects`);
      url = new URL(location, url);
      if (status === 303 || ((status === 301 || status === 302) && method === 'POST')) {
        method = 'GET';
        body = undefined;
      }
    }
  }

  #once(req: HttpRequest): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      if (req.signal?.aborted) {
        reject(new InterruptedError('interrupted'));
        return;
      }
      const isHttps = req.url.protocol === 'https:';
      const mod = isHttps ? https : http;
      const cr = mod.request(req.url, {
        method: req.method,
        headers: { ...req.headers, ...(req.body !== undefined ? { 'content-length': String(Buffer.byteLength(req.body)) } : {}) },
        agent: isHttps ? this.#https : this.#http,
      });
      const onAbort = (): void => {
        cr.destroy(new InterruptedError('interrupted'));
      };
      req.signal?.addEventListener('abort', onAbort, { once: true });
      cr.on('close', () => req.signal?.removeEventListener('abort', onAbort));
      // Idle timeout: no bytes for this long, while waiting for headers or mid-body.
      cr.setTimeout(this.#timeoutMs, () => {
        cr.destroy(new TransientError(`${req.method} ${redact(req.url)}: no response for ${Math.round(this.#timeoutMs / 1000)}s (timed out)`));
      });
      cr.on('error', (e: NodeJS.ErrnoException) => {
        reject(e instanceof InputError || e instanceof InterruptedError ? e : networkError(e, req));
      });
      cr.on('response', (res) => {
        // Errors after the headers (a cut connection) surface on the body stream.
        res.on('error', () => {});
        resolve(res);
      });
      cr.end(req.body);
    });
  }

  close(): void {
    this.#http.destroy();
    this.#https.destroy();
  }
}

/** A URL for messages: no query string (signed blob URLs carry credentials there). */
export function redact(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

/** Reads a response body whole, refusing more than `max` bytes. */
export async function readBody(res: IncomingMessage, max: number, what: string): Promise<Buffer> {
  const declared = Number(res.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > max) {
    res.destroy();
    throw new InputError(`${what}: ${declared} bytes, more than the ${max} allowed`);
  }
  const chunks: Buffer[] = [];
  let len = 0;
  try {
    for await (const c of res) {
      len += (c as Buffer).length;
      if (len > max) {
        res.destroy();
        throw new InputError(`${what}: more than the ${max} bytes allowed`);
      }
      chunks.push(c as Buffer);
    }
  } catch (e) {
    if (e instanceof InputError || e instanceof InterruptedError) throw e;
    throw new TransientError(`${what}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
  }
  return Buffer.concat(chunks);
}
