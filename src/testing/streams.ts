/** Stream helpers for tests. */
import { createHash } from 'node:crypto';
import { createReadStream, readdirSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { type Digest, Digester } from '../source/digest.js';

/** Reads `r` to the end; its sha256 and length. Rejects with the stream's error. */
export async function drain(r: Readable): Promise<{ digest: Digest; bytes: number }> {
  const d = new Digester();
  for await (const chunk of r) d.update(chunk as Buffer);
  return { digest: d.digest(), bytes: d.bytes };
}

/** The sha256 (hex) of a file's bytes, streamed. */
export async function sha256File(p: string | Buffer): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(p)) h.update(c as Buffer);
  return h.digest('hex');
}

/** Reads `r` fully into memory (small test data only). */
export async function readAllBytes(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of r) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

/** Number of open file descriptors of this process (Linux /proc), or undefined elsewhere. */
export function openFdCount(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
}
