import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { FeatureLogWriter, readFeatureLog, readSidecar, sidecarPath, type FeatureRows } from '../training/feature-log.ts';
import { makeConfig } from '../src/model/random.ts';
import { FormatError } from '../src/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'eaglet-flog-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const META = {
  model: { source: 'random', sha256: 'ab'.repeat(32), config: makeConfig({ vocabSize: 32, dim: 8, nLayers: 1, nHeads: 2 }) },
  corpus: { paths: ['c.txt'], mode: 'teacher' as const, seqLen: 16, maxTokens: 100 },
};

/** Random sequences of rows, each sequence appended in one or more chunks. */
const arbLog = fc
  .record({ dim: fc.integer({ min: 1, max: 12 }), topK: fc.integer({ min: 0, max: 4 }), batchRows: fc.integer({ min: 1, max: 40 }) })
  .chain(({ dim, topK, batchRows }) =>
    fc.record({
      dim: fc.constant(dim),
      topK: fc.constant(topK),
      batchRows: fc.constant(batchRows),
      chunks: fc.array(
        fc.integer({ min: 1, max: 20 }).chain((n) =>
          fc.record({
            n: fc.constant(n),
            newSeq: fc.boolean(),
            tokens: fc.array(fc.integer({ min: 0, max: 1000 }), { minLength: n, maxLength: n }),
            features: fc.float32Array({ minLength: n * dim, maxLength: n * dim, noNaN: true }),
            topProbs: fc.float32Array({ minLength: n * topK, maxLength: n * topK, noNaN: true }),
          }),
        ),
        { maxLength: 8 },
      ),
    }),
  );

function toRows(chunks: { n: number; newSeq: boolean; tokens: number[]; features: Float32Array; topProbs: Float32Array }[], topK: number): FeatureRows[] {
  let seq = 0, pos = 0;
  return chunks.map((c, i) => {
    if (c.newSeq && i > 0) (seq++, (pos = 0));
    const r: FeatureRows = {
      seqId: seq, startPosition: pos, tokens: c.tokens, nextTokens: c.tokens.map((t) => t - 1), features: c.features,
      topIds: topK > 0 ? Int32Array.from({ length: c.n * topK }, (_, j) => j) : undefined,
      topProbs: topK > 0 ? c.topProbs : undefined,
    };
    pos += c.n;
    return r;
  });
}

let fileNo = 0;

test('property: write then read batch by batch returns every row, column for column', async () => {
  await fc.assert(
    fc.asyncProperty(arbLog, async ({ dim, topK, batchRows, chunks }) => {
      const path = join(dir, `p${fileNo++}.arrow`);
      const w = new FeatureLogWriter(path, dim, topK, batchRows);
      const rows = toRows(chunks, topK);
      for (const r of rows) await w.append(r);
      const counts = await w.finish(META);
      const total = rows.reduce((a, r) => a + r.tokens.length, 0);
      assert.equal(counts.rows, total);
      // Flatten what was written, then compare with what comes back.
      const want = { seq: [] as number[], pos: [] as number[], tok: [] as number[], next: [] as number[], feat: [] as number[], probs: [] as number[] };
      for (const r of rows)
        for (let i = 0; i < r.tokens.length; i++) {
          want.seq.push(r.seqId), want.pos.push(r.startPosition + i), want.tok.push(r.tokens[i]), want.next.push(r.nextTokens[i]);
          want.feat.push(...r.features.subarray(i * dim, (i + 1) * dim));
          if (topK > 0) want.probs.push(...r.topProbs!.subarray(i * topK, (i + 1) * topK));
        }
      const got = { seq: [] as number[], pos: [] as number[], tok: [] as number[], next: [] as number[], feat: [] as number[], probs: [] as number[] };
      let batches = 0;
      for await (const b of readFeatureLog(path)) {
        batches++;
        assert.ok(b.rows <= batchRows + 20, 'a batch holds about batchRows rows');
        assert.equal(b.features.length, b.rows * dim);
        assert.ok(b.features instanceof Float32Array && b.seqId instanceof Int32Array);
        got.seq.push(...b.seqId), got.pos.push(...b.position), got.tok.push(...b.tokenId), got.next.push(...b.nextTokenId);
        got.feat.push(...b.features);
        if (topK > 0) got.probs.push(...b.topProbs!);
        else assert.equal(b.topProbs, null);
      }
      assert.equal(batches, counts.batches);
      assert.deepEqual(got, want);
      const side = readSidecar(path);
      assert.deepEqual(side.counts, counts);
      assert.equal(side.dim, dim);
      assert.equal(side.topK, topK);
      assert.equal(side.model.sha256, META.model.sha256);
      assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp-')), [], 'no temporary files left');
    }),
    { numRuns: 40, seed: 7 },
  );
});

test('a log is written in several record batches when it exceeds batchRows', async () => {
  const path = join(dir, 'multi.arrow');
  const w = new FeatureLogWriter(path, 4, 0, 10);
  for (let s = 0; s < 5; s++) await w.append({ seqId: s, startPosition: 0, tokens: new Array(7).fill(s), nextTokens: new Array(7).fill(-1), features: new Float32Array(28).fill(s) });
  const counts = await w.finish(META);
  assert.deepEqual(counts, { sequences: 5, rows: 35, batches: 3 });
  const sizes: number[] = [];
  for await (const b of readFeatureLog(path)) sizes.push(b.rows);
  assert.deepEqual(sizes, [14, 14, 7]);
});

test('an unfinished or aborted writer leaves nothing at the final path', async () => {
  const path = join(dir, 'aborted.arrow');
  const w = new FeatureLogWriter(path, 3, 0, 2);
  await w.append({ seqId: 0, startPosition: 0, tokens: [1, 2, 3], nextTokens: [2, 3, -1], features: new Float32Array(9) });
  assert.equal(existsSync(path), false);
  await w.abort();
  assert.equal(existsSync(path), false);
  assert.equal(existsSync(sidecarPath(path)), false);
  assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('aborted')), []);
});

test('a process killed mid-write leaves no file at the final path', () => {
  const path = join(dir, 'killed.arrow');
  const script = join(dir, 'killer.mts');
  writeFileSync(script, `
    import { FeatureLogWriter } from ${JSON.stringify(new URL('../training/feature-log.ts', import.meta.url).pathname)};
    const w = new FeatureLogWriter(${JSON.stringify(path)}, 16, 0, 64);
    for (let s = 0; s < 50; s++) await w.append({ seqId: s, startPosition: 0, tokens: new Array(64).fill(1), nextTokens: new Array(64).fill(1), features: new Float32Array(1024) });
    process.kill(process.pid, 'SIGKILL');
  `);
  const r = spawnSync(process.execPath, ['--import', 'tsx', script], { encoding: 'utf8' });
  assert.equal(r.signal, 'SIGKILL', r.stderr);
  assert.equal(existsSync(path), false);
  assert.equal(existsSync(sidecarPath(path)), false);
});

test('a file that is not Arrow is reported with its name', async () => {
  const path = join(dir, 'bad.arrow');
  writeFileSync(path, 'not arrow at all');
  await assert.rejects(async () => {
    for await (const _ of readFeatureLog(path));
  }, (e: unknown) => e instanceof FormatError && e.message.startsWith(path));
  assert.throws(() => readSidecar(path), FormatError);
});
