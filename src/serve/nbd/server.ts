/**
 * An NBD server over BlockDevices: fixed-newstyle handshake (handshake.ts),
 * then replies to pipelined requests: simple replies, or — for a client
 * that negotiated structured replies — structured READ replies (data chunks,
 * hole chunks where the device's `extents` says zeros, errors with a
 * message) and `base:allocation` BLOCK_STATUS, so clients can skip holes.
 * Other commands keep simple replies, which the spec allows for replies
 * without payload.
 *
 * Transmission: the request loop keeps reading requests while earlier ones
 * are served; each reply is written as one corked header+payload as soon as
 * its request completes, so replies go out of order but never interleave.
 * A connection holds at most `maxInFlight` requests (and `maxInFlightBytes`
 * of payload) between reading a request and queueing its reply, and stops
 * reading while the socket's unsent output exceeds that byte budget; once
 * the loop stops reading, the socket reader pauses the socket and TCP flow
 * control pushes back on the client. Memory per connection is therefore
 * bounded whatever the client sends or fails to read.
 *
 * Devices belong to the caller: the server never closes them. All
 * connections to an export share its device object, which is why
 * CAN_MULTI_CONN is advertised for writable exports too: a write completed
 * on one connection is visible to reads on every other (one overlay, one
 * bitmap), and FLUSH on any connection syncs the one scratch file that holds
 * every connection's writes. A caller that gave each connection its own
 * overlay would have to drop the flag; this server cannot do that.
 *
 * The server never logs: it reports through `onError` and `onRequest`.
 */
import { setMaxListeners } from 'node:events';
import { lstat, chmod, rm, unlink } from 'node:fs/promises';
import net from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { UsageError } from '../../errors.js';
import { isWritable } from '../../blockdev/device.js';
import type { BlockDevice, Extent } from '../../blockdev/device.js';
import { advertisedBlockSizes, DEFAULT_PREFERRED_BLOCK_SIZE, negotiate } from './handshake.js';
import type { HandshakeExport, Negotiated } from './handshake.js';
import {
  Cmd,
  CmdFlag,
  commandName,
  decodeRequestHeader,
  encodeBlockStatusChunk,
  encodeChunkHeader,
  encodeDataChunkHead,
  encodeErrorChunk,
  encodeHoleChunk,
  encodeSimpleReply,
  Err,
  MAX_PAYLOAD,
  ReplyFlag,
  ReplyType,
  REQUEST_HEADER_SIZE,
  REQUEST_MAGIC,
  State,
  TxFlag,
} from './protocol.js';
import type { CommandName, RequestHeader } from './protocol.js';
import { SocketReader } from './socket-reader.js';

export interface NbdExport {
  readonly device: BlockDevice;
  /** Shown by `nbdinfo` (NBD_INFO_DESCRIPTION) and in LIST answers. */
  readonly description?: string;
}

export type NbdListen = { readonly unix: string } | { readonly tcp: { readonly host?: string; readonly port: number } };
export type NbdAddress = { readonly unix: string } | { readonly tcp: { readonly host: string; readonly port: number } };

export type NbdErrorEvent =
  /** The device failed a request (a read, write, flush, or mapping its extents); the client got EIO. */
  | { readonly kind: 'device'; readonly connection: number; readonly command: CommandName; readonly offset: number; readonly length: number; readonly error: unknown }
  /** The client broke the protocol; its connection was closed. */
  | { readonly kind: 'protocol'; readonly connection: number; readonly reason: string };

export interface NbdRequestEvent {
  readonly connection: number;
  readonly command: CommandName;
  readonly offset: number;
  readonly length: number;
  /** From reading the request header to queueing the reply. */
  readonly micros: number;
  /** NBD error value sent (0 = success). */
  readonly error: number;
}

