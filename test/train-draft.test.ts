/**
 * Draft-head training end to end on a tiny target: the target generates its own corpus
 * (runLog, generate mode), the head trains a few hundred steps on the wasm/cpu backend, and
 * must clearly beat the untrained head; a crashed-and-resumed run equals an uninterrupted one;
 * tensors do not leak.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { UsageError } from '../src/errors.ts';
import { readSafetensors } from '../src/io/safetensors.ts';
import { frequentTokens, headConfigFor, headConfigFromJson, validateHeadWeights } from '../src/model/draft-head.ts';
import { loadDraftHead } from '../src/io/draft-head-io.ts';
import { DraftSession } from '../src/runtime/draft.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { Rng } from '../src/util/rng.ts';
import { FeatureLogWriter, readFeatureLog, readSidecar } from '../training/feature-log.ts';
import { epochOrder, FeatureStore, SHUFFLE_BLOCKS } from '../training/dataset.ts';
import { runLog } from '../training/log.ts';
import { frozenTarget, trainDraft, type TrainDraftOptions } from '../training/train-draft.ts';
import { dense, QUANT, quantizeTarget } from '../src/model/quantize.ts';
import { EMBEDDING } from '../src/model/weights.ts';
import { TargetSession } from '../src/runtime/target.ts';

const dir = mkdtempSync(join(tmpdir(), 'eaglet-train-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const config = makeConfig({ vocabSize: 48, dim: 32, nLayers: 1, nHeads: 2, maxSeqLen: 128 });
const weights = randomWeights(config, 1, 3); // scale 3: peaky, predictable continuations
const target = { config, weights };
const META = { model: { source: 'test', sha256: '0', config }, corpus: { paths: [], mode: 'teacher' as const, seqLen: 8, maxTokens: 8 } };

/** The target continues random 4-token prompts greedily: its own corpus. */
async function selfGeneratedLog(): Promise<string> {
  const rng = new Rng(5);
  const prompts = join(dir, 'prompts.ids');
  writeFileSync(prompts, Array.from({ length: 60 }, () => Array.from({ length: 4 }, () => rng.int(config.vocabSize)).join(' ')).join('\n'));
  const r = await runLog({ model: target, corpus: [prompts], out: join(dir, 'self.arrow'), mode: 'generate', seqLen: 64, maxTokens: 4000, topK: 4 });
  assert.deepEqual(r.counts, { sequences: 60, rows: 3840, batches: 2 });
  return r.out;
}
const logPromise = selfGeneratedLog();

test('property: windows cover every usable row once, inside one sequence, with shifted targets', async () => {
  let k = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 6 }), fc.integer({ min: 1, max: 5 }), fc.option(fc.integer({ min: 1, max: 20 })), async (lengths, window, blockRows) => {
      const path = join(dir, `w${k++}.arrow`);
      const w = new FeatureLogWriter(path, 2, 0, 7);
      let row = 0;
      for (const [s, n] of lengths.entries()) {
        const ids = Array.from({ length: n }, (_, i) => row + i);
        const next = ids.map((t, i) => (i + 1 < n ? t + 1 : -1));
        await w.append({ seqId: s, startPosition: 0, tokens: ids, nextTokens: next, features: Float32Array.from(ids.flatMap((t) => [t, -t])) });
        row += n;
      }
      await w.finish(META);
      const data = await FeatureStore.open([path], window, 64, { blockRows: blockRows ?? undefined, cacheBlocks: 2 });
      const seen = new Set<number>();
      for (let i = 0; i < data.windowStart.length; i++) {
        assert.ok(data.windowLength[i] >= 1 && data.windowLength[i] <= window);
        const b = data.pack([i]);
        for (let r = 0; r < b.n; r++) {
          const t = data.windowStart[i] + r;
          assert.ok(!seen.has(t));
          seen.add(t);
          assert.equal(b.tokens[r], t + 1, 'input token = token_{t+1}');
          assert.equal(b.inputFeatures[2 * r], t);
          assert.equal(b.targetFeatures[2 * r], t + 1, 'target = feature_{t+1}');
        }
      }
      assert.equal(seen.size, lengths.reduce((a, n) => a + n - 1, 0), 'every row but the last of each sequence');
      data.close();
    }),
    { numRuns: 30, seed: 3 },
  );
});

