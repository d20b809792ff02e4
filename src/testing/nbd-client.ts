/**
 * A tiny raw NBD client for protocol tests: it sends exactly the bytes a test
 * asks for (including wrong ones) and decodes what comes back: simple
 * replies, and structured reply chunks once a test negotiated them.
 * Test-only code.
 */
import net from 'node:net';
import type { Socket } from 'node:net';
import {
  ClientFlag,
  Cmd,
  decodeChunkHeader,
  decodeOptionReplyHeader,
  decodeSimpleReply,
  encodeInfoRequest,
  encodeOption,
  encodeRequestHeader,
  Info,
  isErrorReply,
  Opt,
  OPT_REPLY_MAGIC,
  OPTION_REPLY_HEADER_SIZE,
  Rep,
  SIMPLE_REPLY_HEADER_SIZE,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_HEADER_SIZE,
  STRUCTURED_REPLY_MAGIC,
} from '../serve/nbd/protocol.js';
import type { NbdAddress } from '../serve/nbd/server.js';
import { SocketReader } from '../serve/nbd/socket-reader.js';

export interface OptionReply {
  readonly option: number;
  readonly type: number;
  readonly data: Buffer;
}

export interface SimpleReply {
  readonly error: number;
  readonly cookie: bigint;
  /** Payload of a successful READ. */
  readonly data?: Buffer;
}

/** One structured reply chunk, raw. */
export interface ReplyChunk {
  readonly flags: number;
  readonly type: number;
  readonly cookie: bigint;
  readonly payload: Buffer;
}

/** The next message on the wire, whichever kind it is. */
export type ReplyMessage = ({ readonly kind: 'simple' } & SimpleReply) | ({ readonly kind: 'chunk' } & ReplyChunk);

export interface RequestSpec {
  readonly type: number;
  readonly offset: number | bigint;
  readonly length: number;
  readonly cookie?: bigint;
  readonly flags?: number;
  readonly magic?: number;
  /** WRITE payload (sent right after the header). */
  readonly data?: Buffer;
}

/** INFO/GO answers, decoded. */
export interface ExportInfo {
  readonly size: number;
  readonly flags: number;
  readonly name?: string;
  readonly description?: string;
  readonly blockSizes?: { minimum: number; preferred: number; maximum: number };
  /** Every NBD_REP_INFO payload in order, raw. */
  readonly raw: readonly Buffer[];
}

export class RawNbdClient {
  readonly socket: Socket;
  readonly reader: SocketReader;
  readonly closed: Promise<void>;
  /** READ requests whose reply is still due: cookie -> length. */
  readonly #reads = new Map<bigint, number>();
  #nextCookie = 1n;

