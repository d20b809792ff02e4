/**
 * NBD wire constants and the fixed-size headers, encoded and decoded in one
 * place. Everything is big-endian. Sources: NetworkBlockDevice/nbd
 * doc/proto.md, summarised in shared/reference/nbd.md.
 */

// --- handshake -----------------------------------------------------------------

/** "NBDMAGIC", the first 8 bytes a server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": newstyle greeting, and the magic of every client option. */
export const IHAVEOPT = 0x49484156454f5054n;
/** Magic of every option reply. */
export const OPT_REPLY_MAGIC = 0x0003e889045565a9n;

/** Handshake flags (server → client, u16). */
export const HandshakeFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

/** Client flags (client → server, u32). */
export const ClientFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

export const Opt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

const REP_ERR = 0x80000000;
export const Rep = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: REP_ERR + 1,
  ERR_POLICY: REP_ERR + 2,
  ERR_INVALID: REP_ERR + 3,
  ERR_PLATFORM: REP_ERR + 4,
  ERR_TLS_REQD: REP_ERR + 5,
  ERR_UNKNOWN: REP_ERR + 6,
  ERR_SHUTDOWN: REP_ERR + 7,
  ERR_BLOCK_SIZE_REQD: REP_ERR + 8,
  ERR_TOO_BIG: REP_ERR + 9,
} as const;

export function isErrorReply(type: number): boolean {
  return type >= REP_ERR;
}

export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** Transmission flags (u16, in the EXPORT_NAME reply and NBD_INFO_EXPORT). */
export const TxFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

// --- transmission --------------------------------------------------------------

export const REQUEST_MAGIC = 0x25609513;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const STRUCTURED_REPLY_HEADER_SIZE = 20;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const REQUEST_HEADER_SIZE = 28;
export const SIMPLE_REPLY_HEADER_SIZE = 16;
/** Largest payload any interoperable client sends or expects (proto.md: 32 MiB). */
export const MAX_PAYLOAD = 32 * 1024 * 1024;

export const Cmd = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

export type CommandName = 'read' | 'write' | 'disc' | 'flush' | 'trim' | 'cache' | 'write-zeroes' | 'block-status' | 'unknown';

const COMMAND_NAMES: readonly CommandName[] = ['read', 'write', 'disc', 'flush', 'trim', 'cache', 'write-zeroes', 'block-status'];

export function commandName(type: number): CommandName {
  return COMMAND_NAMES[type] ?? 'unknown';
}

export const CmdFlag = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const;

/** NBD error values (u32 in replies); 0 is success. */
export const Err = {
  OK: 0,
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

export type ErrValue = (typeof Err)[keyof typeof Err];

// --- encoders ------------------------------------------------------------------

/** The 18-byte fixed-newstyle greeting. */
export function encodeGreeting(flags: number): Buffer {
  const b = Buffer.alloc(18);
  b.writeBigUInt64BE(NBD_MAGIC, 0);
  b.writeBigUInt64BE(IHAVEOPT, 8);
  b.writeUInt16BE(flags, 16);
  return b;
}

export const OPTION_HEADER_SIZE = 16;

export interface OptionHeader {
  readonly magic: bigint;
  readonly option: number;
  readonly length: number;
}

export function decodeOptionHeader(b: Buffer): OptionHeader {
  return { magic: b.readBigUInt64BE(0), option: b.readUInt32BE(8), length: b.readUInt32BE(12) };
}

/** A client option (for test clients). */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(OPTION_HEADER_SIZE);
  h.writeBigUInt64BE(IHAVEOPT, 0);
  h.writeUInt32BE(option, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

export const OPTION_REPLY_HEADER_SIZE = 20;

export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(OPTION_REPLY_HEADER_SIZE + data.length);
  b.writeBigUInt64BE(OPT_REPLY_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, OPTION_REPLY_HEADER_SIZE);
  return b;
}

export interface OptionReplyHeader {
  readonly magic: bigint;
  readonly option: number;
  readonly type: number;
  readonly length: number;
}

export function decodeOptionReplyHeader(b: Buffer): OptionReplyHeader {
  return { magic: b.readBigUInt64BE(0), option: b.readUInt32BE(8), type: b.readUInt32BE(12), length: b.readUInt32BE(16) };
}

/** Payload of NBD_REP_SERVER: u32 name length, name, then optional description. */
export function encodeServerEntry(name: string, description: string | undefined): Buffer {
  const n = Buffer.from(name, 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(n.length, 0);
  return Buffer.concat([len, n, Buffer.from(description ?? '', 'utf8')]);
}

export function encodeInfoExport(size: number, flags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(Info.EXPORT, 0);
  b.writeBigUInt64BE(BigInt(size), 2);
  b.writeUInt16BE(flags, 10);
  return b;
}

export function encodeInfoText(type: typeof Info.NAME | typeof Info.DESCRIPTION, text: string): Buffer {
  const t = Buffer.alloc(2);
  t.writeUInt16BE(type, 0);
  return Buffer.concat([t, Buffer.from(text, 'utf8')]);
}

export interface BlockSizes {
  readonly minimum: number;
  readonly preferred: number;
  readonly maximum: number;
}

export function encodeInfoBlockSize(s: BlockSizes): Buffer {
  const b = Buffer.alloc(14);
  b.writeUInt16BE(Info.BLOCK_SIZE, 0);
  b.writeUInt32BE(s.minimum, 2);
  b.writeUInt32BE(s.preferred, 6);
  b.writeUInt32BE(s.maximum, 10);
  return b;
}

/** The EXPORT_NAME answer: size, flags, and 124 zero bytes unless NO_ZEROES was agreed. */
export function encodeExportNameReply(size: number, flags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(10 + (noZeroes ? 0 : 124));
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(flags, 8);
  return b;
}

/** Data of an INFO/GO option: u32 name length, name, u16 count, count × u16 info type. */
export function encodeInfoRequest(name: string, infos: readonly number[]): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, 6 + n.length + 2 * i));
  return b;
}

