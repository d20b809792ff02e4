/**
 * File names in images are byte strings, not text: a tar may carry names that
 * are not valid UTF-8, and ext4 stores bytes. We keep them losslessly as JS
 * strings with one char per byte (latin1), branded so they cannot be mixed up
 * with display text by accident.
 */
declare const byteStringBrand: unique symbol;
export type ByteString = string & { readonly [byteStringBrand]: true };

export function bytesToByteString(b: Uint8Array): ByteString {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1') as ByteString;
}

export function byteStringToBytes(s: ByteString): Buffer {
  return Buffer.from(s, 'latin1');
}

/** From user-typed text (argv, UTF-8) to the on-disk byte form. */
export function utf8ToByteString(s: string): ByteString {
  return Buffer.from(s, 'utf8').toString('latin1') as ByteString;
}

/** For printing: decode as UTF-8 (invalid sequences become U+FFFD). */
export function byteStringToDisplay(s: ByteString): string {
  return Buffer.from(s, 'latin1').toString('utf8');
}

/** Byte-wise order (latin1 code units compare as their bytes). */
export function compareByteStrings(a: ByteString, b: ByteString): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
