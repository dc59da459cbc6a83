/**
 * Target training: the byte-level BPE trainer (deterministic, exact round trip through the HF
 * loader), the corpus split, the batched training loss against the float64 reference forward,
 * and train-target end to end on a tiny corpus (loss falls, resume equals an uninterrupted run,
 * no tensor leaks, the export loads as a model).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { UsageError } from '../src/errors.ts';
import { loadModel } from '../src/load-model.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import { Rng } from '../src/util/rng.ts';
import { trainBpe } from '../training/bpe.ts';
import { isHeldOut, readTargetCorpus } from '../training/target-corpus.ts';
import { loadTf } from '../training/tf-backend.ts';
import { additiveMask } from '../training/tf-ops.ts';
import { EOS_TOKEN, trainTokenizer, writeTokenizer } from '../training/tokenizer-train.ts';
import { trainTarget, windowLoss, type TrainTargetOptions } from '../training/train-target.ts';
import { earlyExitWeights } from '../training/early-exit.ts';
import { referenceForward, visibility } from './support/reference.ts';

const dir = mkdtempSync(join(tmpdir(), 'eaglet-train-target-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

/** Declaration-like text with repeated structure, so a tiny model has something to learn. */
function declarations(seed: number, n: number): string {
  const rng = new Rng(seed);
  const names = ['Array', 'Map', 'Promise', 'string', 'number', 'boolean', 'Record', 'Iterable'];
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const a = names[rng.int(names.length)], b = names[rng.int(names.length)];
    lines.push(`/** Returns the ${a.toLowerCase()} of a ${b.toLowerCase()}. */`, `export declare function f${rng.int(20)}(x: ${a}, y: ${b}): ${a};`);
  }
  return lines.join('\n') + '\n';
}

const sampleTexts = [declarations(1, 40), 'héllo wörld — 日本語 テキスト 🎉🎉 \t\r\n  indented\n\n', "it's 12.5% 'quoted' x=>y"];

test('property: BPE training is deterministic and independent of text order', () => {
  fc.assert(
    fc.property(fc.array(fc.string({ unit: 'grapheme', maxLength: 40 }), { maxLength: 8 }), fc.integer({ min: 256, max: 320 }), (texts, vocabSize) => {
      const a = trainBpe([...texts, ...sampleTexts], { vocabSize });
      assert.deepEqual(trainBpe([...texts, ...sampleTexts], { vocabSize }), a);
      assert.deepEqual(trainBpe([...sampleTexts, ...texts].reverse(), { vocabSize }), a);
      assert.ok(a.tokens.length <= vocabSize && new Set(a.tokens).size === a.tokens.length);
    }),
    { numRuns: 25 },
  );
});

// One tokenizer for the round-trip properties, loaded through the project's HF loader.
const tokDir = join(dir, 'tok');
const trained = trainTokenizer(sampleTexts, 330);
writeTokenizer(tokDir, trained);
const tok = loadTokenizer(tokDir);

test('property: decode(encode(x)) == x through the HF loader, for Unicode and ASCII text', () => {
  const text = fc.oneof(fc.string({ unit: 'grapheme', maxLength: 60 }), fc.string({ unit: 'binary-ascii', maxLength: 60 }), fc.constantFrom(...sampleTexts));
  fc.assert(
    fc.property(fc.array(text, { minLength: 1, maxLength: 3 }), (parts) => {
      const x = parts.join('');
      const ids = tok.encode(x, { addBos: false });
      assert.ok(ids.every((id) => id >= 0 && id < trained.vocabSize && id !== trained.eosId));
      assert.equal(tok.decode(ids), x);
    }),
    { numRuns: 300 },
  );
});

test('tokenizer: <|endoftext|> is the last id, the BOS of prompts and the EOS; merges compress the training text', () => {
  assert.equal(trained.vocabSize, 330);
  assert.equal(tok.vocabSize, 330);
  assert.equal(tok.bosId, trained.eosId);
  assert.deepEqual(tok.eosIds, [trained.eosId]);
  assert.deepEqual(tok.encode(`a${EOS_TOKEN}`, { addBos: false }).at(-1), trained.eosId);
  assert.deepEqual(tok.encode('x').slice(0, 1), [trained.eosId]);
  const ids = tok.encode(sampleTexts[0], { addBos: false });
  assert.ok(Buffer.byteLength(sampleTexts[0]) / ids.length > 2.5, `only ${Buffer.byteLength(sampleTexts[0]) / ids.length} bytes per token`);
});