export type InfoRequest = { readonly ok: true; readonly name: string; readonly infos: readonly number[] } | { readonly ok: false; readonly problem: string };

/** Parses INFO/GO option data; lengths must add up exactly. */
export function decodeInfoRequest(data: Buffer): InfoRequest {
  if (data.length < 6) return { ok: false, problem: `option data is ${data.length} bytes, at least 6 needed` };
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 6) return { ok: false, problem: `export name length ${nameLen} exceeds the option data` };
  const name = data.toString('utf8', 4, 4 + nameLen);
  const count = data.readUInt16BE(4 + nameLen);
  if (data.length !== 6 + nameLen + 2 * count) return { ok: false, problem: `${count} info requests do not match the option length ${data.length}` };
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(6 + nameLen + 2 * i));
  return { ok: true, name, infos };
}

export interface RequestHeader {
  readonly magic: number;
  readonly flags: number;
  readonly type: number;
  /** Opaque; echoed in the reply. */
  readonly cookie: bigint;
  /** u64 on the wire: kept as bigint so absurd offsets cannot wrap. */
  readonly offset: bigint;
  readonly length: number;
}

export function decodeRequestHeader(b: Buffer): RequestHeader {
  return {
    magic: b.readUInt32BE(0),
    flags: b.readUInt16BE(4),
    type: b.readUInt16BE(6),
    cookie: b.readBigUInt64BE(8),
    offset: b.readBigUInt64BE(16),
    length: b.readUInt32BE(24),
  };
}

export function encodeRequestHeader(r: Omit<RequestHeader, 'magic'> & { readonly magic?: number }): Buffer {
  const b = Buffer.alloc(REQUEST_HEADER_SIZE);
  b.writeUInt32BE(r.magic ?? REQUEST_MAGIC, 0);
  b.writeUInt16BE(r.flags, 4);
  b.writeUInt16BE(r.type, 6);
  b.writeBigUInt64BE(r.cookie, 8);
  b.writeBigUInt64BE(r.offset, 16);
  b.writeUInt32BE(r.length, 24);
  return b;
}

export function encodeSimpleReply(error: number, cookie: bigint): Buffer {
  const b = Buffer.alloc(SIMPLE_REPLY_HEADER_SIZE);
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  b.writeBigUInt64BE(cookie, 8);
  return b;
}

export interface SimpleReplyHeader {
  readonly magic: number;
  readonly error: number;
  readonly cookie: bigint;
}

export function decodeSimpleReply(b: Buffer): SimpleReplyHeader {
  return { magic: b.readUInt32BE(0), error: b.readUInt32BE(4), cookie: b.readBigUInt64BE(8) };
}

// --- structured replies and metadata contexts (reference §7) ----------------------

/** Structured reply chunk flags. */
export const ReplyFlag = {
  DONE: 1 << 0,
} as const;

/** Structured reply chunk types. */
export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: (1 << 15) + 1,
  ERROR_OFFSET: (1 << 15) + 2,
} as const;

/** The one metadata context the spec defines (and the only one served). */
export const BASE_ALLOCATION = 'base:allocation';

/** `base:allocation` status flags of a block status descriptor. */
export const State = {
  HOLE: 1 << 0,
  ZERO: 1 << 1,
} as const;

/** The header of one structured reply chunk; `payloadLength` bytes follow it. */
export function encodeChunkHeader(flags: number, type: number, cookie: bigint, payloadLength: number): Buffer {
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_SIZE);
  b.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeUInt32BE(payloadLength, 16);
  return b;
}

export interface ChunkHeader {
  readonly magic: number;
  readonly flags: number;
  readonly type: number;
  readonly cookie: bigint;
  readonly length: number;
}

export function decodeChunkHeader(b: Buffer): ChunkHeader {
  return { magic: b.readUInt32BE(0), flags: b.readUInt16BE(4), type: b.readUInt16BE(6), cookie: b.readBigUInt64BE(8), length: b.readUInt32BE(16) };
}