export interface NbdServerOptions {
  /** Exports by name ("" is the default export). */
  readonly exports: ReadonlyMap<string, NbdExport> | Readonly<Record<string, NbdExport>>;
  /** Advertised preferred block size: a power of 2, 512 B–32 MiB. @default 512 KiB */
  readonly preferredBlockSize?: number;
  /** Requests per connection between reading and replying. @default 64 */
  readonly maxInFlight?: number;
  /** Payload bytes per connection in flight, and unsent reply bytes tolerated. @default 64 MiB */
  readonly maxInFlightBytes?: number;
  /** How long `close()` lets in-flight requests finish before failing them with ESHUTDOWN. @default 10 s */
  readonly shutdownGraceMs?: number;
  /** Largest option data accepted in the handshake. @default 64 KiB */
  readonly maxOptionLength?: number;
  /** A client that has not finished the handshake by then is disconnected (idle connections must not pile up). @default 30 s */
  readonly handshakeTimeoutMs?: number;
  /** Failures worth logging (device errors, protocol violations). Must not throw. */
  readonly onError?: (event: NbdErrorEvent) => void;
  /** One call per answered request (for latency histograms). Must not throw. */
  readonly onRequest?: (event: NbdRequestEvent) => void;
}

interface ServedExport extends HandshakeExport {
  readonly device: BlockDevice;
  readonly writable: boolean;
}

export class NbdServer {
  readonly #exports: ReadonlyMap<string, ServedExport>;
  readonly #options: NbdServerOptions;
  readonly #connections = new Set<Connection>();
  #server: Server | undefined;
  #address: NbdAddress | undefined;
  #nextId = 1;
  #closing: Promise<void> | undefined;

  constructor(options: NbdServerOptions) {
    this.#options = options;
    const entries = options.exports instanceof Map ? [...options.exports] : Object.entries(options.exports);
    const served = new Map<string, ServedExport>();
    for (const [name, exp] of entries) {
      const { device } = exp;
      const writable = isWritable(device);
      const flags = TxFlag.HAS_FLAGS | TxFlag.SEND_FLUSH | TxFlag.CAN_MULTI_CONN | (writable ? 0 : TxFlag.READ_ONLY);
      served.set(name, {
        device,
        writable,
        size: device.size,
        flags,
        blockSizes: advertisedBlockSizes(device.size, options.preferredBlockSize ?? DEFAULT_PREFERRED_BLOCK_SIZE),
        ...(exp.description !== undefined ? { description: exp.description } : {}),
      });
    }
    this.#exports = served;
    for (const [what, v] of [
      ['maxInFlight', options.maxInFlight],
      ['maxInFlightBytes', options.maxInFlightBytes],
    ] as const) {
      if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new RangeError(`Cannot use ${what} ${v}: want an integer ≥ 1`);
    }
  }

  /** Where the server listens (with the real port when 0 was asked for), once `listen` resolved. */
  get address(): NbdAddress | undefined {
    return this.#address;
  }

  /** Open connections (handshaking or transmitting). */
  get connections(): number {
    return this.#connections.size;
  }

  /**
   * Starts listening. A unix socket path that holds a stale socket is
   * replaced; any other existing file, or a socket another server answers
   * on, is refused (UsageError). The socket is made mode 0600. TCP binds
   * 127.0.0.1 unless told otherwise; port 0 picks a free port.
   */
  async listen(where: NbdListen): Promise<NbdAddress> {
    if (this.#server !== undefined) throw new Error('NbdServer.listen: already listening');
    if (this.#closing !== undefined) throw new Error('NbdServer.listen: the server is closed');
    const server = net.createServer({ noDelay: true }, (socket) => this.#accept(socket));
    this.#server = server;
    try {
      if ('unix' in where) {
        await prepareUnixPath(where.unix);
        await listenOn(server, { path: where.unix }, where.unix);
        await chmod(where.unix, 0o600);
        this.#address = { unix: where.unix };
      } else {
        const host = where.tcp.host ?? '127.0.0.1';
        await listenOn(server, { host, port: where.tcp.port }, `${host}:${where.tcp.port}`);
        const a = server.address() as AddressInfo;
        this.#address = { tcp: { host, port: a.port } };
      }
    } catch (e) {
      this.#server = undefined;
      server.close();
      throw e;
    }
    server.on('error', () => {}); // after listen, errors are per connection
    return this.#address;
  }

  /**
   * Stops accepting, lets in-flight requests finish (new ones get
   * ESHUTDOWN), fails what is left after the grace period with ESHUTDOWN,
   * closes every connection and removes the unix socket. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const server = this.#server;
    const closed = server === undefined ? Promise.resolve() : new Promise<void>((resolve) => server.close(() => resolve()));
    const conns = [...this.#connections];
    for (const c of conns) c.shutdown();
    const grace = setTimeout(() => {
      for (const c of this.#connections) c.forceClose();
    }, this.#options.shutdownGraceMs ?? 10_000);
    try {
      await Promise.all(conns.map((c) => c.closed));
    } finally {
      clearTimeout(grace);
    }
    await closed;
    const a = this.#address;
    if (a !== undefined && 'unix' in a) await rm(a.unix, { force: true }); // libuv unlinks it too; be sure
  }

  #accept(socket: Socket): void {
    socket.on('error', () => {}); // ECONNRESET and friends end the connection, never the process
    if (this.#closing !== undefined) {
      socket.destroy();
      return;
    }
    if (socket.remoteFamily !== undefined) socket.setNoDelay(true);
    const conn = new Connection(this.#nextId++, socket, this.#exports, this.#options);
    this.#connections.add(conn);
    void conn.closed.then(() => this.#connections.delete(conn));
    void conn.run();
  }
}

/** Refuses to clobber anything but a stale socket, which it removes. */
async function prepareUnixPath(p: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(p)).isSocket();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!isSocket) throw new UsageError(`${p}: exists and is not a socket; refusing to replace it with the NBD socket`);
  if (await socketAnswers(p)) throw new UsageError(`${p}: another server is listening on this socket`);
  await unlink(p);
}

function socketAnswers(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ path: p });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      s.destroy();
      // ECONNREFUSED: nobody listens (stale). Anything else: be safe and call it in use.
      resolve(e.code !== 'ECONNREFUSED' && e.code !== 'ENOENT');
    });
  });
}