test('property: the corpus split is by whole file name, stable, and both sides are non-empty or refused', () => {
  fc.assert(
    fc.property(fc.uniqueArray(fc.stringMatching(/^[a-z][a-z0-9.]{0,12}$/), { minLength: 1, maxLength: 12 }), fc.double({ min: 0.05, max: 0.9, noNaN: true }), (names, frac) => {
      const d = mkdtempSync(join(dir, 'split-'));
      for (const n of names) writeFileSync(join(d, `${n}.d.ts`), n);
      const held = names.filter((n) => isHeldOut(`${n}.d.ts`, frac));
      try {
        const c = readTargetCorpus(d, frac);
        assert.deepEqual(c.heldOut.map((f) => f.name), held.map((n) => `${n}.d.ts`).sort());
        assert.equal(c.train.length + c.heldOut.length, names.length);
        assert.equal(readTargetCorpus(d, frac).sha256, c.sha256);
      } catch (e) {
        assert.ok(e instanceof UsageError && (held.length === 0 || held.length === names.length), String(e));
      }
      rmSync(d, { recursive: true });
    }),
    { numRuns: 40 },
  );
});

test('the batched training loss (one-hot or gather embedding) equals the float64 reference cross-entropy', async () => {
  const { tf } = await loadTf('auto');
  const cfg = makeConfig({ vocabSize: 23, dim: 16, nLayers: 2, nHeads: 4, nKvHeads: 2, tieEmbeddings: true });
  const w = randomWeights(cfg, 3, 2);
  const B = 3, T = 5, rng = new Rng(9);
  const ids = Int32Array.from({ length: B * T }, () => rng.int(cfg.vocabSize)), labels = Int32Array.from({ length: B * T }, () => rng.int(cfg.vocabSize));
  let want = 0;
  for (let b = 0; b < B; b++) {
    const { logits } = referenceForward(cfg, w, ids.subarray(b * T, (b + 1) * T), Array.from({ length: T }, (_, i) => i), visibility(0, T));
    for (let i = 0; i < T; i++) {
      const row = logits.subarray(i * cfg.vocabSize, (i + 1) * cfg.vocabSize), max = Math.max(...row);
      const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
      want += (lse - row[labels[b * T + i]]) / (B * T);
    }
  }
  const table = new Map([...w].map(([n, t]) => [n, tf.tensor(t.data, t.shape)]));
  const mask = additiveMask(tf, T, T, (i, j) => j <= i);
  for (const oneHot of [true, false]) {
    const got = tf.tidy(() => windowLoss(tf, cfg, (n) => table.get(n)!, mask, ids, labels, oneHot).dataSync()[0]);
    assert.ok(Math.abs(got - want) < 1e-4 * Math.max(1, want), `oneHot=${oneHot}: ${got} vs reference ${want}`);
  }
  mask.dispose();
  for (const t of table.values()) t.dispose();
});

test('the early-exit loss adds W x (rising weights) x each early exit\'s cross-entropy, exits as in the float64 reference', async () => {
  const { tf } = await loadTf('auto');
  const cfg = makeConfig({ vocabSize: 19, dim: 16, nLayers: 3, nHeads: 4, nKvHeads: 2, tieEmbeddings: false });
  const w = randomWeights(cfg, 4, 2);
  const B = 2, T = 4, rng = new Rng(5), W = 0.7;
  const ids = Int32Array.from({ length: B * T }, () => rng.int(cfg.vocabSize)), labels = Int32Array.from({ length: B * T }, () => rng.int(cfg.vocabSize));
  // Exit l of the model = the model cut to its first l layers (same weight names), final norm and head included.
  const ce = (layers: number): number => {
    let sum = 0;
    for (let b = 0; b < B; b++) {
      const { logits } = referenceForward({ ...cfg, nLayers: layers }, w, ids.subarray(b * T, (b + 1) * T), Array.from({ length: T }, (_, i) => i), visibility(0, T));
      for (let i = 0; i < T; i++) {
        const row = logits.subarray(i * cfg.vocabSize, (i + 1) * cfg.vocabSize), max = Math.max(...row);
        sum += (max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0)) - row[labels[b * T + i]]) / (B * T);
      }
    }
    return sum;
  };
  assert.deepEqual(earlyExitWeights(3, W).map((x) => +x.toFixed(12)), [+(W / 3).toFixed(12), +((2 * W) / 3).toFixed(12)]);
  const want = ce(3) + (W / 3) * ce(1) + ((2 * W) / 3) * ce(2);
  const table = new Map([...w].map(([n, t]) => [n, tf.tensor(t.data, t.shape)]));
  const mask = additiveMask(tf, T, T, (i, j) => j <= i);
  const got = tf.tidy(() => windowLoss(tf, cfg, (n) => table.get(n)!, mask, ids, labels, false, W).dataSync()[0]);
  assert.ok(Math.abs(got - want) < 1e-4 * Math.max(1, want), `${got} vs reference ${want}`);
  assert.equal(earlyExitWeights(1, W).length, 0);
  mask.dispose();
  for (const t of table.values()) t.dispose();
});