test('trained head (ort) beats the untrained head on validation; EAGLE-layout output', async (t) => {
  const out = join(dir, 'head');
  const r = await trainDraft({ target, logs: [await logPromise], out, steps: 300, window: 16, batch: 8, backend: 'ort', seed: 1 });
  t.diagnostic(`backend ${r.backend}: ${r.tokensPerSecond.toFixed(0)} rows/s; top-1 ${r.initial.top1.toFixed(3)} -> ${r.final.top1.toFixed(3)}, top-3 ${r.initial.top3.toFixed(3)} -> ${r.final.top3.toFixed(3)}, feature loss ${r.initial.featureLoss.toFixed(3)} -> ${r.final.featureLoss.toFixed(3)}`);
  assert.ok(r.final.top1 >= r.initial.top1 + 0.05, `top-1 ${r.initial.top1} -> ${r.final.top1}`);
  assert.ok(r.final.top3 >= r.initial.top3 + 0.1, `top-3 ${r.initial.top3} -> ${r.final.top3}`);
  assert.ok(r.final.featureLoss < 0.7 * r.initial.featureLoss, `feature loss ${r.initial.featureLoss} -> ${r.final.featureLoss}`);
  assert.ok(r.curve.loss.at(-1)! < r.curve.loss[0]);

  const head = headConfigFromJson(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')));
  assert.deepEqual(head, headConfigFor(config));
  const saved = readSafetensors(join(out, 'model.safetensors')).tensors;
  assert.equal(validateHeadWeights(head, saved), null);
  for (const [n, t] of r.weights) assert.deepEqual(saved.get(n)!.data, t.data);
  assert.match(readFileSync(join(out, 'training-curve.svg'), 'utf8'), /^<svg[^]*<polyline[^]*<\/svg>\n$/);
});

test('--draft-vocab: the head drafts only the N most frequent next-tokens, trains, and loads as an EAGLE-3-layout head', async (t) => {
  const out = join(dir, 'head-vocab'), logs = [await logPromise], N = 12;
  const r = await trainDraft({ target, logs, out, steps: 150, window: 16, batch: 8, backend: 'ort', seed: 1, draftVocab: N });
  t.diagnostic(`draft vocab ${N}/${config.vocabSize}: top-1 ${r.initial.top1.toFixed(3)} -> ${r.final.top1.toFixed(3)}, top-3 ${r.initial.top3.toFixed(3)} -> ${r.final.top3.toFixed(3)}`);
  assert.ok(r.final.top1 >= r.initial.top1 + 0.05, `top-1 ${r.initial.top1} -> ${r.final.top1}`);

  const data = await FeatureStore.open(logs, 16, config.vocabSize);
  const nextTokens: number[] = [];
  for await (const b of readFeatureLog(logs[0])) nextTokens.push(...b.nextTokenId);
  const vocab = Array.from(frequentTokens(nextTokens, config.vocabSize, N));
  const count = (id: number) => nextTokens.filter((x) => x === id).length;
  const rest = Array.from({ length: config.vocabSize }, (_, i) => i).filter((i) => !vocab.includes(i));
  assert.ok(Math.min(...vocab.map(count)) >= Math.max(...rest.map(count)), 'kept tokens are the most frequent');

  const head = loadDraftHead(out, config);
  assert.equal(head.config.draftVocabSize, N);
  assert.deepEqual(Array.from(head.weights.get('d2t')!.data, (o, i) => i + o), vocab);
  const s = await DraftSession.create(head.config, head.weights, config, weights, { topK: 4 });
  try {
    const b = data.pack([0]);
    const o = await s.forward(new KVCache(1, head.config.nKvHeads, head.config.headDim, 64), b.tokens, b.inputFeatures, b.positions);
    assert.ok(Array.from(o.topkIds).every((id) => vocab.includes(id)), 'every drafted id is in the draft vocabulary');
  } finally {
    await s.dispose();
    data.close();
  }
});

test('--intermediate: a head with its own SwiGLU width trains, saves intermediate_size, loads and drafts; its checkpoint resumes only at that width', async (t) => {
  const out = join(dir, 'head-narrow'), logs = [await logPromise], units = Math.round(config.hiddenDim / 4);
  const r = await trainDraft({ target, logs, out, steps: 150, window: 16, batch: 8, backend: 'ort', seed: 1, intermediate: units });
  t.diagnostic(`SwiGLU width ${units} of ${config.hiddenDim}: top-1 ${r.initial.top1.toFixed(3)} -> ${r.final.top1.toFixed(3)}`);
  assert.ok(r.final.top1 >= r.initial.top1 + 0.05, `top-1 ${r.initial.top1} -> ${r.final.top1}`);
  assert.equal(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).intermediate_size, units);
  const head = loadDraftHead(out, config);
  assert.deepEqual(head.config, headConfigFor(config, undefined, units));
  assert.deepEqual(head.weights.get('layers.0.mlp.down_proj.weight')!.shape, [config.dim, units]);
  const data = await FeatureStore.open(logs, 16, config.vocabSize);
  const s = await DraftSession.create(head.config, head.weights, config, weights, { topK: 3 });
  try {
    const b = data.pack([0]);
    const o = await s.forward(new KVCache(1, head.config.nKvHeads, head.config.headDim, 64), b.tokens, b.inputFeatures, b.positions);
    assert.equal(o.topkIds.length, b.n * 3);
    assert.ok(o.hidden.every(Number.isFinite));
  } finally {
    await s.dispose();
    data.close();
  }
  // The target's width is the default; a checkpoint of another width does not resume as it.
  await assert.rejects(trainDraft({ target, logs, out, steps: 150, window: 16, batch: 8, backend: 'ort', seed: 1, resume: true }), new RegExp(`gate_proj\\.weight has shape \\[${units},${config.dim}\\], config implies \\[${config.hiddenDim},`));
});

