/**
 * The fixed-newstyle NBD handshake, server side: greeting, client flags,
 * then the option loop until the client picks an export (EXPORT_NAME or GO),
 * aborts, or misbehaves. Options: EXPORT_NAME, GO, INFO, LIST, ABORT,
 * STRUCTURED_REPLY, and LIST/SET_META_CONTEXT for `base:allocation` only
 * (both only after STRUCTURED_REPLY, as the spec asks); everything else —
 * STARTTLS, extended headers, unknown numbers — gets ERR_UNSUP after its data
 * is consumed (shared/reference/nbd.md §2, §7). Clients that never ask for
 * structured replies (the kernel, nbd-client) see the same server as before.
 *
 * Protocol violations are not exceptions: they end the session with an
 * outcome the server reports and then closes on.
 */
import type { SocketReader } from './socket-reader.js';
import { SocketClosedError } from './socket-reader.js';
import {
  ClientFlag,
  BASE_ALLOCATION,
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoText,
  encodeMetaContextReply,
  encodeOptionReply,
  encodeServerEntry,
  HandshakeFlag,
  IHAVEOPT,
  Info,
  MAX_PAYLOAD,
  Opt,
  OPTION_HEADER_SIZE,
  Rep,
} from './protocol.js';
import type { BlockSizes } from './protocol.js';

/** What the handshake needs to know about one export. */
export interface HandshakeExport {
  readonly size: number;
  /** Transmission flags (TxFlag bits, HAS_FLAGS included). */
  readonly flags: number;
  readonly description?: string;
  readonly blockSizes: BlockSizes;
}

export interface HandshakeOptions {
  /** Exports by name; "" is the default export. */
  readonly exports: ReadonlyMap<string, HandshakeExport>;
  /** Larger option data is refused (ERR_TOO_BIG, then close). Default 64 KiB. */
  readonly maxOptionLength?: number;
}

/** What the client negotiated for transmission. */
export interface Negotiated {
  /** STRUCTURED_REPLY was acknowledged: READ replies must be structured. */
  readonly structuredReplies: boolean;
  /** The id of the `base:allocation` context when SET_META_CONTEXT selected it for this export, else null (BLOCK_STATUS is then invalid). */
  readonly allocationContext: number | null;
}

export type HandshakeOutcome =
  /** The client chose `name`; transmission starts with the next byte. */
  | { readonly kind: 'transmission'; readonly name: string; readonly export: HandshakeExport; readonly negotiated: Negotiated }
  /** The client sent ABORT (acknowledged): close quietly. */
  | { readonly kind: 'aborted' }
  /** The client went away during the handshake. */
  | { readonly kind: 'closed' }
  /** The client broke the protocol (or asked for an unknown export by EXPORT_NAME): close. */
  | { readonly kind: 'rejected'; readonly reason: string };

export const DEFAULT_MAX_OPTION_LENGTH = 64 * 1024;
/** The id SET_META_CONTEXT gives `base:allocation` (any u32 would do; LIST answers use 0 as the spec asks). */
export const ALLOCATION_CONTEXT_ID = 1;
export const DEFAULT_PREFERRED_BLOCK_SIZE = 512 * 1024;

/** Limits from the spec: strings are at most 4096 bytes. */
const MAX_STRING = 4096;

/**
 * The NBD_INFO_BLOCK_SIZE we advertise: minimum 512 (1 when the size is not
 * a multiple of 512, since libnbd refuses unaligned requests and could not
 * read the tail otherwise), the given preferred size, maximum 32 MiB.
 */
export function advertisedBlockSizes(size: number, preferred: number = DEFAULT_PREFERRED_BLOCK_SIZE): BlockSizes {
  if (!Number.isInteger(preferred) || preferred < 512 || preferred > MAX_PAYLOAD || (preferred & (preferred - 1)) !== 0) {
    throw new RangeError(`Cannot advertise a preferred NBD block size of ${preferred}: want a power of 2 from 512 to ${MAX_PAYLOAD}`);
  }
  return { minimum: size % 512 === 0 ? 512 : 1, preferred, maximum: MAX_PAYLOAD };
}

/**
 * Runs the handshake on a connection: sends the greeting through `send`,
 * reads the client's side from `reader`. Resolves with how it ended; never
 * rejects for anything the client does.
 */
export async function negotiate(send: (b: Buffer) => void, reader: SocketReader, options: HandshakeOptions): Promise<HandshakeOutcome> {
  try {
    return await run(send, reader, options);
  } catch (e) {
    if (e instanceof SocketClosedError) return { kind: 'closed' };
    throw e;
  }
}