// A tiny corpus: 6 training-side files and held-out ones picked by the name hash.
const corpusDir = join(dir, 'corpus');
mkdirSync(corpusDir);
for (let i = 0; i < 10; i++) writeFileSync(join(corpusDir, `lib.f${i}.d.ts`), declarations(100 + i, 30));
const tiny = (out: string, extra: Partial<TrainTargetOptions> = {}): TrainTargetOptions => ({
  corpusDir, out, dim: 32, layers: 1, heads: 2, vocab: 300, seqLen: 16, batch: 4, lr: 1e-2, steps: 40, warmup: 4,
  heldOut: 0.3, evalEvery: 20, evalTokens: 256, checkpointEvery: 5, seed: 7, backend: 'wasm', ...extra,
});

for (const backend of ['ort', 'wasm'] as const)
test(`${backend}: train-target on a tiny corpus: loss falls, tensors do not leak, the export loads, resume equals uninterrupted`, async () => {
  const full = await trainTarget(tiny(join(dir, `full-${backend}`), { backend }));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  assert.ok(mean(full.curve.loss.slice(-5)) < mean(full.curve.loss.slice(0, 5)) - 1.5, `train loss ${full.curve.loss.slice(0, 5)} -> ${full.curve.loss.slice(-5)}`);
  assert.ok(full.final.loss < full.initial.loss - 1.5, `held-out ${full.initial.loss} -> ${full.final.loss}`);
  if (backend === 'wasm') assert.equal(new Set(full.tensorCounts).size, 1, `tensor counts vary: ${full.tensorCounts}`);
  assert.deepEqual(full.curve.evalStep, [20, 40]);

  const model = await loadModel(join(dir, `full-${backend}`));
  assert.equal(model.config.vocabSize, 300);
  assert.deepEqual(model.config.eosTokenIds, [full.tokenizer.eosId]);
  assert.equal(model.tokenizer!.decode(model.tokenizer!.encode('export declare function f(x: Map): Map;')), 'export declare function f(x: Map): Map;');
  for (const [n, t] of full.weights) assert.deepEqual(model.weights.get(n)!.data, t.data, n);

  // Crash after step 12 (checkpoint at 10), then resume: the same weights, bit for bit.
  const out = join(dir, `resumed-${backend}`);
  await assert.rejects(trainTarget(tiny(out, { backend, onProgress: (p) => { if (p.done === 12) throw new Error('crash'); } })), /crash/);
  const resumed = await trainTarget(tiny(out, { backend, resume: true }));
  assert.equal(resumed.startStep, 10);
  assert.deepEqual(resumed.curve.loss, full.curve.loss);
  for (const [n, t] of full.weights) assert.deepEqual(resumed.weights.get(n)!.data, t.data, n);

  await assert.rejects(trainTarget(tiny(out, { backend, resume: true, lr: 5e-3 })), (e) => e instanceof UsageError && /--resume/.test(e.message));
});

test('--time-budget stops at a step boundary, checkpoints and exports', async () => {
  const out = join(dir, 'budget');
  const r = await trainTarget(tiny(out, { steps: 100_000, timeBudget: 0.002 }));
  assert.ok(r.stoppedEarly && r.steps > 0 && r.steps < 100_000);
  const again = await trainTarget(tiny(out, { steps: 100_000, timeBudget: 0.002, resume: true }));
  assert.equal(again.startStep, r.steps);
  assert.equal((await loadModel(out)).config.maxSeqLen, 16);
});

const defaultTarget = 'data/default/target';
test('the committed default tokenizer round-trips the held-out TypeScript files exactly', { skip: !existsSync(join(defaultTarget, 'tokenizer.json')) && 'no data/default/target yet' }, () => {
  const t = loadTokenizer(defaultTarget);
  const { heldOut } = readTargetCorpus('node_modules/typescript/lib', 0.1);
  for (const f of heldOut) assert.ok(t.decode(t.encode(f.text, { addBos: false })) === f.text, f.name);
});

test('one training step agrees between backends (ort, wasm)', async () => {
  const run = (backend: 'ort' | 'wasm') => trainTarget(tiny(join(dir, `one-${backend}`), { backend, steps: 1, warmup: 0, evalEvery: 1 }));
  const [a, b] = [await run('ort'), await run('wasm')];
  assert.ok(Math.abs(a.curve.loss[0] - b.curve.loss[0]) < 1e-4, `loss ${a.curve.loss[0]} vs ${b.curve.loss[0]}`);
  assert.ok(Math.abs(a.final.loss - b.final.loss) < 1e-4, `held-out after the step ${a.final.loss} vs ${b.final.loss}`);
  // Adam's first update is lr * g / |g| per element: equal unless a gradient is within rounding of 0.
  let worst = 0, n = 0;
  for (const [name, t] of a.weights) for (let i = 0; i < t.data.length; i++, n++) worst = Math.max(worst, Math.abs(t.data[i] - b.weights.get(name)!.data[i]));
  assert.ok(worst < 1e-5, `max weight difference ${worst} over ${n} weights`);
});