test('--ttt: a checkpoint of the default run resumes under --ttt 1 to the same weights; a K = 2 head trains, and its checkpoint resumes only with --ttt 2', async (t) => {
  const logs = [await logPromise], base = { target, logs, window: 16, batch: 8, backend: 'ort' as const, seed: 1, checkpointEvery: 10 };
  const plain = await trainDraft({ ...base, out: join(dir, 'ttt-default'), steps: 20 });
  const out1 = join(dir, 'ttt-1');
  await assert.rejects(trainDraft({ ...base, out: out1, steps: 20, onProgress: (p) => { if (p.done === 15) throw new Error('crash'); } }), /crash/);
  const one = await trainDraft({ ...base, out: out1, steps: 20, ttt: 1, resume: true });
  assert.equal(one.startStep, 10);
  for (const [n, w] of plain.weights) assert.deepEqual(one.weights.get(n)!.data, w.data, `${n}: resumed under --ttt 1, differs from the default run`);
  const out = join(dir, 'ttt-2');
  const r = await trainDraft({ ...base, out, steps: 150, ttt: 2 });
  t.diagnostic(`--ttt 2: top-1 ${r.initial.top1.toFixed(3)} -> ${r.final.top1.toFixed(3)}`);
  assert.ok(r.final.top1 >= r.initial.top1 + 0.05, `top-1 ${r.initial.top1} -> ${r.final.top1}`);
  for (const ttt of [undefined, 1, 3]) await assert.rejects(trainDraft({ ...base, out, steps: 150, ttt, resume: true }), /--ttt 2 in the checkpoint/, `resumed with --ttt ${ttt}`);
  assert.equal((await trainDraft({ ...base, out, steps: 150, ttt: 2, resume: true })).startStep, 150);
});

for (const backend of ['ort', 'wasm'] as const)
test(`${backend}: a run that crashes and resumes from its checkpoint ends with the same weights as an uninterrupted run`, async () => {
  // shuffleRows 256: blocks of 17 rows, so the stream is read block by block through a bounded cache.
  const base: Omit<TrainDraftOptions, 'out'> = { target, logs: [await logPromise], steps: 45, window: 16, batch: 4, checkpointEvery: 10, warmup: 5, backend, seed: 2, epochs: 1, shuffleRows: 256 };
  const a = await trainDraft({ ...base, out: join(dir, `a-${backend}`) });
  assert.ok(a.stream.peakLoadedRows <= (2 * SHUFFLE_BLOCKS + 2) * 17 && a.stream.peakLoadedRows < a.stream.logRows / 4, `rows loaded at once: ${a.stream.peakLoadedRows} of ${a.stream.logRows}`);
  if (backend === 'wasm') assert.ok(a.tensorCounts.length === 45 && a.tensorCounts.every((n) => n === a.tensorCounts[0]), `tensor counts ${a.tensorCounts.slice(0, 5)}..${a.tensorCounts.slice(-5)}`);
  const outB = join(dir, `b-${backend}`);
  await assert.rejects(
    trainDraft({ ...base, out: outB, onProgress: (p) => { if (p.done === 27) throw new Error('crash'); } }),
    /crash/,
  );
  assert.ok(existsSync(join(outB, 'checkpoint.safetensors')));
  assert.ok(!existsSync(join(outB, 'model.safetensors')));
  const b = await trainDraft({ ...base, out: outB, resume: true });
  assert.equal(b.startStep, 20);
  for (const [n, t] of a.weights) assert.deepEqual(b.weights.get(n)!.data, t.data, `${n} differs after resume`);
  assert.deepEqual(b.curve, a.curve);
  await assert.rejects(trainDraft({ ...base, out: outB, resume: true, lr: 1 }), UsageError, 'a checkpoint of other options is refused');
});

