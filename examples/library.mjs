// Library use, end to end: convert the bundled image into a store, read a
// file of the published image through its chunks, then serve it over NBD
// and read the first block back as a client would.
//
//   node examples/library.mjs [STORE_DIR]      (after `npm install`, which builds dist/)
//
// Prints what it did; exits non-zero on any failure.
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ext4Reader, convertImage, generateKeys, openImage, openPublished, openStore, serveImage } from '../dist/src/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const work = await mkdtemp(path.join(tmpdir(), 'chunkyard-example-'));
const storeDir = process.argv[2] ?? path.join(work, 'store');
try {
  const keys = generateKeys(); // a real user keeps these: `chunkyard keygen`
  const store = await openStore(storeDir);
  const image = await openImage(`oci:${path.join(here, 'hello')}:latest`);
  let digest;
  try {
    const r = await convertImage(image, { store, keys, tag: 'hello' });
    digest = r.manifest;
    console.log(`converted: ${digest}, ${r.chunks.new} new chunks`);
  } finally {
    await image.close();
  }

  // Read one file through the read path: only the chunks that hold it are fetched.
  const published = await openPublished({ store, ref: 'hello', keys });
  try {
    const reader = await Ext4Reader.open(published.view);
    const ino = await reader.lookup(Buffer.from('/usr/share/hello/greeting.txt').toString('latin1'));
    const parts = [];
    for await (const b of reader.openFile(ino)) parts.push(b);
    const s = published.snapshot();
    console.log(`greeting.txt: ${JSON.stringify(Buffer.concat(parts).toString())} (${s.chunks.fetched} of ${s.chunks.total} chunks fetched)`);
  } finally {
    await published.close();
  }

  // Serve it over NBD on a unix socket and read the superblock magic (offset 1080) as a client.
  const sock = path.join(work, 'hello.sock');
  const served = await serveImage({ store, ref: 'hello', keys, listen: { unix: sock } });
  try {
    console.log(`serving at ${served.uri} (${served.size} bytes, read-only: ${served.readOnly})`);
    const magic = await readOverNbd(sock, 1080, 2);
    console.log(`ext4 magic over NBD: 0x${magic.readUInt16LE(0).toString(16)}`);
    if (magic.readUInt16LE(0) !== 0xef53) throw new Error('not an ext4 superblock');
  } finally {
    await served.close();
  }
  await store.close();
} finally {
  if (process.argv[2] === undefined) await rm(work, { recursive: true, force: true });
}

/** The smallest NBD client: fixed newstyle, NBD_OPT_GO for the default export, one READ, disconnect. */
async function readOverNbd(socketPath, offset, length) {
  const s = connect(socketPath);
  let buf = Buffer.alloc(0);
  let wake = () => {};
  s.on('data', (d) => { buf = Buffer.concat([buf, d]); wake(); });
  const take = async (n) => {
    while (buf.length < n) await new Promise((r) => (wake = r));
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
  const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32BE(v); return b; };
  await take(18); // NBDMAGIC, IHAVEOPT, handshake flags
  s.write(u32(3)); // FIXED_NEWSTYLE | NO_ZEROES
  const go = Buffer.concat([u32(0), Buffer.from([0, 0])]); // empty name, no info requests
  s.write(Buffer.concat([Buffer.from('IHAVEOPT'), u32(7), u32(go.length), go]));
  for (;;) { // option replies until ACK (1)
    const h = await take(20);
    await take(h.readUInt32BE(16));
    if (h.readUInt32BE(12) === 1) break;
    if (h.readUInt32BE(12) >= 0x80000000) throw new Error(`NBD_OPT_GO refused: 0x${h.readUInt32BE(12).toString(16)}`);
  }
  const req = Buffer.alloc(28);
  req.writeUInt32BE(0x25609513, 0); // request magic; flags 0, type 0 = READ
  req.writeBigUInt64BE(1n, 8); // cookie
  req.writeBigUInt64BE(BigInt(offset), 16);
  req.writeUInt32BE(length, 24);
  s.write(req);
  const reply = await take(16);
  if (reply.readUInt32BE(4) !== 0) throw new Error(`NBD read error ${reply.readUInt32BE(4)}`);
  const data = await take(length);
  const disc = Buffer.alloc(28);
  disc.writeUInt32BE(0x25609513, 0);
  disc.writeUInt16BE(2, 6); // DISC
  s.end(disc);
  return data;
}
