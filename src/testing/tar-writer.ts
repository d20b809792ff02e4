/**
 * A small tar writer for tests: well-formed layers (USTAR, PAX records with
 * binary values, GNU long names, base-256 numbers) and deliberately bad ones
 * (hostile names, no footer, truncation, raw blocks). Test-only code.
 *
 *   tarOf([
 *     { name: 'etc/', type: 'dir' },
 *     { name: 'etc/passwd', data: 'root:x:0:0::/root:/bin/sh\n' },
 *     { name: 'bin/sh', type: 'symlink', linkname: 'busybox' },
 *     { name: 'usr/.wh.share' },                       // a whiteout
 *     { name: 'cap', data: 'x', pax: { 'SCHILY.xattr.security.capability': Buffer.from('0100000200040000', 'hex') } },
 *   ])
 */

export type TarType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

/** PAX records, in order (an array may repeat keys). Strings are written as UTF-8. */
export type PaxInput = Readonly<Record<string, string | Buffer>> | ReadonlyArray<readonly [string, string | Buffer]>;

export interface TarEntrySpec {
  /** Written as given (strings as UTF-8): no cleaning, so '../x' and '/abs' stay hostile. */
  readonly name: string | Buffer;
  /** @default 'file' */
  readonly type?: TarType;
  /** Raw typeflag character; overrides `type` (e.g. '7', 'S', 'V', 'Z', '\0'). */
  readonly typeflag?: string;
  readonly data?: string | Buffer;
  /** The header's size field. @default data length for files, else 0 */
  readonly size?: number;
  /** Symlink target or hardlink target. */
  readonly linkname?: string | Buffer;
  /** @default 0o644 (0o755 dirs, 0o777 symlinks) */
  readonly mode?: number;
  /** @default 0 */
  readonly uid?: number;
  /** @default 0 */
  readonly gid?: number;
  /** Seconds (negative values are written base-256). @default 0 */
  readonly mtime?: number;
  readonly devmajor?: number;
  readonly devminor?: number;
  /** Records of a PAX 'x' header written just before this entry. */
  readonly pax?: PaxInput;
  /** How a name or linkname over 100 bytes is written. @default 'pax' */
  readonly longNames?: 'pax' | 'gnu' | 'prefix';
  /** Header magic: 'ustar' (`ustar\0` 00), 'gnu' (`ustar ` ` \0`) or 'v7' (none). @default 'ustar' */
  readonly format?: 'ustar' | 'gnu' | 'v7';
  /** Numeric fields to write in base-256 even when they fit in octal. */
  readonly base256?: ReadonlyArray<'uid' | 'gid' | 'size' | 'mtime'>;
}

export type TarItem =
  | TarEntrySpec
  /** A PAX global header ('g'): defaults for all later entries. */
  | { readonly globalPax: PaxInput }
  /** Bytes appended as they are (hand-made headers, garbage). */
  | { readonly raw: Buffer };

export interface TarOptions {
  /** Write the two zero blocks that end an archive. @default true */
  readonly footer?: boolean;
}

const TYPEFLAG: Record<TarType, string> = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };

/** A whole tar archive in memory. */
export function tarOf(items: readonly TarItem[], options: TarOptions = {}): Buffer {
  const parts: Buffer[] = [];
  for (const item of items) {
    if ('raw' in item) parts.push(item.raw);
    else if ('globalPax' in item) parts.push(...withData({ name: 'pax_global_header', typeflag: 'g' }, paxRecords(item.globalPax)));
    else parts.push(...entryBlocks(item));
  }
  if (options.footer !== false) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** Header + data + padding for one entry, preceded by any PAX / GNU long-name entries it needs. */
export function entryBlocks(spec: TarEntrySpec): Buffer[] {
  const out: Buffer[] = [];
  const name = toBytes(spec.name);
  const link = spec.linkname !== undefined ? toBytes(spec.linkname) : Buffer.alloc(0);
  const how = spec.longNames ?? 'pax';
  const pax: Array<[string, string | Buffer]> = spec.pax === undefined ? [] : paxList(spec.pax);
  let headerName: Buffer = name;
  let prefix: Buffer = Buffer.alloc(0);
  if (name.length > 100) {
    if (how === 'gnu') out.push(...withData({ name: '././@LongLink', typeflag: 'L', format: 'gnu' }, Buffer.concat([name, Buffer.alloc(1)])));
    else if (how === 'pax' && !pax.some(([k]) => k === 'path')) pax.unshift(['path', name]);
    if (how === 'prefix') {
      const cut = name.lastIndexOf(0x2f, name.length - 2);
      if (cut <= 0 || cut > 155 || name.length - cut - 1 > 100) throw new RangeError(`tarOf: cannot split "${name}" into prefix and name`);
      prefix = name.subarray(0, cut);
      headerName = name.subarray(cut + 1);
    } else headerName = name.subarray(0, 100);
  }
  let headerLink: Buffer = link;
  if (link.length > 100) {
    if (how === 'gnu') out.push(...withData({ name: '././@LongLink', typeflag: 'K', format: 'gnu' }, Buffer.concat([link, Buffer.alloc(1)])));
    else if (!pax.some(([k]) => k === 'linkpath')) pax.unshift(['linkpath', link]);
    headerLink = link.subarray(0, 100);
  }
  if (pax.length > 0) out.unshift(...withData({ name: `PaxHeaders/${headerName.toString('latin1').slice(0, 80)}`, typeflag: 'x' }, paxRecords(pax)));

  const type = spec.type ?? 'file';
  const data = spec.data === undefined ? Buffer.alloc(0) : toBytes(spec.data);
  const fields: HeaderFields = {
    name: headerName,
    prefix,
    linkname: headerLink,
    typeflag: spec.typeflag ?? TYPEFLAG[type],
    mode: spec.mode ?? (type === 'dir' ? 0o755 : type === 'symlink' ? 0o777 : 0o644),
    uid: spec.uid ?? 0,
    gid: spec.gid ?? 0,
    size: spec.size ?? data.length,
    mtime: spec.mtime ?? 0,
    devmajor: spec.devmajor ?? 0,
    devminor: spec.devminor ?? 0,
    format: spec.format ?? 'ustar',
    base256: spec.base256 ?? [],
  };
  out.push(...withData(fields, data, false));
  return out;
}

export interface HeaderFields {
  readonly name: string | Buffer;
  readonly typeflag: string;
  readonly prefix?: string | Buffer;
  readonly linkname?: string | Buffer;
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly size?: number;
  readonly mtime?: number;
  readonly devmajor?: number;
  readonly devminor?: number;
  readonly format?: 'ustar' | 'gnu' | 'v7';
  readonly base256?: ReadonlyArray<'uid' | 'gid' | 'size' | 'mtime'>;
  /** Bytes to write at given offsets after the fields (e.g. a GNU sparse map), before the checksum. */
  readonly patch?: ReadonlyArray<readonly [offset: number, bytes: Buffer]>;
}

/** One 512-byte header with a correct (unsigned) checksum. */
export function tarHeader(f: HeaderFields): Buffer {
  const b = Buffer.alloc(512);
  const put = (at: number, len: number, v: string | Buffer): void => {
    const bytes = toBytes(v);
    if (bytes.length > len) throw new RangeError(`tarHeader: ${bytes.length} bytes do not fit a ${len}-byte field`);
    bytes.copy(b, at);
  };
  const b256 = new Set(f.base256 ?? []);
  const num = (at: number, len: number, v: number, field?: 'uid' | 'gid' | 'size' | 'mtime'): void => {
    if ((field !== undefined && b256.has(field)) || v < 0 || v >= 8 ** (len - 1)) base256(v, len).copy(b, at);
    else put(at, len, v.toString(8).padStart(len - 1, '0') + '\0');
  };
  put(0, 100, f.name);
  num(100, 8, f.mode ?? 0o644);
  num(108, 8, f.uid ?? 0, 'uid');
  num(116, 8, f.gid ?? 0, 'gid');
  num(124, 12, f.size ?? 0, 'size');
  num(136, 12, f.mtime ?? 0, 'mtime');
  b[156] = f.typeflag.charCodeAt(0);
  put(157, 100, f.linkname ?? '');
  const format = f.format ?? 'ustar';
  if (format === 'ustar') put(257, 8, 'ustar\x0000');
  if (format === 'gnu') put(257, 8, 'ustar  \0');
  if (format !== 'v7') {
    put(265, 32, 'root');
    put(297, 32, 'root');
    num(329, 8, f.devmajor ?? 0);
    num(337, 8, f.devminor ?? 0);
  }
  if (f.prefix !== undefined && toBytes(f.prefix).length > 0) put(345, 155, f.prefix);
  for (const [at, bytes] of f.patch ?? []) bytes.copy(b, at);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of b) sum += c;
  put(148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
  return b;
}

/** Big-endian two's complement with the 0x80 marker (GNU base-256). */
export function base256(v: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  let x = BigInt(v);
  if (x < 0n) x += 1n << BigInt(8 * len);
  for (let i = len - 1; i >= 0; i--) {
    b[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  b[0] = (b[0] ?? 0) | 0x80;
  return b;
}

/** `"<len> <key>=<value>\n"` records. */
export function paxRecords(records: PaxInput): Buffer {
  return Buffer.concat(
    paxList(records).map(([k, v]) => {
      const body = Buffer.concat([Buffer.from(` ${k}=`, 'utf8'), toBytes(v), Buffer.from('\n')]);
      let len = body.length + 1;
      while (String(len).length + body.length !== len) len = String(len).length + body.length;
      return Buffer.concat([Buffer.from(String(len)), body]);
    }),
  );
}

function paxList(p: PaxInput): Array<[string, string | Buffer]> {
  return Array.isArray(p) ? p.map(([k, v]) => [k, v] as [string, string | Buffer]) : Object.entries(p as Record<string, string | Buffer>);
}

/** Header + data padded to whole blocks. */
function withData(f: HeaderFields, data: Buffer, sizeFromData = true): Buffer[] {
  const header = tarHeader(sizeFromData ? { ...f, size: data.length } : f);
  const pad = (512 - (data.length % 512)) % 512;
  return [header, data, Buffer.alloc(pad)];
}

function toBytes(v: string | Buffer): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
}