test('bad options are usage errors naming the flag', async () => {
  const logs = [await logPromise];
  await assert.rejects(trainDraft({ target, logs, out: join(dir, 'x'), lr: -1 }), /--lr/);
  await assert.rejects(trainDraft({ target, logs, out: join(dir, 'x'), valFraction: 1 }), /--val-fraction/);
  await assert.rejects(trainDraft({ target, logs, out: join(dir, 'x'), backend: 'gpu' as never }), /--backend/);
  await assert.rejects(trainDraft({ target, logs, out: join(dir, 'x'), draftVocab: 48 }), /--draft-vocab/);
  for (const intermediate of [0, 2.5]) await assert.rejects(trainDraft({ target, logs, out: join(dir, 'x'), intermediate }), UsageError, `--intermediate ${intermediate}`);
  for (const ttt of [0, 1.5, 17]) await assert.rejects(trainDraft({ target, logs, out: join(dir, 'x'), window: 16, ttt }), /--ttt/, `--ttt ${ttt}`);
  await assert.rejects(trainDraft({ target: { config: makeConfig({ vocabSize: 48, dim: 16, nLayers: 1, nHeads: 2 }), weights }, logs, out: join(dir, 'x') }), /width 32/);
});

test('--quantize: the log holds the quantized target\'s features, and the head trains only for the format its logs came from', async () => {
  const corpus = join(dir, 'q-corpus.ids'), rng = new Rng(9);
  writeFileSync(corpus, Array.from({ length: 4 }, () => Array.from({ length: 16 }, () => rng.int(config.vocabSize)).join(' ')).join('\n'));
  const log = (q: 'q4' | undefined, name: string) => runLog({ model: target, corpus: [corpus], out: join(dir, name), mode: 'teacher', seqLen: 16, maxTokens: 64, quantize: q, threads: 1 });
  const [fp, q4] = [await log(undefined, 'fp.arrow'), await log('q4', 'q4.arrow')];
  const rows = async (path: string) => {
    const out: { tokens: number[]; features: number[] } = { tokens: [], features: [] };
    for await (const b of readFeatureLog(path)) out.tokens.push(...b.tokenId), out.features.push(...b.features);
    return out;
  };
  const [a, b] = [await rows(fp.out), await rows(q4.out)];
  assert.deepEqual(b.tokens, a.tokens);
  // Each 16-token chunk through the quantized target's own session: the same features, bit for bit.
  const qWeights = quantizeTarget(config, weights, QUANT.q4);
  const session = await TargetSession.create(config, qWeights, { threads: 1 });
  try {
    const want: number[] = [];
    for (let s = 0; s < 4; s++) {
      const ids = b.tokens.slice(s * 16, (s + 1) * 16);
      want.push(...(await session.forward(new KVCache(config.nLayers, config.nKvHeads, config.headDim, 16), ids, ids.map((_, i) => i))).features);
    }
    assert.deepEqual(b.features, want);
  } finally {
    await session.dispose();
  }
  assert.ok(a.features.some((v, i) => v !== b.features[i]), 'the fp32 target logs other features');
  const [sa, sb] = [readSidecar(fp.out), readSidecar(q4.out)];
  assert.equal(sa.model.quant, undefined);
  assert.deepEqual(sb.model.quant, { bits: 4, blockSize: 32 });
  assert.notEqual(sb.model.sha256, sa.model.sha256, 'the hash sees the quantized weights');

  // The frozen tables are the quantized target's, dequantized.
  const frozen = frozenTarget(target, 'q4').weights.get(EMBEDDING)!;
  assert.deepEqual(frozen.data, dense(qWeights.get(EMBEDDING)!).data);
  assert.notDeepEqual(frozen.data, weights.get(EMBEDDING)!.data);
  assert.equal(frozenTarget(target, undefined), target);

  const base = { target, batch: 2, window: 8, steps: 2, backend: 'ort' as const, threads: 1 };
  await assert.rejects(trainDraft({ ...base, logs: [q4.out], out: join(dir, 'q-a') }), /--quantize: .*q4\.arrow was logged from the target with 4-bit weights, and this head is trained for it with fp32 weights/);
  await assert.rejects(trainDraft({ ...base, logs: [fp.out], out: join(dir, 'q-b'), quantize: 'q4' }), /--quantize: .*with fp32 weights, and this head is trained for it with 4-bit weights/);
  await assert.rejects(trainDraft({ ...base, logs: [q4.out], out: join(dir, 'q-c'), quantize: 'q4', threads: 0 }), /--threads/);
  const r = await trainDraft({ ...base, logs: [q4.out], out: join(dir, 'q-d'), quantize: 'q4' });
  assert.equal(r.steps, 2);
  const held = await trainDraft({ ...base, target: { config, weights: qWeights }, logs: [q4.out], out: join(dir, 'q-e') });
  assert.equal(held.steps, 2, 'a target held quantized (a quantized checkpoint) needs no --quantize');
});

