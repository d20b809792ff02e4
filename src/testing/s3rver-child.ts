/**
 * Child process that runs s3rver for the tests (see s3-server.ts, which
 * starts it as `node --openssl-legacy-provider s3rver-child.js DIR BUCKET`:
 * s3rver encrypts its list continuation tokens with DES, which OpenSSL 3
 * only offers through the legacy provider). Prints `listening <port>` on
 * stdout once it accepts connections, and exits when stdin closes, so it
 * never outlives the test process that started it. Test-only code.
 */
import { createRequire } from 'node:module';

interface S3rverInstance {
  run(): Promise<{ port: number; address: string }>;
  close(): Promise<void>;
}
type S3rverCtor = new (options: Record<string, unknown>) => S3rverInstance;

const [dir, bucket] = process.argv.slice(2);
if (dir === undefined || bucket === undefined) {
  process.stderr.write('usage: s3rver-child DIR BUCKET\n');
  process.exit(2);
}

// s3rver is CommonJS without type declarations.
const S3rver = createRequire(import.meta.url)('s3rver') as S3rverCtor;
const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  directory: dir,
  silent: true,
  configureBuckets: [{ name: bucket }],
});
const { port } = await server.run();
process.stdout.write(`listening ${port}\n`);

const shutdown = (): void => {
  void server.close().finally(() => process.exit(0));
};
process.stdin.on('end', shutdown);
process.stdin.on('error', shutdown);
process.stdin.resume();
process.on('SIGTERM', shutdown);
