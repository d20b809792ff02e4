/** Moving buffers between threads without copying them (pool.ts, seal-worker.ts). */

/** A Buffer view of a received Uint8Array, without copying. */
export function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/**
 * What to post for `b` and what to transfer: `b` itself when it owns its whole
 * ArrayBuffer (the usual case for chunk-sized buffers), else a copy — never a
 * transfer that would detach memory that other buffers share (Node's small
 * Buffers share one pool). After a transfer `b` is empty in the sender.
 */
export function forTransfer(b: Uint8Array): { view: Uint8Array; transfer: ArrayBuffer[] } {
  const ab = b.buffer;
  if (ab instanceof ArrayBuffer && b.byteOffset === 0 && b.byteLength === ab.byteLength) return { view: b, transfer: [ab] };
  const copy = new Uint8Array(b.byteLength);
  copy.set(b);
  return { view: copy, transfer: [copy.buffer] };
}