for (const [draftVocab, intermediate] of [[0, undefined], [12, undefined], [0, 20]])
test(`one training step agrees between backends (ort, wasm)${draftVocab ? `, draft vocabulary ${draftVocab}` : ''}${intermediate ? `, SwiGLU width ${intermediate}` : ''}`, async () => {
  const logs = [await logPromise];
  const go = (backend: 'ort' | 'wasm') => trainDraft({ target, logs, out: join(dir, `one-${backend}-${draftVocab}-${intermediate}`), steps: 1, warmup: 0, window: 16, batch: 4, backend, seed: 3, draftVocab, intermediate });
  const [a, b] = [await go('ort'), await go('wasm')];
  assert.ok(Math.abs(a.final.top3 - b.final.top3) < 1e-9, `validation top-3 ${a.final.top3} vs ${b.final.top3}`);
  assert.ok(Math.abs(a.curve.loss[0] - b.curve.loss[0]) < 1e-4, `loss ${a.curve.loss[0]} vs ${b.curve.loss[0]}`);
  assert.ok(Math.abs(a.final.featureLoss - b.final.featureLoss) < 1e-4, `validation after the step ${a.final.featureLoss} vs ${b.final.featureLoss}`);
  let worst = 0;
  for (const [name, t] of a.weights) for (let i = 0; i < t.data.length; i++) worst = Math.max(worst, Math.abs(t.data[i] - b.weights.get(name)!.data[i]));
  assert.ok(worst < 1e-5, `max weight difference ${worst}`);
});

test('property: an epoch order is a permutation of the training windows, read SHUFFLE_BLOCKS blocks at a time', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 80 }), fc.integer({ min: 0, max: 1000 }), (blockSizes, seed) => {
      const windowBlock = Int32Array.from(blockSizes.flatMap((n, b) => new Array(n).fill(b)));
      // Every third window held out, as a split would.
      const train = Int32Array.from(Array.from(windowBlock.keys()).filter((w) => w % 3 !== 1));
      const order = epochOrder(train, windowBlock, new Rng(seed));
      assert.deepEqual([...order].sort((a, b) => a - b), Array.from(train.keys()), 'each training window once');
      // Walk the order: a group ends when its SHUFFLE_BLOCKS blocks' windows are used up.
      const left = new Map<number, number>();
      for (const w of train) left.set(windowBlock[w], (left.get(windowBlock[w]) ?? 0) + 1);
      let open = new Set<number>();
      for (const i of order) {
        const b = windowBlock[train[i]];
        open.add(b);
        assert.ok(open.size <= SHUFFLE_BLOCKS, `a group reads ${open.size} blocks`);
        left.set(b, left.get(b)! - 1);
        if (open.size === SHUFFLE_BLOCKS && [...open].every((x) => left.get(x) === 0)) open = new Set();
      }
    }),
    { numRuns: 100, seed: 4 },
  );
});
