/**
 * Child process for the multi-writer and SIGKILL tests: writes knownChunk(i)
 * for i in [from, to) into a file store through uploadChunks, printing
 * `put <id>` after each chunk it uploaded (not those already there), and a final
 * `done <json summary>`. Usage: node store-writer.js DIR FROM TO [MAX_BYTES].
 * Chunks are knownChunk(i, 'chunkyard', MAX_BYTES) (default 512 KiB).
 * Test-only code.
 */
import { FileStore } from '../store/file.js';
import { uploadChunks } from '../store/upload.js';
import { knownChunk } from './chunk-data.js';

const [dir, fromArg, toArg, maxArg] = process.argv.slice(2);
if (dir === undefined || fromArg === undefined || toArg === undefined) {
  process.stderr.write('usage: store-writer DIR FROM TO [MAX_BYTES]\n');
  process.exit(2);
}
const from = Number(fromArg);
const to = Number(toArg);
const maxBytes = maxArg === undefined ? undefined : Number(maxArg);
const store = await FileStore.open(dir);

function* chunks(): Generator<{ id: ReturnType<typeof knownChunk>['id']; data: Buffer; i: number }> {
  for (let i = from; i < to; i++) yield { ...knownChunk(i, 'chunkyard', maxBytes), i };
}

const summary = await uploadChunks(
  {
    costModel: store.costModel,
    get: (id, o) => store.get(id, o),
    has: (id, o) => store.has(id, o),
    sync: (o) => store.sync(o),
    put: async (id, data, o) => {
      const r = await store.put(id, data, o);
      if (r === 'uploaded') process.stdout.write(`put ${id}\n`);
      return r;
    },
  },
  chunks(),
  { concurrency: 4 },
);
await store.sync();
process.stdout.write(`done ${JSON.stringify(summary)}\n`);
