/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78) as ext4 uses it: the
 * raw register update, with no initial or final inversion — ext4 and
 * e2fsprogs chain the register from one field to the next (ext4.md §11).
 * The usual library form is `crc32c(d) = ~crc32cUpdate(~0, d)`.
 */

const TABLE = ((): Uint32Array => {
  const t = new Uint32Array(256 * 4);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  // Slicing-by-4 tables: directory scans checksum whole blocks.
  for (let i = 0; i < 256; i++) {
    for (let s = 1; s < 4; s++) {
      const prev = t[(s - 1) * 256 + i]!;
      t[s * 256 + i] = (prev >>> 8) ^ t[prev & 0xff]!;
    }
  }
  return t;
})();

/** Feeds `data` into the running register `crc` (unsigned 32-bit) and returns the new register. */
export function crc32cUpdate(crc: number, data: Uint8Array): number {
  let c = crc >>> 0;
  let i = 0;
  const n = data.length;
  for (; i + 4 <= n; i += 4) {
    c ^= data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24);
    c = TABLE[768 + (c & 0xff)]! ^ TABLE[512 + ((c >>> 8) & 0xff)]! ^ TABLE[256 + ((c >>> 16) & 0xff)]! ^ TABLE[c >>> 24]!;
  }
  for (; i < n; i++) c = (c >>> 8) ^ TABLE[(c ^ data[i]!) & 0xff]!;
  return c >>> 0;
}

/** Standard CRC32C of `data` (as zlib-style libraries compute it). */
export function crc32c(data: Uint8Array): number {
  return ~crc32cUpdate(0xffffffff, data) >>> 0;
}

/** The register update over one little-endian u32 (inode numbers, generations, group numbers). */
export function crc32cU32(crc: number, value: number): number {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0, 0);
  return crc32cUpdate(crc, b);
}
