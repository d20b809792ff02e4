/**
 * Cache node addresses: `redis://[user:password@]host[:port][/db]`,
 * `rediss://…` (TLS), `unix:///path/to.sock` and `redis+unix:///path`
 * (optionally `?db=N`). Any RESP server works (Redis, Valkey, ElastiCache).
 *
 * Each node gets an `id`: the address in one canonical spelling without
 * credentials. Placement hashes the id, so two spellings of one node place
 * alike and rotating a password moves nothing; stats and messages show it,
 * so no secret leaks into logs.
 */
import { UsageError } from '../errors.js';

export type RedisNodeTarget =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number; readonly tls: boolean }
  | { readonly kind: 'unix'; readonly path: string };

export interface RedisNodeAddress {
  readonly id: string;
  readonly target: RedisNodeTarget;
  readonly db: number;
  readonly username?: string;
  readonly password?: string;
}

export function parseRedisNode(url: string): RedisNodeAddress {
  const bad = (why: string): never => {
    throw new UsageError(`invalid cache node ${JSON.stringify(redact(url))}: ${why}`);
  };
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return bad('want redis://host:port, rediss://host:port or unix:///path/to.sock');
  }
  const creds = {
    ...(u.username !== '' ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password !== '' ? { password: decodeURIComponent(u.password) } : {}),
  };
  const dbFrom = (text: string | null): number => {
    if (text === null || text === '') return 0;
    if (!/^\d{1,5}$/.test(text)) return bad(`database ${JSON.stringify(text)} is not a number`);
    return Number(text);
  };
  switch (u.protocol) {
    case 'redis:':
    case 'rediss:': {
      if (u.hostname === '') return bad('no host');
      const port = u.port === '' ? 6379 : Number(u.port);
      const db = dbFrom(u.pathname.replace(/^\//, ''));
      const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
      const tls = u.protocol === 'rediss:';
      const id = `${u.protocol}//${u.hostname}:${port}${db !== 0 ? `/${db}` : ''}`;
      return { id, target: { kind: 'tcp', host, port, tls }, db, ...creds };
    }
    case 'unix:':
    case 'redis+unix:': {
      if (u.hostname !== '') return bad('a unix socket address is unix:///absolute/path (three slashes)');
      const path = decodeURIComponent(u.pathname);
      if (path === '' || path === '/') return bad('no socket path');
      const db = dbFrom(u.searchParams.get('db'));
      const id = `unix://${path}${db !== 0 ? `?db=${db}` : ''}`;
      return { id, target: { kind: 'unix', path }, db, ...creds };
    }
    default:
      return bad(`unknown scheme ${u.protocol.replace(/:$/, '')}: want redis, rediss, unix or redis+unix`);
  }
}

/** `url` with any password replaced by `***`, for messages. */
export function redact(url: string): string {
  return url.replace(/^([a-z+]+:\/\/[^:/@]*:)[^@/]*@/i, '$1***@');
}
