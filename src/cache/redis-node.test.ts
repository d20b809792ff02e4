import assert from 'node:assert/strict';
import { UsageError } from '../errors.js';
import { parseRedisNode, redact } from './redis-node.js';

describe('cache node addresses', () => {
  it('parses TCP addresses, with defaults, credentials, a database and IPv6', () => {
    assert.deepEqual(parseRedisNode('redis://127.0.0.1:7000'), { id: 'redis://127.0.0.1:7000', target: { kind: 'tcp', host: '127.0.0.1', port: 7000, tls: false }, db: 0 });
    assert.deepEqual(parseRedisNode('redis://cache'), { id: 'redis://cache:6379', target: { kind: 'tcp', host: 'cache', port: 6379, tls: false }, db: 0 });
    assert.deepEqual(parseRedisNode('rediss://u:p%40ss@cache:6380/2'), {
      id: 'rediss://cache:6380/2',
      target: { kind: 'tcp', host: 'cache', port: 6380, tls: true },
      db: 2,
      username: 'u',
      password: 'p@ss',
    });
    const v6 = parseRedisNode('redis://[::1]:7001');
    assert.equal(v6.id, 'redis://[::1]:7001');
    assert.deepEqual(v6.target, { kind: 'tcp', host: '::1', port: 7001, tls: false });
  });

  it('parses unix sockets in both spellings to one id', () => {
    const a = parseRedisNode('unix:///run/redis/a%20b.sock');
    assert.deepEqual(a, { id: 'unix:///run/redis/a b.sock', target: { kind: 'unix', path: '/run/redis/a b.sock' }, db: 0 });
    assert.equal(parseRedisNode('redis+unix:///run/redis/a%20b.sock').id, a.id);
    assert.equal(parseRedisNode('unix:///tmp/x.sock?db=3').db, 3);
  });

  it('refuses what it cannot use, without echoing passwords', () => {
    for (const bad of ['http://x:1', 'redis://', 'unix://host/x.sock', 'unix:///', 'redis://h:1/abc', 'not a url', 'redis://:secret@h:1/x']) {
      assert.throws(
        () => parseRedisNode(bad),
        (e: unknown) => e instanceof UsageError && !e.message.includes('secret'),
        bad,
      );
    }
    assert.equal(redact('redis://user:secret@h:1'), 'redis://user:***@h:1');
    assert.equal(redact('redis://:secret@h:1'), 'redis://:***@h:1');
    assert.equal(redact('redis://h:1'), 'redis://h:1');
  });
});