function listenOn(server: Server, opts: net.ListenOptions, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => {
      reject(e.code === 'EADDRINUSE' ? new UsageError(`${what}: address already in use`, { cause: e }) : e);
    };
    server.once('error', onError);
    server.listen(opts, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** BLOCK_STATUS maps at most this much of a request (the spec lets a reply cover less than asked, from the start). */
const MAX_STATUS_SPAN = 1024 * 1024 * 1024;
/** …and sends at most this many descriptors (32 KiB of reply). */
const MAX_STATUS_DESCRIPTORS = 4096;
/** A structured READ whose extents split into more runs than this is read and sent as one data chunk. */
const MAX_READ_RUNS = 64;

/** Queues a finished reply: the error value sent and the bytes that make it up. */
type Finish = (error: number, wire: readonly Buffer[]) => void;
/** Queues an error reply, structured (with the message) or simple as the request needs. */
type Fail = (error: number, message: string) => void;

/** Thrown out of the request loop to stop reading (shutdown, DISC). */
class StopReading extends Error {}

/** One client connection: handshake, then the request loop. */
class Connection {
  readonly closed: Promise<void>;
  readonly #id: number;
  readonly #socket: Socket;
  readonly #reader: SocketReader;
  readonly #exports: ReadonlyMap<string, ServedExport>;
  readonly #options: NbdServerOptions;
  readonly #maxInFlight: number;
  readonly #maxBytes: number;
  /** Aborted when the connection dies, so device work for it can stop. */
  /** Shared by every request of the connection (up to maxInFlight listeners at once). */
  readonly #abort = abortControllerWithoutListenerCap();
  /** Requests read but not yet answered, by an internal sequence number. */
  readonly #pending = new Map<number, { readonly cookie: bigint; readonly bytes: number; readonly structured: boolean }>();
  /** What the handshake agreed (set when transmission starts). */
  #negotiated: Negotiated = { structuredReplies: false, allocationContext: null };
  #seq = 0;
  #inFlightBytes = 0;
  /** Writes not yet finished, so FLUSH can wait for those issued before it. */
  readonly #writes = new Set<Promise<unknown>>();
  #wake: (() => void) | undefined;
  #transmitting = false;
  #shuttingDown = false;
  #isClosed = false;

  constructor(id: number, socket: Socket, exports: ReadonlyMap<string, ServedExport>, options: NbdServerOptions) {
    this.#id = id;
    this.#socket = socket;
    this.#exports = exports;
    this.#options = options;
    this.#maxInFlight = options.maxInFlight ?? 64;
    this.#maxBytes = options.maxInFlightBytes ?? 64 * 1024 * 1024;
    // The reader buffers at most one maximal request beyond what the loop asked for.
    this.#reader = new SocketReader(socket);
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.#isClosed = true;
        this.#abort.abort();
        this.#pending.clear();
        this.#signal();
        resolve();
      }),
    );
    socket.on('drain', () => this.#signal());
  }

  async run(): Promise<void> {
    const limit = this.#options.handshakeTimeoutMs ?? 30_000;
    const timer = setTimeout(() => {
      this.#report({ kind: 'protocol', connection: this.#id, reason: `no handshake within ${limit} ms` });
      this.#socket.destroy();
    }, limit);
    timer.unref();
    try {
      const outcome = await negotiate((b) => this.#send(b), this.#reader, {
        exports: this.#exports,
        ...(this.#options.maxOptionLength !== undefined ? { maxOptionLength: this.#options.maxOptionLength } : {}),
      });
      clearTimeout(timer);
      switch (outcome.kind) {
        case 'transmission':
          this.#transmitting = true;
          this.#negotiated = outcome.negotiated;
          await this.#transmit(outcome.export as ServedExport);
          return;
        case 'rejected':
          this.#report({ kind: 'protocol', connection: this.#id, reason: outcome.reason });
          this.#socket.destroy();
          return;
        case 'aborted':
          this.#socket.end();
          this.#destroyLater();
          return;
        case 'closed':
          this.#socket.destroy();
          return;
      }
    } catch {
      // Nothing in here should throw; if it does, the connection is what fails.
      this.#socket.destroy();
    } finally {
      clearTimeout(timer);
    }
  }

  /** Server shutdown: stop taking work; close once what is in flight is answered. */
  shutdown(): void {
    if (!this.#transmitting) {
      this.#socket.destroy(); // mid-handshake: nothing to finish
      return;
    }
    this.#shuttingDown = true;
    if (this.#pending.size === 0) this.#reader.cancel(new StopReading('shutting down'));
    this.#signal();
  }

  /** Grace period over: fail whatever is left with ESHUTDOWN and close. */
  forceClose(): void {
    this.#abort.abort();
    for (const [seq, p] of [...this.#pending]) this.#reply(seq, errorReply(p.cookie, p.structured, Err.ESHUTDOWN, 'the server shut down'));
    this.#reader.cancel(new StopReading('shut down'));
    this.#socket.end();
    this.#destroyLater();
  }

  async #transmit(exp: ServedExport): Promise<void> {
    for (;;) {
      if (!(await this.#room(0))) break;
      let hb: Buffer;
      try {
        hb = await this.#reader.read(REQUEST_HEADER_SIZE);
      } catch {
        break; // closed, or stopped by shutdown
      }
      const started = process.hrtime.bigint();
      const h = decodeRequestHeader(hb);
      if (h.magic !== REQUEST_MAGIC) {
        this.#report({ kind: 'protocol', connection: this.#id, reason: `bad request magic 0x${h.magic.toString(16)}` });
        this.#socket.destroy(); // framing is lost: nothing after this can be trusted
        return;
      }
      if (h.type === Cmd.DISC) break; // no reply; finish what is in flight, then close

      let payload: Buffer | undefined;
      const wantsPayload = h.type === Cmd.WRITE;
      if (wantsPayload) {
        if (h.length > MAX_PAYLOAD) {
          // Its payload follows on the wire and we will not buffer (or skip
          // through) up to 4 GiB just to find the next header: disconnect.
          this.#report({ kind: 'protocol', connection: this.#id, reason: `WRITE of ${h.length} bytes exceeds the ${MAX_PAYLOAD}-byte maximum` });
          this.#socket.destroy();
          return;
        }
        if (!(await this.#room(h.length))) break;
        try {
          payload = await this.#reader.read(h.length);
        } catch {
          break;
        }
      } else if (h.type === Cmd.READ && h.length <= MAX_PAYLOAD) {
        if (!(await this.#room(h.length))) break;
      }

      const seq = this.#seq++;
      const bytes = h.type === Cmd.READ || wantsPayload ? h.length : 0;
      // With structured replies, READ must never get a simple reply, and BLOCK_STATUS only exists structured.
      const structured = this.#negotiated.structuredReplies && (h.type === Cmd.READ || h.type === Cmd.BLOCK_STATUS);
      this.#pending.set(seq, { cookie: h.cookie, bytes, structured });
      this.#inFlightBytes += bytes;
      const finish: Finish = (error, wire) => {
        this.#reply(seq, wire);
        this.#emitRequest(h, started, error);
      };
      const fail: Fail = (error, message) => finish(error, errorReply(h.cookie, structured, error, message));
      if (this.#shuttingDown) {
        fail(Err.ESHUTDOWN, 'the server is shutting down');
        continue;
      }
      const refused = checkRequest(h, exp, this.#negotiated);
      if (refused !== null) {
        fail(refused.error, refused.message);
        continue;
      }
      this.#serve(h, exp, payload, structured, finish, fail);
    }
    // DISC, shutdown or a vanished client: answer what is in flight, then close.
    while (this.#pending.size > 0 && !this.#isClosed) await this.#changed();
    this.#socket.end();
    this.#destroyLater();
  }

  /** Starts the device work for a valid request; `finish` or `fail` is called exactly once. */
  #serve(h: RequestHeader, exp: ServedExport, payload: Buffer | undefined, structured: boolean, finish: Finish, fail: Fail): void {
    const offset = Number(h.offset);
    const signal = this.#abort.signal;
    const failed = (e: unknown): void => {
      if (signal.aborted) {
        fail(Err.ESHUTDOWN, 'the connection is closing'); // the connection is gone or being torn down; a reply (if any) says so
        return;
      }
      this.#report({ kind: 'device', connection: this.#id, command: commandName(h.type), offset, length: h.length, error: e });
      // The cause stays in onError: clients learn the range, not the server's internals.
      fail(Err.EIO, `${commandName(h.type)} of ${h.length} bytes at offset ${offset} failed on the server`);
    };
    const done = (error: number): void => finish(error, [encodeSimpleReply(error, h.cookie)]);
    const device = exp.device;
    switch (h.type) {
      case Cmd.READ:
        if (structured) {
          readStructured(device, h, signal).then((wire) => finish(Err.OK, wire), failed).catch(failed);
          return;
        }
        if (h.length === 0) {
          done(Err.OK);
          return;
        }
        attempt(() => device.read(offset, h.length, signal)).then((data) => {
          if (data.length !== h.length) throw new Error(`device returned ${data.length} bytes for a ${h.length}-byte read at ${offset}`);
          finish(Err.OK, [encodeSimpleReply(Err.OK, h.cookie), data]);
        }, failed).catch(failed);
        return;
      case Cmd.BLOCK_STATUS:
        blockStatus(device, h, this.#negotiated.allocationContext!, signal).then((wire) => finish(Err.OK, wire), failed).catch(failed);
        return;
      case Cmd.WRITE: {
        const p = h.length === 0 ? Promise.resolve() : attempt(() => device.write!(offset, payload!, signal));
        // FUA is never advertised; if a client sets it anyway, honour it.
        const durable = (h.flags & CmdFlag.FUA) !== 0 ? p.then(() => device.flush?.()) : p;
        const tracked = durable.then(() => done(Err.OK), failed);
        this.#writes.add(tracked);
        void tracked.finally(() => this.#writes.delete(tracked));
        return;
      }
      case Cmd.FLUSH: {
        // Covers every write issued before this FLUSH, not only the completed ones the spec asks for.
        const before = [...this.#writes];
        Promise.allSettled(before)
          .then(() => attempt(async () => device.flush?.()))
          .then(() => done(Err.OK), failed);
        return;
      }
      case Cmd.CACHE:
        done(Err.OK); // a hint; nothing to prefetch into here
        return;
      default:
        done(Err.EINVAL); // checkRequest lets nothing else through
    }
  }

  /** Queues one reply (all its buffers corked into one write, so replies never interleave) and frees its slot. */
  #reply(seq: number, wire: readonly Buffer[]): void {
    const p = this.#pending.get(seq);
    if (p === undefined) return; // already answered (forceClose) or the connection is gone
    this.#pending.delete(seq);
    this.#inFlightBytes -= p.bytes;
    if (!this.#socket.destroyed && this.#socket.writable) {
      this.#socket.cork();
      for (const b of wire) if (b.length > 0) this.#socket.write(b);
      this.#socket.uncork();
    }
    if (this.#shuttingDown && this.#pending.size === 0) this.#reader.cancel(new StopReading('shutting down'));
    this.#signal();
  }

  /**
   * Waits until another request of `bytes` payload may be taken: fewer than
   * maxInFlight pending, the byte budget not exceeded (one request is always
   * allowed, so a maximal request cannot deadlock), and the socket's unsent
   * output below the budget. False when the connection closed meanwhile.
   */
  async #room(bytes: number): Promise<boolean> {
    for (;;) {
      if (this.#isClosed) return false;
      const n = this.#pending.size;
      const full = n >= this.#maxInFlight || (n > 0 && this.#inFlightBytes + bytes > this.#maxBytes) || this.#socket.writableLength > this.#maxBytes;
      if (!full) return true;
      await this.#changed();
    }
  }

  #changed(): Promise<void> {
    return new Promise((resolve) => {
      const prev = this.#wake;
      this.#wake = () => {
        prev?.();
        resolve();
      };
    });
  }

  #signal(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  #send(b: Buffer): void {
    if (!this.#socket.destroyed && this.#socket.writable) this.#socket.write(b);
  }

  /** After a graceful end(), make sure the socket is gone even if the peer never closes its side. */
  #destroyLater(): void {
    const t = setTimeout(() => this.#socket.destroy(), 5000);
    t.unref();
    void this.closed.then(() => clearTimeout(t));
  }

  #report(event: NbdErrorEvent): void {
    try {
      this.#options.onError?.(event);
    } catch {
      // A throwing callback must not take the server down.
    }
  }

  #emitRequest(h: RequestHeader, started: bigint, error: number): void {
    const cb = this.#options.onRequest;
    if (cb === undefined) return;
    try {
      cb({
        connection: this.#id,
        command: commandName(h.type),
        offset: Number(h.offset),
        length: h.length,
        micros: Number((process.hrtime.bigint() - started) / 1000n),
        error,
      });
    } catch {
      // As above.
    }
  }
}

/** `fn()` as a promise, with a synchronous throw (a device bug) turned into a rejection. */
function attempt<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return fn();
  } catch (e) {
    return Promise.reject(e);
  }
}

/** An error reply: an ERROR chunk with `message` (and DONE) when structured, else a simple reply. */
function errorReply(cookie: bigint, structured: boolean, error: number, message: string): Buffer[] {
  return [structured ? encodeErrorChunk(ReplyFlag.DONE, cookie, error, message) : encodeSimpleReply(error, cookie)];
}

/** Why a request is refused before any device work (error value and a message for structured replies), or null. */
function checkRequest(h: RequestHeader, exp: ServedExport, negotiated: Negotiated): { readonly error: number; readonly message: string } | null {
  const invalid = (message: string): { error: number; message: string } => ({ error: Err.EINVAL, message });
  // FUA is tolerated everywhere (some clients set it loosely); REQ_ONE belongs to BLOCK_STATUS; nothing else is offered.
  const allowed = CmdFlag.FUA | (h.type === Cmd.BLOCK_STATUS ? CmdFlag.REQ_ONE : 0);
  if ((h.flags & ~allowed) !== 0) return invalid(`command flags 0x${h.flags.toString(16)} are not supported for ${commandName(h.type)}`);
  const inRange = h.offset + BigInt(h.length) <= BigInt(exp.size);
  const outside = invalid(`${h.length} bytes at offset ${h.offset} lie outside the ${exp.size}-byte export`);
  switch (h.type) {
    case Cmd.READ:
      if (h.length > MAX_PAYLOAD) return invalid(`a read of ${h.length} bytes exceeds the ${MAX_PAYLOAD}-byte maximum`);
      return inRange ? null : outside;
    case Cmd.WRITE:
      if (!exp.writable) return { error: Err.EPERM, message: 'the export is read-only' };
      return inRange ? null : outside;
    case Cmd.TRIM:
    case Cmd.WRITE_ZEROES:
      // Not advertised: EPERM on a read-only export (as the spec asks), EINVAL otherwise.
      return exp.writable ? invalid(`${commandName(h.type)} is not supported`) : { error: Err.EPERM, message: 'the export is read-only' };
    case Cmd.FLUSH:
      return null;
    case Cmd.CACHE:
      return inRange ? null : outside;
    case Cmd.BLOCK_STATUS:
      // Only with a context selected (which needs structured replies); else EINVAL, as the spec asks.
      if (negotiated.allocationContext === null) return invalid('block status needs the base:allocation metadata context (SET_META_CONTEXT)');
      if (h.length === 0) return invalid('block status of 0 bytes');
      return inRange ? null : outside;
    default:
      return invalid(`command ${h.type} is not supported`);
  }
}

/** Checks a device's extents cover exactly `length` bytes in non-empty runs (a device bug must not reach the wire). */
function checkedExtents(runs: readonly Extent[], offset: number, length: number): readonly Extent[] {
  let sum = 0;
  for (const r of runs) {
    if (!Number.isSafeInteger(r.length) || r.length <= 0) throw new Error(`device mapped an extent of ${r.length} bytes at ${offset + sum}`);
    sum += r.length;
  }
  if (sum !== length) throw new Error(`device mapped ${sum} bytes for ${length} bytes at ${offset}`);
  return runs;
}

/**
 * A structured READ reply: with a device that knows its extents, zero runs
 * as OFFSET_HOLE chunks (not read at all) and each data run read and sent as
 * OFFSET_DATA; otherwise one OFFSET_DATA chunk. Every read completes before
 * any chunk is built, so the DONE flag on the last chunk can never precede
 * an error. A zero-length read is answered with a lone NONE chunk.
 */
async function readStructured(device: BlockDevice, h: RequestHeader, signal: AbortSignal): Promise<Buffer[]> {
  const offset = Number(h.offset);
  if (h.length === 0) return [encodeChunkHeader(ReplyFlag.DONE, ReplyType.NONE, h.cookie, 0)];
  let runs: readonly Extent[] = [{ length: h.length, zero: false }];
  if (device.extents !== undefined) {
    const mapped = checkedExtents(await attempt(() => device.extents!(offset, h.length, signal)), offset, h.length);
    // Many small runs (an overlay with scattered writes) cost more in chunks and reads than they save.
    if (mapped.length <= MAX_READ_RUNS) runs = mapped;
  }
  let at = offset;
  const parts = await Promise.all(
    runs.map(async (r) => {
      const from = at;
      at += r.length;
      if (r.zero) return { from, length: r.length, data: null };
      const data = await attempt(() => device.read(from, r.length, signal));
      if (data.length !== r.length) throw new Error(`device returned ${data.length} bytes for a ${r.length}-byte read at ${from}`);
      return { from, length: r.length, data };
    }),
  );
  const wire: Buffer[] = [];
  parts.forEach((p, i) => {
    const flags = i === parts.length - 1 ? ReplyFlag.DONE : 0;
    if (p.data === null) wire.push(encodeHoleChunk(flags, h.cookie, p.from, p.length));
    else wire.push(encodeDataChunkHead(flags, h.cookie, p.from, p.length), p.data);
  });
  return wire;
}

/**
 * A BLOCK_STATUS reply for `base:allocation`: descriptors from the start of
 * the range (at most MAX_STATUS_SPAN bytes and MAX_STATUS_DESCRIPTORS of
 * them; one with REQ_ONE), zero runs as HOLE|ZERO, data as 0. A device
 * without `extents` is data throughout.
 */
async function blockStatus(device: BlockDevice, h: RequestHeader, contextId: number, signal: AbortSignal): Promise<Buffer[]> {
  const offset = Number(h.offset);
  const span = Math.min(h.length, MAX_STATUS_SPAN);
  const runs = device.extents === undefined ? [{ length: span, zero: false }] : checkedExtents(await attempt(() => device.extents!(offset, span, signal)), offset, span);
  const limit = (h.flags & CmdFlag.REQ_ONE) !== 0 ? 1 : MAX_STATUS_DESCRIPTORS;
  const descriptors = runs.slice(0, limit).map((r) => ({ length: r.length, flags: r.zero ? State.HOLE | State.ZERO : 0 }));
  return [encodeBlockStatusChunk(ReplyFlag.DONE, h.cookie, contextId, descriptors)];
}

/** Node warns past 10 listeners on one signal; a connection legitimately has one per request in flight. */
function abortControllerWithoutListenerCap(): AbortController {
  const c = new AbortController();
  setMaxListeners(0, c.signal);
  return c;
}
