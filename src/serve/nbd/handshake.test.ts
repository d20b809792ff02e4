import assert from 'node:assert/strict';
import { RawNbdClient } from '../../testing/nbd-client.js';
import { memoryDevice, startServer } from '../../testing/nbd-fixtures.js';
import type { ServerHarness } from '../../testing/nbd-fixtures.js';
import { advertisedBlockSizes } from './handshake.js';
import { ClientFlag, Cmd, encodeInfoRequest, encodeMetaContextRequest, encodeOption, Info, Opt, Rep, TxFlag } from './protocol.js';

const pattern = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff));

describe('serve/nbd/handshake', function () {
  let h: ServerHarness;
  const clients: RawNbdClient[] = [];
  const connect = async (): Promise<RawNbdClient> => {
    const c = await RawNbdClient.connect(h.address);
    clients.push(c);
    return c;
  };

  beforeEach(async function () {
    h = await startServer({
      '': { device: memoryDevice(pattern(1 << 20)), description: 'the default export' },
      disk: { device: memoryDevice(pattern(3 * 512 + 7), { writable: true }) },
    });
  });
  afterEach(async function () {
    for (const c of clients.splice(0)) c.destroy();
    await h.close();
  });

  it('sends the fixed-newstyle greeting with FIXED_NEWSTYLE|NO_ZEROES', async function () {
    const c = await connect();
    const g = await c.readGreeting();
    assert.equal(g.toString('hex'), '4e42444d41474943' + '49484156454f5054' + '0003');
  });

  it('closes on unknown client flags', async function () {
    const c = await connect();
    await c.start(ClientFlag.FIXED_NEWSTYLE | 0x80);
    await c.closed;
    assert.equal(h.errors.length, 1);
    assert.match(h.errors[0]!.kind === 'protocol' ? h.errors[0]!.reason : '', /client flags/);
  });

  it('answers unknown and unsupported options with ERR_UNSUP (consuming their data) and carries on', async function () {
    const c = await connect();
    await c.start();
    for (const [opt, data] of [
      [999, Buffer.alloc(100, 0xee)],
      [Opt.STARTTLS, Buffer.alloc(0)],
      [Opt.EXTENDED_HEADERS, Buffer.alloc(0)],
      [Opt.PEEK_EXPORT, Buffer.alloc(0)],
    ] as const) {
      const r = await c.option(opt, data);
      assert.equal(r.length, 1);
      assert.equal(r[0]!.option, opt);
      assert.equal(r[0]!.type, Rep.ERR_UNSUP);
    }
    const info = await c.info('go', '');
    assert.equal(info.size, 1 << 20);
  });

  it('acknowledges STRUCTURED_REPLY once; refuses it with data or a second time (ERR_INVALID)', async function () {
    const c = await connect();
    await c.start();
    const withData = await c.option(Opt.STRUCTURED_REPLY, Buffer.alloc(4));
    assert.deepEqual(withData.map((r) => r.type), [Rep.ERR_INVALID]);
    const first = await c.option(Opt.STRUCTURED_REPLY);
    assert.deepEqual(first.map((r) => [r.option, r.type, r.data.length]), [[Opt.STRUCTURED_REPLY, Rep.ACK, 0]]);
    const again = await c.option(Opt.STRUCTURED_REPLY);
    assert.deepEqual(again.map((r) => r.type), [Rep.ERR_INVALID]);
    assert.match(again[0]!.data.toString('utf8'), /already/);
    // And after SET_META_CONTEXT too; the session goes on.
    assert.equal((await c.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest('', ['base:allocation']))).at(-1)!.type, Rep.ACK);
    assert.equal((await c.option(Opt.STRUCTURED_REPLY)).at(-1)!.type, Rep.ERR_INVALID);
    assert.equal((await c.info('go', '')).size, 1 << 20);
  });

  it('LIST/SET_META_CONTEXT need STRUCTURED_REPLY first (ERR_INVALID)', async function () {
    const c = await connect();
    await c.start();
    for (const opt of [Opt.LIST_META_CONTEXT, Opt.SET_META_CONTEXT]) {
      const r = await c.option(opt, encodeMetaContextRequest('', ['base:allocation']));
      assert.deepEqual(r.map((x) => x.type), [Rep.ERR_INVALID]);
      assert.match(r[0]!.data.toString('utf8'), /STRUCTURED_REPLY/);
    }
  });

  it('LIST_META_CONTEXT offers base:allocation (id 0) for no query, "base:" and its name; nothing for other namespaces', async function () {
    const c = await connect();
    await c.start();
    await c.option(Opt.STRUCTURED_REPLY);
    const ctx = (id: number, name: string): string => Buffer.concat([Buffer.from([id >>> 24, (id >>> 16) & 255, (id >>> 8) & 255, id & 255]), Buffer.from(name)]).toString('hex');
    for (const queries of [[], ['base:'], ['base:allocation'], ['qemu:dirty-bitmap:x', 'base:allocation']]) {
      const r = await c.option(Opt.LIST_META_CONTEXT, encodeMetaContextRequest('disk', queries));
      assert.deepEqual(r.map((x) => x.type), [Rep.META_CONTEXT, Rep.ACK], JSON.stringify(queries));
      assert.equal(r[0]!.data.toString('hex'), ctx(0, 'base:allocation'));
    }
    for (const queries of [['qemu:allocation-depth'], ['x-foo:bar'], ['base:nothing']]) {
      const r = await c.option(Opt.LIST_META_CONTEXT, encodeMetaContextRequest('', queries));
      assert.deepEqual(r.map((x) => x.type), [Rep.ACK], JSON.stringify(queries));
    }
    assert.deepEqual((await c.option(Opt.LIST_META_CONTEXT, encodeMetaContextRequest('nope', []))).map((x) => x.type), [Rep.ERR_UNKNOWN]);
    assert.deepEqual((await c.option(Opt.LIST_META_CONTEXT, Buffer.alloc(12))).map((x) => x.type), [Rep.ERR_INVALID]);
    assert.deepEqual((await c.option(Opt.LIST_META_CONTEXT, Buffer.concat([encodeMetaContextRequest('', ['base:allocation']), Buffer.alloc(1)]))).map((x) => x.type), [Rep.ERR_INVALID]);
  });

  it('SET_META_CONTEXT selects base:allocation by exact name with a non-zero id, and nothing else', async function () {
    const c = await connect();
    await c.start();
    await c.option(Opt.STRUCTURED_REPLY);
    const set = await c.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest('', ['x-foo:bar', 'base:allocation']));
    assert.deepEqual(set.map((x) => x.type), [Rep.META_CONTEXT, Rep.ACK]);
    assert.equal(set[0]!.data.readUInt32BE(0), 1);
    assert.equal(set[0]!.data.toString('utf8', 4), 'base:allocation');
    for (const queries of [[], ['base:'], ['qemu:dirty-bitmap:x']]) {
      const r = await c.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest('', queries));
      assert.deepEqual(r.map((x) => x.type), [Rep.ACK], JSON.stringify(queries));
    }
    assert.deepEqual((await c.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest('nope', ['base:allocation']))).map((x) => x.type), [Rep.ERR_UNKNOWN]);
  });

  it('LISTs every export with its description, and rejects LIST with data', async function () {
    const c = await connect();
    await c.start();
    const r = await c.option(Opt.LIST);
    assert.deepEqual(
      r.map((x) => x.type),
      [Rep.SERVER, Rep.SERVER, Rep.ACK],
    );
    const entries = r.slice(0, 2).map((x) => {
      const n = x.data.readUInt32BE(0);
      return [x.data.toString('utf8', 4, 4 + n), x.data.toString('utf8', 4 + n)];
    });
    assert.deepEqual(entries, [
      ['', 'the default export'],
      ['disk', ''],
    ]);
    const bad = await c.option(Opt.LIST, Buffer.from('x'));
    assert.equal(bad[0]!.type, Rep.ERR_INVALID);
    await c.option(Opt.LIST); // still negotiating
  });

  it('INFO then GO give the same data, and GO enters transmission', async function () {
    const c = await connect();
    await c.start();
    const info = await c.info('info', '', [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE, 1234]);
    const go = await c.info('go', '', [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE, 1234]);
    assert.deepEqual(go.raw, info.raw);
    assert.equal(info.size, 1 << 20);
    assert.equal(info.flags, TxFlag.HAS_FLAGS | TxFlag.READ_ONLY | TxFlag.SEND_FLUSH | TxFlag.CAN_MULTI_CONN);
    assert.equal(info.name, '');
    assert.equal(info.description, 'the default export');
    assert.deepEqual(info.blockSizes, { minimum: 512, preferred: 512 * 1024, maximum: 32 * 1024 * 1024 });
    const r = await c.request({ type: Cmd.READ, offset: 1000, length: 100 });
    assert.equal(r.error, 0);
    assert.deepEqual(r.data, pattern(1 << 20).subarray(1000, 1100));
  });

  it('GO without info requests still sends EXPORT and BLOCK_SIZE; a writable odd-sized export advertises minimum 1', async function () {
    const c = await connect();
    await c.start();
    const go = await c.info('go', 'disk', []);
    assert.equal(go.size, 3 * 512 + 7);
    assert.equal(go.flags & TxFlag.READ_ONLY, 0);
    assert.equal(go.blockSizes?.minimum, 1);
    assert.equal(go.name, undefined);
  });

  it('unknown export: INFO/GO get ERR_UNKNOWN and the session goes on; EXPORT_NAME is closed', async function () {
    const c = await connect();
    await c.start();
    for (const opt of [Opt.INFO, Opt.GO]) {
      const r = await c.option(opt, encodeInfoRequest('nope', []));
      assert.equal(r[0]!.type, Rep.ERR_UNKNOWN);
      assert.match(r[0]!.data.toString('utf8'), /nope/);
    }
    const bad = await c.option(Opt.GO, Buffer.from([0, 0, 0, 9, 1])); // name longer than the data
    assert.equal(bad[0]!.type, Rep.ERR_INVALID);
    c.write(encodeOption(Opt.EXPORT_NAME, Buffer.from('nope')));
    await c.closed;
    assert.ok(h.errors.some((e) => e.kind === 'protocol' && /unknown export "nope"/.test(e.reason)));
  });

  for (const noZeroes of [true, false]) {
    it(`EXPORT_NAME ${noZeroes ? 'with' : 'without'} NO_ZEROES answers size and flags${noZeroes ? '' : ' and 124 zero bytes'}`, async function () {
      const c = await connect();
      await c.start(ClientFlag.FIXED_NEWSTYLE | (noZeroes ? ClientFlag.NO_ZEROES : 0));
      c.write(encodeOption(Opt.EXPORT_NAME, Buffer.from('disk')));
      const ans = await c.reader.read(10 + (noZeroes ? 0 : 124));
      assert.equal(Number(ans.readBigUInt64BE(0)), 3 * 512 + 7);
      assert.equal(ans.readUInt16BE(8), TxFlag.HAS_FLAGS | TxFlag.SEND_FLUSH | TxFlag.CAN_MULTI_CONN);
      if (!noZeroes) assert.ok(ans.subarray(10).equals(Buffer.alloc(124)));
      // Transmission follows immediately: the next bytes are a reply.
      const r = await c.request({ type: Cmd.READ, offset: 0, length: 16 });
      assert.deepEqual(r.data, pattern(16));
      assert.equal(c.reader.buffered, 0);
    });
  }

  it('ABORT is acknowledged, then the server closes', async function () {
    const c = await connect();
    await c.start();
    const r = await c.option(Opt.ABORT);
    assert.equal(r[0]!.type, Rep.ACK);
    await c.closed;
  });

  it('refuses oversized option data with ERR_TOO_BIG and closes', async function () {
    const c = await connect();
    await c.start();
    const hdr = encodeOption(Opt.LIST).subarray(0, 16);
    hdr.writeUInt32BE(1 << 30, 12); // 1 GiB of "data" announced
    c.write(hdr);
    const r = await c.readOptionReply();
    assert.equal(r.type, Rep.ERR_TOO_BIG);
    await c.closed;
    // The server is still up for others.
    const d = await connect();
    assert.equal((await d.go('disk')).size, 3 * 512 + 7);
  });

  it('closes on a bad option magic', async function () {
    const c = await connect();
    await c.start();
    c.write(Buffer.alloc(16, 0x41));
    await c.closed;
  });

  it('validates the advertised preferred block size', function () {
    assert.deepEqual(advertisedBlockSizes(4096, 4096), { minimum: 512, preferred: 4096, maximum: 32 << 20 });
    assert.throws(() => advertisedBlockSizes(4096, 3000), RangeError);
    assert.throws(() => advertisedBlockSizes(4096, 256), RangeError);
    assert.throws(() => advertisedBlockSizes(4096, 64 << 20), RangeError);
  });
});