/** OFFSET_DATA: header and the 8-byte offset; the data itself follows as its own buffer (not copied). */
export function encodeDataChunkHead(flags: number, cookie: bigint, offset: number, dataLength: number): Buffer {
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_SIZE + 8);
  encodeChunkHeader(flags, ReplyType.OFFSET_DATA, cookie, 8 + dataLength).copy(b, 0);
  b.writeBigUInt64BE(BigInt(offset), STRUCTURED_REPLY_HEADER_SIZE);
  return b;
}

/** OFFSET_HOLE: `length` (≥ 1) bytes from `offset` read as zeros. */
export function encodeHoleChunk(flags: number, cookie: bigint, offset: number, length: number): Buffer {
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_SIZE + 12);
  encodeChunkHeader(flags, ReplyType.OFFSET_HOLE, cookie, 12).copy(b, 0);
  b.writeBigUInt64BE(BigInt(offset), STRUCTURED_REPLY_HEADER_SIZE);
  b.writeUInt32BE(length, STRUCTURED_REPLY_HEADER_SIZE + 8);
  return b;
}

/** An ERROR chunk (or ERROR_OFFSET when `offset` is given) with a human-readable message (cut to 4096 bytes). */
export function encodeErrorChunk(flags: number, cookie: bigint, error: number, message: string, offset?: number): Buffer {
  let msg = Buffer.from(message, 'utf8');
  if (msg.length > 4096) msg = msg.subarray(0, 4096);
  const extra = offset === undefined ? 0 : 8;
  const payload = Buffer.alloc(6 + msg.length + extra);
  payload.writeUInt32BE(error, 0);
  payload.writeUInt16BE(msg.length, 4);
  msg.copy(payload, 6);
  if (offset !== undefined) payload.writeBigUInt64BE(BigInt(offset), 6 + msg.length);
  return Buffer.concat([encodeChunkHeader(flags, offset === undefined ? ReplyType.ERROR : ReplyType.ERROR_OFFSET, cookie, payload.length), payload]);
}

/** A BLOCK_STATUS chunk for one context: u32 context id, then (u32 length, u32 flags) per descriptor. */
export function encodeBlockStatusChunk(flags: number, cookie: bigint, contextId: number, descriptors: readonly { readonly length: number; readonly flags: number }[]): Buffer {
  const payload = Buffer.alloc(4 + 8 * descriptors.length);
  payload.writeUInt32BE(contextId, 0);
  descriptors.forEach((d, i) => {
    payload.writeUInt32BE(d.length, 4 + 8 * i);
    payload.writeUInt32BE(d.flags, 8 + 8 * i);
  });
  return Buffer.concat([encodeChunkHeader(flags, ReplyType.BLOCK_STATUS, cookie, payload.length), payload]);
}

/** Payload of NBD_REP_META_CONTEXT: u32 context id, then the name. */
export function encodeMetaContextReply(id: number, name: string): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(id, 0);
  return Buffer.concat([b, Buffer.from(name, 'utf8')]);
}

/** Data of LIST/SET_META_CONTEXT: u32 name length, name, u32 query count, each query as u32 length + string. */
export function encodeMetaContextRequest(name: string, queries: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  const u32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n, 0);
    return b;
  };
  const n = Buffer.from(name, 'utf8');
  parts.push(u32(n.length), n, u32(queries.length));
  for (const q of queries) {
    const qb = Buffer.from(q, 'utf8');
    parts.push(u32(qb.length), qb);
  }
  return Buffer.concat(parts);
}

export type MetaContextRequest =
  | { readonly ok: true; readonly name: string; readonly queries: readonly string[] }
  | { readonly ok: false; readonly problem: string };

/** Parses LIST/SET_META_CONTEXT option data; lengths must add up exactly. */
export function decodeMetaContextRequest(data: Buffer): MetaContextRequest {
  if (data.length < 8) return { ok: false, problem: `option data is ${data.length} bytes, at least 8 needed` };
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 8) return { ok: false, problem: `export name length ${nameLen} exceeds the option data` };
  const name = data.toString('utf8', 4, 4 + nameLen);
  const count = data.readUInt32BE(4 + nameLen);
  const queries: string[] = [];
  let pos = 8 + nameLen;
  for (let i = 0; i < count; i++) {
    if (pos + 4 > data.length) return { ok: false, problem: `query ${i} of ${count} lies past the end of the option data` };
    const len = data.readUInt32BE(pos);
    if (len > data.length - pos - 4) return { ok: false, problem: `query ${i} length ${len} exceeds the option data` };
    queries.push(data.toString('utf8', pos + 4, pos + 4 + len));
    pos += 4 + len;
  }
  if (pos !== data.length) return { ok: false, problem: `${data.length - pos} bytes left over after ${count} queries` };
  return { ok: true, name, queries };
}
