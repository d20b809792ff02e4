import { BLOCK_SIZE } from './constants.js';

/** A one-block ext4 bitmap: bit i, LSB first within each byte. */
export class Bitmap {
  readonly bytes = Buffer.alloc(BLOCK_SIZE);

  set(i: number): void {
    this.bytes[i >>> 3]! |= 1 << (i & 7);
  }

  /** Sets bits [from, to). */
  setRange(from: number, to: number): void {
    let i = from;
    while (i < to && (i & 7) !== 0) this.set(i++);
    const fullBytesEnd = (to & ~7) >>> 3;
    if (i >>> 3 < fullBytesEnd) {
      this.bytes.fill(0xff, i >>> 3, fullBytesEnd);
      i = fullBytesEnd << 3;
    }
    while (i < to) this.set(i++);
  }

  isSet(i: number): boolean {
    return (this.bytes[i >>> 3]! & (1 << (i & 7))) !== 0;
  }
}
