/**
 * PAX extended header records (oci.md §7), parsed from raw bytes so that
 * binary values (xattrs such as `security.capability`) and non-UTF-8 paths
 * survive exactly. Pure: no I/O.
 *
 * tar-stream 3.2.2 cannot be used for this: its `decodePax` turns every value
 * into a UTF-8 JS string (bytes ≥ 0x80 that are not valid UTF-8 become
 * U+FFFD), keeps only the last of repeated keys (PAX sparse 0.0 repeats
 * `GNU.sparse.offset`), and applies global headers only when a local one follows.
 */
import type { Timestamp } from './entry.js';
import { TarFormatError } from './tar-header.js';

export type PaxRecord = readonly [key: string, value: Buffer];

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * `"<len> <key>=<value>\n"` records. Keys are UTF-8 text; values are bytes
 * (copied, so the block they came from is not kept alive). Trailing NUL
 * padding after the last record is tolerated.
 */
export function parsePaxRecords(buf: Buffer): PaxRecord[] {
  const out: PaxRecord[] = [];
  let pos = 0;
  while (pos < buf.length) {
    if (buf[pos] === 0) {
      if (buf.subarray(pos).some((c) => c !== 0)) throw new TarFormatError('PAX header: data after NUL padding');
      break;
    }
    const sp = buf.indexOf(0x20, pos);
    if (sp < 0 || sp === pos || sp - pos > 16) throw new TarFormatError(`PAX header: bad record length at byte ${pos}`);
    const lenText = buf.toString('latin1', pos, sp);
    if (!/^[0-9]+$/.test(lenText)) throw new TarFormatError(`PAX header: bad record length "${lenText}"`);
    const len = Number(lenText);
    const end = pos + len;
    if (len < 5 || end > buf.length || end <= sp + 1) throw new TarFormatError(`PAX header: record length ${len} runs past the header`);
    if (buf[end - 1] !== 0x0a) throw new TarFormatError('PAX header: record does not end in a newline');
    const rec = buf.subarray(sp + 1, end - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw new TarFormatError('PAX header: record without a key');
    let key: string;
    try {
      key = utf8.decode(rec.subarray(0, eq));
    } catch {
      throw new TarFormatError('PAX header: key is not UTF-8');
    }
    if (key.includes('\0')) throw new TarFormatError('PAX header: key contains NUL');
    out.push([key, Buffer.from(rec.subarray(eq + 1))]);
    pos = end;
  }
  return out;
}

/** Global ('g') records persist for all later entries; a later empty value removes the key. */
export function mergeGlobals(globals: Map<string, Buffer>, records: readonly PaxRecord[]): void {
  for (const [k, v] of records) {
    if (v.length === 0) globals.delete(k);
    else globals.set(k, v);
  }
}

export const XATTR_PREFIX = 'SCHILY.xattr.';

/** What the PAX records (global defaults, then the entry's own) say about one entry. */
export interface PaxFields {
  readonly path?: Buffer;
  readonly linkpath?: Buffer;
  readonly size?: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly mtime?: Timestamp;
  /** `SCHILY.xattr.NAME` → raw value (an empty value is a real, empty xattr). */
  readonly xattrs: ReadonlyMap<string, Buffer>;
  /** The entry's own records in order (needed for repeated GNU.sparse.* keys). */
  readonly local: readonly PaxRecord[];
  /** Last value per key, globals overlaid with the entry's records. */
  readonly merged: ReadonlyMap<string, Buffer>;
}

/**
 * An empty value in the entry's own records cancels the key (POSIX: the
 * header field or global value applies again), except for xattrs.
 */
const NO_XATTRS: ReadonlyMap<string, Buffer> = new Map();

/** What no records say: shared, as most tar entries (all, in many layers) carry no PAX records. */
const NO_PAX: PaxFields = { xattrs: NO_XATTRS, local: [], merged: new Map() };

export function paxFields(globals: ReadonlyMap<string, Buffer>, local: readonly PaxRecord[]): PaxFields {
  if (globals.size === 0 && local.length === 0) return NO_PAX;
  const merged = new Map(globals);
  for (const [k, v] of local) {
    if (v.length === 0 && !k.startsWith(XATTR_PREFIX)) merged.delete(k);
    else merged.set(k, v);
  }
  const xattrs = new Map<string, Buffer>();
  for (const [k, v] of merged) {
    if (k.startsWith(XATTR_PREFIX) && k.length > XATTR_PREFIX.length) xattrs.set(k.slice(XATTR_PREFIX.length), v);
  }
  const path = merged.get('path');
  const linkpath = merged.get('linkpath');
  for (const [k, v] of [['path', path], ['linkpath', linkpath]] as const) {
    if (v?.includes(0)) throw new TarFormatError(`PAX ${k} contains a NUL byte`);
  }
  const size = paxInt(merged, 'size');
  const uid = paxInt(merged, 'uid');
  const gid = paxInt(merged, 'gid');
  const mt = merged.get('mtime');
  return {
    ...(path !== undefined ? { path } : {}),
    ...(linkpath !== undefined ? { linkpath } : {}),
    ...(size !== undefined ? { size } : {}),
    ...(uid !== undefined ? { uid } : {}),
    ...(gid !== undefined ? { gid } : {}),
    ...(mt !== undefined ? { mtime: parsePaxTime(mt.toString('latin1')) } : {}),
    // One shared empty map: most entries have no xattrs, and a Map per file adds up over 100k files.
    xattrs: xattrs.size > 0 ? xattrs : NO_XATTRS,
    local,
    merged,
  };
}

/** A non-negative decimal record, or undefined when absent. */
export function paxInt(records: ReadonlyMap<string, Buffer>, key: string): number | undefined {
  const v = records.get(key);
  if (v === undefined) return undefined;
  return parseDecimal(v.toString('latin1'), `PAX ${key}`);
}

export function parseDecimal(text: string, what: string): number {
  if (!/^[0-9]{1,16}$/.test(text)) throw new TarFormatError(`bad ${what} "${text.slice(0, 40)}"`);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new TarFormatError(`${what} ${text} is too large`);
  return n;
}

/**
 * `[-]SECONDS[.FRACTION]` as Go's archive/tar reads it: the fraction is
 * truncated to nanoseconds and, for a negative time, counts towards the past
 * (`-1.5` is 1.5 s before the epoch: { sec: -2, nsec: 500000000 }).
 */
export function parsePaxTime(text: string): Timestamp {
  const m = /^([+-]?)([0-9]{1,16})(?:\.([0-9]*))?$/.exec(text);
  if (m === null) throw new TarFormatError(`bad PAX time "${text.slice(0, 40)}"`);
  const negative = m[1] === '-';
  const whole = Number(m[2]);
  if (!Number.isSafeInteger(whole)) throw new TarFormatError(`PAX time ${text} is out of range`);
  const nsec = Number(((m[3] ?? '') + '000000000').slice(0, 9));
  if (!negative) return { sec: whole, nsec };
  if (nsec === 0) return { sec: whole === 0 ? 0 : -whole, nsec: 0 };
  return { sec: -whole - 1, nsec: 1_000_000_000 - nsec };
}