async function run(send: (b: Buffer) => void, reader: SocketReader, options: HandshakeOptions): Promise<HandshakeOutcome> {
  const maxOption = options.maxOptionLength ?? DEFAULT_MAX_OPTION_LENGTH;
  send(encodeGreeting(HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES));

  const clientFlags = (await reader.read(4)).readUInt32BE(0);
  const known = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES;
  if ((clientFlags & ~known) !== 0) return { kind: 'rejected', reason: `unknown client flags 0x${clientFlags.toString(16)}` };
  // A client without C_FIXED_NEWSTYLE is treated as fixed anyway (the spec allows it).
  const noZeroes = (clientFlags & ClientFlag.NO_ZEROES) !== 0;
  let structuredReplies = false;
  /** The export SET_META_CONTEXT last selected `base:allocation` for; contexts only count for that export. */
  let allocationFor: string | undefined;
  const negotiated = (name: string): Negotiated => ({
    structuredReplies,
    allocationContext: allocationFor === name ? ALLOCATION_CONTEXT_ID : null,
  });

  for (;;) {
    const h = decodeOptionHeader(await reader.read(OPTION_HEADER_SIZE));
    if (h.magic !== IHAVEOPT) return { kind: 'rejected', reason: `bad option magic 0x${h.magic.toString(16)}` };
    const reply = (type: number, data?: Buffer): void => send(encodeOptionReply(h.option, type, data));
    const error = (type: number, message: string): void => reply(type, Buffer.from(message, 'utf8'));

    if (h.length > maxOption) {
      // Draining up to 4 GiB of junk is not worth it: refuse and close.
      if (h.option !== Opt.EXPORT_NAME) error(Rep.ERR_TOO_BIG, `option data of ${h.length} bytes exceeds ${maxOption}`);
      return { kind: 'rejected', reason: `option ${h.option} with ${h.length} bytes of data (limit ${maxOption})` };
    }
    const data = await reader.read(h.length);

    switch (h.option) {
      case Opt.EXPORT_NAME: {
        const name = data.toString('utf8');
        const exp = options.exports.get(name);
        // EXPORT_NAME has no error reply: an unknown name can only be answered by closing.
        if (exp === undefined) return { kind: 'rejected', reason: `unknown export ${JSON.stringify(truncate(name))} (EXPORT_NAME)` };
        send(encodeExportNameReply(exp.size, exp.flags, noZeroes));
        return { kind: 'transmission', name, export: exp, negotiated: negotiated(name) };
      }
      case Opt.ABORT:
        reply(Rep.ACK);
        return { kind: 'aborted' };
      case Opt.LIST:
        if (data.length !== 0) {
          error(Rep.ERR_INVALID, 'LIST takes no data');
          break;
        }
        for (const [name, exp] of options.exports) reply(Rep.SERVER, encodeServerEntry(name, exp.description));
        reply(Rep.ACK);
        break;
      case Opt.INFO:
      case Opt.GO: {
        const req = decodeInfoRequest(data);
        if (!req.ok) {
          error(Rep.ERR_INVALID, req.problem);
          break;
        }
        const exp = options.exports.get(req.name);
        if (exp === undefined) {
          error(Rep.ERR_UNKNOWN, `unknown export ${JSON.stringify(truncate(req.name))}`);
          break;
        }
        // EXPORT and BLOCK_SIZE always (clients must honour BLOCK_SIZE, and
        // never having to ask keeps old clients working); NAME and
        // DESCRIPTION when asked. INFO and GO answer identically.
        reply(Rep.INFO, encodeInfoExport(exp.size, exp.flags));
        reply(Rep.INFO, encodeInfoBlockSize(exp.blockSizes));
        if (req.infos.includes(Info.NAME)) reply(Rep.INFO, encodeInfoText(Info.NAME, req.name));
        if (req.infos.includes(Info.DESCRIPTION) && exp.description !== undefined) {
          reply(Rep.INFO, encodeInfoText(Info.DESCRIPTION, truncate(exp.description)));
        }
        reply(Rep.ACK);
        if (h.option === Opt.GO) return { kind: 'transmission', name: req.name, export: exp, negotiated: negotiated(req.name) };
        break;
      }
      case Opt.STRUCTURED_REPLY:
        if (data.length !== 0) {
          error(Rep.ERR_INVALID, 'STRUCTURED_REPLY takes no data');
          break;
        }
        // Once on, it stays on: a repeat (also after SET_META_CONTEXT, which needs it) is invalid.
        if (structuredReplies) {
          error(Rep.ERR_INVALID, 'structured replies are already negotiated');
          break;
        }
        structuredReplies = true;
        reply(Rep.ACK);
        break;
      case Opt.LIST_META_CONTEXT:
      case Opt.SET_META_CONTEXT: {
        const set = h.option === Opt.SET_META_CONTEXT;
        // SET replaces the selection whatever happens next, so a failed SET leaves none.
        if (set) allocationFor = undefined;
        if (!structuredReplies) {
          error(Rep.ERR_INVALID, `${set ? 'SET' : 'LIST'}_META_CONTEXT needs STRUCTURED_REPLY first`);
          break;
        }
        const req = decodeMetaContextRequest(data);
        if (!req.ok) {
          error(Rep.ERR_INVALID, req.problem);
          break;
        }
        if (options.exports.get(req.name) === undefined) {
          error(Rep.ERR_UNKNOWN, `unknown export ${JSON.stringify(truncate(req.name))}`);
          break;
        }
        // LIST: no query means every context, and a bare namespace ("base:") every context in it.
        // SET selects by exact name only. Other namespaces have no contexts here.
        const matches = req.queries.some((q) => q === BASE_ALLOCATION || (!set && q === 'base:')) || (!set && req.queries.length === 0);
        if (matches) {
          if (set) allocationFor = req.name;
          reply(Rep.META_CONTEXT, encodeMetaContextReply(set ? ALLOCATION_CONTEXT_ID : 0, BASE_ALLOCATION));
        }
        reply(Rep.ACK);
        break;
      }
      case Opt.STARTTLS:
        error(Rep.ERR_UNSUP, 'TLS is not supported');
        break;
      default:
        // Extended headers, PEEK_EXPORT, anything new.
        error(Rep.ERR_UNSUP, `option ${h.option} is not supported`);
        break;
    }
  }
}

/** At most MAX_STRING bytes of UTF-8 (cut at a character boundary). */
function truncate(s: string): string {
  const b = Buffer.from(s, 'utf8');
  if (b.length <= MAX_STRING) return s;
  let end = MAX_STRING;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.toString('utf8', 0, end);
}
