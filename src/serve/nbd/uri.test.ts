import assert from 'node:assert/strict';
import { nbdUri } from './uri.js';

describe('serve/nbd/uri', function () {
  it('forms nbd+unix and nbd URIs, percent-encoding names and paths', function () {
    assert.equal(nbdUri({ unix: '/run/cy.sock' }), 'nbd+unix:///?socket=/run/cy.sock');
    assert.equal(nbdUri({ unix: '/tmp/a b/s.sock' }, 'img'), 'nbd+unix:///img?socket=/tmp/a%20b/s.sock');
    assert.equal(nbdUri({ tcp: { host: '127.0.0.1', port: 10809 } }), 'nbd://127.0.0.1:10809/');
    assert.equal(nbdUri({ tcp: { host: '127.0.0.1', port: 4000 } }, '/disk?x'), 'nbd://127.0.0.1:4000//disk%3Fx');
    assert.equal(nbdUri({ tcp: { host: '::1', port: 1 } }, 'é'), 'nbd://[::1]:1/%C3%A9');
  });
});
