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
  readonly cert?: string;
  readonly key?: string;
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
      ...(tls.cert !== undefined ? { cert: tls.cert } : {}),
      ...(tls.key !== undefined ? { key: tls.key } : {}),
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
        reject(e instanceof InputError || e instanceof InterruptedError ? e : new TransientError(`${req.method} ${redact(req.url)}: ${e.code ?? e.message}`, { cause: e }));
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