  private constructor(socket: Socket) {
    this.socket = socket;
    this.reader = new SocketReader(socket, { highWater: 64 * 1024 * 1024 });
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => {});
  }

  static connect(address: NbdAddress): Promise<RawNbdClient> {
    return new Promise((resolve, reject) => {
      const s = 'unix' in address ? net.connect({ path: address.unix }) : net.connect({ host: address.tcp.host, port: address.tcp.port });
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new RawNbdClient(s));
      });
    });
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  /** The 18-byte greeting. */
  readGreeting(): Promise<Buffer> {
    return this.reader.read(18);
  }

  /** Greeting, then client flags (default FIXED_NEWSTYLE|NO_ZEROES). */
  async start(clientFlags: number = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES): Promise<void> {
    await this.readGreeting();
    const f = Buffer.alloc(4);
    f.writeUInt32BE(clientFlags >>> 0, 0);
    this.write(f);
  }

  async readOptionReply(): Promise<OptionReply> {
    const h = decodeOptionReplyHeader(await this.reader.read(OPTION_REPLY_HEADER_SIZE));
    if (h.magic !== OPT_REPLY_MAGIC) throw new Error(`bad option reply magic 0x${h.magic.toString(16)}`);
    return { option: h.option, type: h.type, data: await this.reader.read(h.length) };
  }

  /** Sends an option and collects replies up to and including the final one (ACK or an error). */
  async option(option: number, data: Buffer = Buffer.alloc(0)): Promise<OptionReply[]> {
    this.write(encodeOption(option, data));
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.readOptionReply();
      if (r.option !== option) throw new Error(`reply for option ${r.option} while waiting for ${option}`);
      out.push(r);
      if (r.type === Rep.ACK || isErrorReply(r.type)) return out;
    }
  }

  /** INFO or GO for `name`; throws on an error reply (its type in the message). */
  async info(which: 'info' | 'go', name: string, infos: readonly number[] = [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE]): Promise<ExportInfo> {
    const replies = await this.option(which === 'go' ? Opt.GO : Opt.INFO, encodeInfoRequest(name, infos));
    const last = replies[replies.length - 1]!;
    if (last.type !== Rep.ACK) throw new Error(`option error 0x${last.type.toString(16)}: ${last.data.toString('utf8')}`);
    return decodeInfos(replies.filter((r) => r.type === Rep.INFO).map((r) => r.data));
  }

  /** Full handshake by GO; resolves with the export's info. */
  async go(name = ''): Promise<ExportInfo> {
    await this.start();
    return this.info('go', name);
  }

  /** Sends one request; a READ's expected length is remembered for its reply. */
  send(req: RequestSpec): bigint {
    const cookie = req.cookie ?? this.#nextCookie++;
    if (req.type === Cmd.READ) this.#reads.set(cookie, req.length);
    const h = encodeRequestHeader({
      flags: req.flags ?? 0,
      type: req.type,
      cookie,
      offset: BigInt(req.offset),
      length: req.length,
      ...(req.magic !== undefined ? { magic: req.magic } : {}),
    });
    this.write(req.data !== undefined ? Buffer.concat([h, req.data]) : h);
    return cookie;
  }

  async reply(): Promise<SimpleReply> {
    const m = await this.message();
    if (m.kind !== 'simple') throw new Error(`structured chunk (type ${m.type}) where a simple reply was expected`);
    const { kind: _, ...r } = m;
    return r;
  }

  /** The next simple reply or structured chunk (told apart by its magic). */
  async message(): Promise<ReplyMessage> {
    const magic = (await this.reader.read(4)).readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const h = decodeSimpleReply(Buffer.concat([Buffer.alloc(4), await this.reader.read(SIMPLE_REPLY_HEADER_SIZE - 4)]));
      const len = this.#reads.get(h.cookie);
      this.#reads.delete(h.cookie);
      if (h.error === 0 && len !== undefined) return { kind: 'simple', error: 0, cookie: h.cookie, data: await this.reader.read(len) };
      return { kind: 'simple', error: h.error, cookie: h.cookie };
    }
    if (magic === STRUCTURED_REPLY_MAGIC) {
      const h = decodeChunkHeader(Buffer.concat([Buffer.alloc(4), await this.reader.read(STRUCTURED_REPLY_HEADER_SIZE - 4)]));
      return { kind: 'chunk', flags: h.flags, type: h.type, cookie: h.cookie, payload: await this.reader.read(h.length) };
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }

  /** One request, then every chunk of its structured reply up to the one flagged DONE (sequential tests). */
  async structured(req: RequestSpec): Promise<ReplyChunk[]> {
    const cookie = this.send(req);
    this.#reads.delete(cookie);
    const out: ReplyChunk[] = [];
    for (;;) {
      const m = await this.message();
      if (m.kind !== 'chunk') throw new Error(`simple reply (error ${m.error}) where a structured reply was expected`);
      if (m.cookie !== cookie) throw new Error(`chunk for cookie ${m.cookie} while waiting for ${cookie}`);
      const { kind: _, ...c } = m;
      out.push(c);
      if ((c.flags & 1) !== 0) return out;
    }
  }

  /** One request, then its reply (for sequential tests). */
  async request(req: RequestSpec): Promise<SimpleReply> {
    const cookie = this.send(req);
    const r = await this.reply();
    if (r.cookie !== cookie) throw new Error(`reply cookie ${r.cookie} for request ${cookie}`);
    return r;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export function decodeInfos(payloads: readonly Buffer[]): ExportInfo {
  let size = -1;
  let flags = -1;
  let name: string | undefined;
  let description: string | undefined;
  let blockSizes: ExportInfo['blockSizes'];
  for (const p of payloads) {
    const type = p.readUInt16BE(0);
    if (type === Info.EXPORT) {
      size = Number(p.readBigUInt64BE(2));
      flags = p.readUInt16BE(10);
    } else if (type === Info.NAME) name = p.toString('utf8', 2);
    else if (type === Info.DESCRIPTION) description = p.toString('utf8', 2);
    else if (type === Info.BLOCK_SIZE) blockSizes = { minimum: p.readUInt32BE(2), preferred: p.readUInt32BE(6), maximum: p.readUInt32BE(10) };
  }
  return {
    size,
    flags,
    raw: payloads,
    ...(name !== undefined ? { name } : {}),
    ...(description !== undefined ? { description } : {}),
    ...(blockSizes !== undefined ? { blockSizes } : {}),
  };
}
