/**
 * Certificates for tests, made with the real `openssl` at test time: a test
 * CA with a server certificate for loopback (SAN IP:127.0.0.1, localhost) and
 * a client certificate, for TLS registries; and self-signed signing
 * certificates for a token server's JWTs. Keys are unencrypted PEM files in
 * the given directory. Test-only code.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from './tools.js';

export type KeyType = 'ec' | 'rsa';

export interface TestPki {
  /** The CA certificate (PEM), to trust. */
  readonly caCert: string;
  readonly serverCert: string;
  readonly serverKey: string;
  /** A client certificate (extendedKeyUsage clientAuth) issued by the same CA. */
  readonly clientCert: string;
  readonly clientKey: string;
}

function newKeyArgs(type: KeyType): string[] {
  return type === 'ec' ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'] : ['-newkey', 'rsa:2048'];
}

function serial(): string {
  return `0x${randomBytes(8).toString('hex')}`;
}

/** A self-signed certificate and its key: `name.crt`, `name.key` in `dir`. */
export async function selfSigned(dir: string, name: string, cn: string, type: KeyType = 'ec', extra: readonly string[] = []): Promise<{ cert: string; key: string }> {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  await run('openssl', ['req', '-x509', ...newKeyArgs(type), '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${cn}`, '-set_serial', serial(), ...extra]);
  return { cert, key };
}

async function issue(dir: string, name: string, cn: string, ca: { cert: string; key: string }, ext: string): Promise<{ cert: string; key: string }> {
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const cert = path.join(dir, `${name}.crt`);
  const extFile = path.join(dir, `${name}.ext`);
  await writeFile(extFile, ext);
  await run('openssl', ['req', '-new', ...newKeyArgs('ec'), '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${cn}`]);
  await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', serial(), '-days', '2', '-out', cert, '-extfile', extFile]);
  return { cert, key };
}

/** A CA, a loopback server certificate and a client certificate, in `dir`. */
export async function makeTestPki(dir: string): Promise<TestPki> {
  const ca = await selfSigned(dir, 'ca', 'chunkyard test CA', 'ec', ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const server = await issue(dir, 'server', '127.0.0.1', ca, 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n');
  const client = await issue(dir, 'client', 'chunkyard test client', ca, 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n');
  return { caCert: ca.cert, serverCert: server.cert, serverKey: server.key, clientCert: client.cert, clientKey: client.key };
}
