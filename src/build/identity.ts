import { createHash } from 'node:crypto';
import type { Digest } from '../source/digest.js';

/** ChainID of a layer stack (OCI image-spec config.md): identity of "these layers, in this order". */
export function chainId(diffIds: readonly Digest[]): Digest {
  let chain = '';
  for (const d of diffIds) {
    chain = chain === '' ? d : `sha256:${createHash('sha256').update(`${chain} ${d}`).digest('hex')}`;
  }
  return chain as Digest;
}

/**
 * The filesystem UUID and directory hash seed are derived from the layers,
 * never random, so the same layers give the same bytes on every machine. The
 * UUID gets RFC 4122 version-5-style bits so tools print it as a proper UUID.
 */
export function fsIdentity(diffIds: readonly Digest[]): { uuid: Buffer; hashSeed: Buffer } {
  const chain = chainId(diffIds);
  const uuid = createHash('sha256').update(`chunkyard ext4 uuid\0${chain}`).digest().subarray(0, 16);
  uuid[6] = (uuid[6]! & 0x0f) | 0x50;
  uuid[8] = (uuid[8]! & 0x3f) | 0x80;
  const hashSeed = createHash('sha256').update(`chunkyard ext4 hash seed\0${chain}`).digest().subarray(0, 16);
  return { uuid: Buffer.from(uuid), hashSeed: Buffer.from(hashSeed) };
}
