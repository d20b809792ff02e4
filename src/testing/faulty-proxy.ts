/**
 * An HTTP proxy on loopback that forwards to a real server (s3rver) but can
 * fail requests on cue: answer 503/500/429 itself, hang, or cut a response
 * body short. The retry tests put it between the S3 client and s3rver.
 * Headers pass unchanged (Host included), so SigV4 signatures still verify.
 * Test-only code.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** What to do with one request: forward it, answer with an error, never answer, or forward and cut the body. */
export type ProxyAction = { readonly kind: 'pass' } | { readonly kind: 'status'; readonly status: number; readonly code?: string } | { readonly kind: 'hang' } | { readonly kind: 'cut' };

export interface ProxyRequest {
  readonly method: string;
  readonly url: string;
  /** 1-based count of requests seen so far, this one included. */
  readonly n: number;
}

export interface FaultyProxy {
  readonly endpoint: string;
  /** Every request seen, in order. */
  readonly seen: ProxyRequest[];
  close(): Promise<void>;
}

export async function startFaultyProxy(target: string, decide: (req: ProxyRequest) => ProxyAction): Promise<FaultyProxy> {
  const t = new URL(target);
  const seen: ProxyRequest[] = [];
  const hanging = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    const info: ProxyRequest = { method: req.method ?? 'GET', url: req.url ?? '/', n: seen.length + 1 };
    seen.push(info);
    const action = decide(info);
    if (action.kind === 'hang') {
      req.resume();
      hanging.add(res);
      return;
    }
    if (action.kind === 'status') {
      req.resume();
      req.on('end', () => {
        const code = action.code ?? (action.status === 503 ? 'SlowDown' : 'InternalError');
        res.writeHead(action.status, { 'content-type': 'application/xml' });
        res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>injected by the test proxy</Message></Error>`);
      });
      return;
    }
    const upstream = http.request(
      { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        if (action.kind === 'cut') {
          // Send part of the body, then drop the connection.
          up.once('data', (b: Buffer) => {
            res.write(b.subarray(0, Math.max(1, b.length >> 1)), () => res.socket?.destroy());
          });
          return;
        }
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    seen,
    close: async () => {
      for (const r of hanging) r.socket?.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
