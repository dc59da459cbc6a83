/**
 * train-ldlp's streamed dataset (training/round-store.ts): rows equal the whole-file reading,
 * training does not depend on how the logs were cut into record batches, and the rows held stay
 * within the block cache.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { tableFromIPC } from 'apache-arrow';
import { FormatError } from '../src/errors.ts';
import { Rng } from '../src/util/rng.ts';
import { listView, primitiveView } from '../training/feature-log.ts';
import { RoundLogWriter, type RoundRecord } from '../training/lengths.ts';
import { SHUFFLE_BLOCKS } from '../training/dataset.ts';
import { RoundStore } from '../training/round-store.ts';
import { trainPredictor } from '../training/train-ldlp.ts';

const tmp = mkdtempSync(join(tmpdir(), 'eaglet-rounds-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

/** A random round log of `rounds` rounds over `seqs` sequences, written `batchRows` rounds per record batch. */
async function writeLog(path: string, rounds: number, seqs: number, d: number, D: number, batchRows: number, seed: number): Promise<void> {
  const rng = new Rng(seed), w = new RoundLogWriter(path, d, D, batchRows);
  for (let i = 0; i < rounds; i++) {
    const depth = rng.int(4) === 0 ? 1 + rng.int(D) : D, accepted = rng.int(depth + 1);
    const f32 = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
    const r: RoundRecord = {
      position: i, rootToken: rng.int(50), maxDepth: D, depth, treeSize: depth, accepted, draftMs: 1, verifyMs: 2,
      feature: f32(d), rootEmbedding: f32(d), pathToken: Int32Array.from({ length: D }, () => rng.int(50)),
      pathFlag: Int32Array.from({ length: D }, (_, t) => (t < accepted ? 1 : t === accepted && t < depth ? 0 : -1)),
      pathHidden: f32(D * d), pathEmbedding: f32(D * d),
    };
    await w.append(Math.floor((i * seqs) / rounds), r);
  }
  await w.finish({ tree: { topK: 1, maxDepth: D, totalTokens: D }, source: { model: 'synthetic', draft: 'synthetic', temperature: 0, seed, maxNewTokens: 0 } });
}

/** The rows a head trains on, from the whole file read at once by apache-arrow (the oracle). */
function wholeFileRows(path: string, head: 'ldlp' | 'specdec++', d: number, D: number): { x: number[][]; y: number[]; seq: number[] } {
  const t = tableFromIPC(readFileSync(path));
  const col = (name: string) => {
    const list = ['feature', 'root_embedding', 'path_flag', 'path_hidden', 'path_embedding'].includes(name);
    return t.batches.flatMap((b) => Array.from(list ? listView(b.getChild(name)!.data[0]) : primitiveView(b.getChild(name)!.data[0])));
  };
  const seq = col('seq_id'), depth = col('depth'), acc = col('accepted'), feat = col('feature'), root = col('root_embedding');
  const flag = col('path_flag'), hid = col('path_hidden'), emb = col('path_embedding');
  const out = { x: [] as number[][], y: [] as number[], seq: [] as number[] };
  for (let r = 0; r < seq.length; r++) {
    if (head === 'ldlp') {
      if (depth[r] !== D && acc[r] >= depth[r]) continue;
      out.x.push([...feat.slice(r * d, (r + 1) * d), ...root.slice(r * d, (r + 1) * d)]), out.y.push(acc[r]), out.seq.push(seq[r]);
    } else for (let k = 0; k < D; k++) {
      if (flag[r * D + k] < 0) continue;
      const o = (r * D + k) * d;
      out.x.push([...hid.slice(o, o + d), ...emb.slice(o, o + d)]), out.y.push(flag[r * D + k]), out.seq.push(seq[r]);
    }
  }
  return out;
}

