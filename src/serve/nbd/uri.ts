/**
 * NBD URIs (NetworkBlockDevice/nbd doc/uri.md) for an address the server
 * listens on, as libnbd tools and qemu take them:
 * `nbd+unix:///NAME?socket=PATH` and `nbd://HOST:PORT/NAME`.
 */
import type { NbdAddress } from './server.js';

export function nbdUri(listen: NbdAddress, exportName = ''): string {
  const name = encode(exportName);
  if ('unix' in listen) return `nbd+unix:///${name}?socket=${encode(listen.unix)}`;
  const { host, port } = listen.tcp;
  const h = host.includes(':') ? `[${host}]` : host; // IPv6 literal
  return `nbd://${h}:${port}/${name}`;
}

/** Percent-encodes all but unreserved characters and '/' (an export name may contain slashes). */
function encode(s: string): string {
  return encodeURIComponent(s).replace(/%2F/g, '/').replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}
