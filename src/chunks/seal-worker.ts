/**
 * Worker thread of the seal pool (pool.ts): runs sealChunk / openChunk off
 * the main thread. Buffers travel both ways by transfer, not copy.
 */
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { ChunkyardError, IntegrityError } from '../errors.js';
import { parseChunkId } from './id.js';
import { openChunk, sealChunk } from './seal.js';
import type { Salt } from './salt.js';
import { asBuffer, forTransfer } from './transfer.js';

export interface WorkerInit {
  /** Marks the workerData as ours: this module does nothing in any other thread. */
  readonly chunkyardSealWorker: 1;
  readonly epoch: number;
  readonly secret: Uint8Array;
}

export type WorkerRequest =
  | { readonly job: number; readonly op: 'seal'; readonly plain: Uint8Array }
  | { readonly job: number; readonly op: 'open'; readonly ciphertext: Uint8Array; readonly id: string; readonly key: Uint8Array };

export type WorkerReply =
  | {
      readonly job: number;
      readonly threadId: number;
      readonly ok: 'seal';
      readonly id: string;
      readonly key: Uint8Array;
      readonly ciphertext: Uint8Array;
      /** The input, handed back for reuse. */
      readonly plain: Uint8Array;
    }
  | { readonly job: number; readonly threadId: number; readonly ok: 'open'; readonly plain: Uint8Array }
  | { readonly job: number; readonly threadId: number; readonly ok: false; readonly error: { readonly kind: 'integrity' | 'other'; readonly message: string } };

const port = parentPort;
const init = workerData as WorkerInit | null | undefined;
if (port && init?.chunkyardSealWorker === 1) {
  const salt: Salt = { epoch: init.epoch, secret: Buffer.from(init.secret) };
  const post = (reply: WorkerReply, transfer: ArrayBuffer[] = []): void => {
    try {
      port.postMessage(reply, transfer);
    } catch {
      port.postMessage(reply); // an untransferable buffer: send a copy
    }
  };
  port.on('message', (req: WorkerRequest) => {
    try {
      if (req.op === 'seal') {
        const s = sealChunk(asBuffer(req.plain), salt);
        const c = forTransfer(s.ciphertext);
        // req.plain arrived by transfer (it owns its memory): send it straight back.
        post({ job: req.job, threadId, ok: 'seal', id: s.id, key: new Uint8Array(s.key), ciphertext: c.view, plain: req.plain }, [...c.transfer, req.plain.buffer as ArrayBuffer]);
      } else {
        const plain = openChunk(asBuffer(req.ciphertext), { id: parseChunkId(req.id), key: asBuffer(req.key) }, salt);
        const p = forTransfer(plain);
        post({ job: req.job, threadId, ok: 'open', plain: p.view }, p.transfer);
      }
    } catch (e) {
      const kind = e instanceof IntegrityError ? 'integrity' : 'other';
      const message = e instanceof ChunkyardError || e instanceof Error ? e.message : String(e);
      post({ job: req.job, threadId, ok: false, error: { kind, message } });
    }
  });
}