test('the streamed round store yields exactly the rows of the whole-file reading, holding at most its cache', async () => {
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 120 }), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 3 }), fc.constantFrom('ldlp', 'specdec++' as const),
      async (rounds, batchRows, blockRows, cacheBlocks, head) => {
        const d = 3, D = 4, path = join(tmp, `p${run++}.arrow`);
        await writeLog(path, rounds, 5, d, D, batchRows, run);
        const want = wholeFileRows(path, head, d, D);
        const s = await RoundStore.open([path], head, undefined, { blockRows, cacheBlocks });
        try {
          assert.equal(s.n, want.y.length);
          assert.deepEqual(Array.from(s.y), want.y);
          assert.deepEqual(Array.from(s.seq), want.seq);
          const x = new Float32Array(2 * d);
          // In order, then backwards (every block evicted and reloaded when the cache is small).
          for (const i of [...want.y.keys(), ...[...want.y.keys()].reverse()]) {
            s.row(i, x, 0);
            assert.deepEqual(Array.from(x), Array.from(Float32Array.from(want.x[i])), `row ${i}`);
          }
          assert.ok(s.peakLoadedRows <= cacheBlocks * blockRows, `held ${s.peakLoadedRows} rows, cache ${cacheBlocks} x ${blockRows}`);
        } finally {
          s.close();
        }
      }),
    { numRuns: 25, seed: 12 },
  );
});

test('train-ldlp over a log cut into many small record batches trains the same weights, holding a bounded share of rows', async () => {
  const d = 4, D = 3, big = join(tmp, 'big.arrow'), small = join(tmp, 'small.arrow');
  await writeLog(big, 600, 30, d, D, 1024, 7);
  await writeLog(small, 600, 30, d, D, 7, 7);
  for (const head of ['ldlp', 'specdec++'] as const) {
    // Blocks of 8 rows, the default cache (two shuffle groups and a validation block); one validation at the end.
    const opts = { head, steps: 40, batch: 32, hidden: 8, seed: 3, valEvery: 40, store: { blockRows: 8 } };
    const a = await trainPredictor({ ...opts, logs: [big], out: join(tmp, `${head}-big`) });
    const b = await trainPredictor({ ...opts, logs: [small], out: join(tmp, `${head}-small`) });
    for (const [name, t] of a.predictor.weights) assert.deepEqual(b.predictor.weights.get(name)!.data, t.data, `${head} ${name}`);
    assert.deepEqual(b.final, a.final);
    const rows = a.trainRows + a.final.rows, blocks = Math.ceil(rows / 8), epochs = Math.ceil((40 * 32) / a.trainRows);
    assert.ok(a.peakRowsHeld! <= (2 * SHUFFLE_BLOCKS + 2) * 8 && a.peakRowsHeld! < rows / 2, `${head}: held ${a.peakRowsHeld} of ${rows} rows`);
    // Batches stay within the shuffle groups the cache holds: each epoch loads each block about
    // once (a uniform shuffle over all rows would miss the cache on nearly every row).
    assert.ok(a.blockLoads! <= blocks * (epochs + 4), `${head}: ${a.blockLoads} block loads for ${blocks} blocks over ${epochs} epochs`);
    console.log(`# ${head}: ${rows} rows in ${blocks} blocks, held at most ${a.peakRowsHeld}, ${a.blockLoads} block loads over ${epochs} epochs`);
  }
});

test('a bad round log is one FormatError naming the file', async () => {
  const path = join(tmp, 'bad.arrow');
  await writeLog(path, 20, 2, 3, 4, 8, 1);
  const bytes = readFileSync(path);
  writeFileSync(path, bytes.subarray(0, bytes.length - 100)); // truncated body
  await assert.rejects(RoundStore.open([path], 'ldlp'), (e: unknown) => e instanceof FormatError && e.message.startsWith(`${path}: `));
  writeFileSync(path, bytes);
  writeFileSync(`${path}.json`, readFileSync(`${path}.json`, 'utf8').replace('"dim": 3', '"dim": 5')); // sidecar says another width
  await assert.rejects(RoundStore.open([path], 'ldlp'), (e: unknown) => e instanceof FormatError && e.message.startsWith(`${path}: column feature has type`));
});
