/**
 * TargetSession (ONNX rendering of llamaForward on ORT) against the float64 reference, and the
 * cache protocols built on it: incremental decoding, tree verification, compaction.
 *
 * Tolerance vs the float64 reference: |ort - ref| <= 1e-4 + 1e-4 * |ref| (float32 over <= 3
 * layers of width <= 32 lands around 1e-5). ORT against ORT (tree vs path, compacted vs
 * sequential cache) uses the same bound: summation order differs between shapes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { ModelConfig } from '../src/model/config.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { tensor, type Weights } from '../src/model/weights.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { buildTargetModel } from '../src/onnx/model-graphs.ts';
import { TargetSession, type TargetOutput } from '../src/runtime/target.ts';
import type { AttentionMode, ValueLayout } from '../src/onnx/ops.ts';
import { referenceForward, visibility } from './support/reference.ts';
import { arbConfig, arbParents, arbTokens, depths, expectClose, mismatch, MAX_SEQ, pathTo, treeMask } from './support/model-arbs.ts';

const RUNS = 30;
const arbSeed = fc.integer({ min: 0, max: 2 ** 31 - 1 });
const arbScale = fc.constantFrom(1, 2);

const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);
// A small stride step re-strides the head-major cache often, and leaves masked unused rows.
const newCache = (c: ModelConfig): KVCache => new KVCache(c.nLayers, c.nKvHeads, c.headDim, MAX_SEQ, 4);
/** How a session reads the cache: each attention rendering over each value layout (the default pairs and the Transpose-reading ones). */
type Rendering = { attention: AttentionMode; valueLayout: ValueLayout };
const arbAttention = fc.constantFrom<Rendering>(
  { attention: 'split', valueLayout: 'transposed' },
  { attention: 'split', valueLayout: 'rows' },
  { attention: 'fused', valueLayout: 'rows' },
  { attention: 'fused', valueLayout: 'transposed' },
);
const label = (r: Rendering) => `${r.attention}/${r.valueLayout}`;

/** First index of each row's maximum, [rows]. */
function rowArgmax(a: Float32Array, width: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < a.length / width; r++) {
    let best = 0;
    for (let i = 1; i < width; i++) if (a[r * width + i] > a[r * width + best]) best = i;
    out.push(best);
  }
  return out;
}

/** Runs `fn` with a session that is disposed afterwards. */
async function withTarget<R>(c: ModelConfig, w: Weights, fn: (s: TargetSession) => Promise<R>, rendering: Rendering = { attention: 'split', valueLayout: 'transposed' }): Promise<R> {
  const s = await TargetSession.create(c, w, rendering);
  try {
    return await fn(s);
  } finally {
    await s.dispose();
  }
}

/** Commits `tokens` at positions [cache.length, ...) in one pass. */
async function prefill(s: TargetSession, cache: KVCache, tokens: number[]): Promise<TargetOutput> {
  const o = await s.forward(cache, tokens, range(cache.length, tokens.length));
  cache.append(o.newKeys, o.newValues, tokens.length);
  return o;
}

/** Row `i` of a [rows, width] array. */
const row = (a: Float32Array | Float64Array, i: number, width: number) => a.subarray(i * width, (i + 1) * width);

test('property: ORT forward equals the float64 reference (logits, features, new K/V), both attention renderings over both value layouts; argmax is the logits\' argmax', async () => {
  await fc.assert(
    fc.asyncProperty(arbConfig, arbSeed, arbScale, fc.integer({ min: 1, max: 12 }), arbAttention, async (c, seed, scale, n, attention) => {
      const w = randomWeights(c, seed, scale);
      const ids = range(0, n).map((i) => (i * 7 + seed) % c.vocabSize);
      const ref = referenceForward(c, w, ids, range(0, n), visibility(0, n));
      const [o, lean] = await withTarget(c, w, async (s) => [await s.forward(newCache(c), ids, range(0, n)), await s.forward(newCache(c), ids, range(0, n), undefined, { logits: false })], attention);
      assert.deepEqual(Array.from(o.argmax), rowArgmax(o.logits, c.vocabSize));
      assert.deepEqual(Array.from(lean.argmax), Array.from(o.argmax));
      assert.equal(lean.logits.length, 0);
      expectClose(
        // Logits sum d products with embedding rows of std `scale` (2 here): float32 cancellation
        // reaches ~5e-4 absolute (seen: 1.57048 vs 1.56997 at d = 11), so their bound scales with it.
        mismatch('logits', o.logits, ref.logits, 5e-4 * scale, 1e-4),
        mismatch('features', o.features, ref.features),
        ...range(0, c.nLayers).flatMap((l) => [mismatch(`keys[${l}]`, o.newKeys[l], ref.keys[l]), mismatch(`values[${l}]`, o.newValues[l], ref.values[l])]),
      );
    }),
    { numRuns: RUNS },
  );
});

test('property: decoding in chunks through the cache equals one pass over the whole sequence', async () => {
  const arb = arbConfig.chain((c) => fc.record({ c: fc.constant(c), ids: arbTokens(c.vocabSize, 2, 14), cuts: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 14, maxLength: 14 }) }));
  await fc.assert(
    fc.asyncProperty(arb, arbSeed, arbAttention, async ({ c, ids, cuts }, seed, rendering) => {
      const w = randomWeights(c, seed, 2);
      const ref = referenceForward(c, w, ids, range(0, ids.length), visibility(0, ids.length));
      await withTarget(c, w, async (s) => {
        const cache = newCache(c);
        for (let i = 0, k = 0; i < ids.length; i += cuts[k++]) {
          const chunk = ids.slice(i, i + cuts[k]);
          const o = await prefill(s, cache, chunk);
          // The logits bound of the forward property above (float32 cancellation with scale-2 weights; seen: -0.10989 vs -0.11002).
          expectClose(mismatch(`logits of chunk at ${i} (${label(rendering)})`, o.logits, ref.logits.subarray(i * c.vocabSize, (i + chunk.length) * c.vocabSize), 5e-4 * 2, 1e-4));
        }
        expectClose(...range(0, c.nLayers).flatMap((l) => [mismatch(`cache keys[${l}]`, cache.pastKeys(l), ref.keys[l]), mismatch(`cache values[${l}]`, cache.pastValues(l), ref.values[l])]));
      }, rendering);
    }),
    { numRuns: RUNS },
  );
});

test('property: each tree node scores like its root-to-node path run sequentially', async () => {
  const arb = arbConfig.chain((c) => fc.record({ c: fc.constant(c), prefix: arbTokens(c.vocabSize, 1, 6), parents: arbParents(1, 10), nodeIds: arbTokens(c.vocabSize, 10, 10) }));
  await fc.assert(
    fc.asyncProperty(arb, arbSeed, arbAttention, async ({ c, prefix, parents, nodeIds }, seed, rendering) => {
      const w = randomWeights(c, seed, 2);
      const n = parents.length, P = prefix.length, V = c.vocabSize;
      const tokens = nodeIds.slice(0, n), positions = depths(parents).map((d) => P + d);
      await withTarget(c, w, async (s) => {
        const cache = newCache(c);
        await prefill(s, cache, prefix);
        const tree = await s.forward(cache, tokens, positions, treeMask(parents));
        // Against the reference with the same explicit visibility...
        const ref = referenceForward(c, w, [...prefix, ...tokens], [...range(0, P), ...positions], visibility(0, P + n, [...range(-1, P), ...parents.map((p) => (p < 0 ? P - 1 : P + p))]));
        expectClose(mismatch('tree logits vs reference', tree.logits, ref.logits.subarray(P * V)));
        // ...and against running each path causally after the same prefix.
        for (let i = 0; i < n; i++) {
          const path = pathTo(parents, i);
          const seq = await s.forward(cache, path.map((j) => tokens[j]), range(P, path.length));
          expectClose(
            mismatch(`node ${i} logits`, row(tree.logits, i, V), row(seq.logits, path.length - 1, V)),
            mismatch(`node ${i} features (${label(rendering)})`, row(tree.features, i, c.dim), row(seq.features, path.length - 1, c.dim)),
          );
        }
      }, rendering);
    }),
    { numRuns: RUNS },
  );
});

test('property: committing an accepted path of a tree pass leaves the cache of decoding that path alone', async () => {
  const arb = arbConfig.chain((c) =>
    fc.record({ c: fc.constant(c), prefix: arbTokens(c.vocabSize, 1, 6), parents: arbParents(1, 10), nodeIds: arbTokens(c.vocabSize, 10, 10), pick: fc.nat(), next: fc.nat({ max: c.vocabSize - 1 }) }),
  );
  await fc.assert(
    fc.asyncProperty(arb, arbSeed, arbAttention, async ({ c, prefix, parents, nodeIds, pick, next }, seed, rendering) => {
      const w = randomWeights(c, seed, 2);
      const n = parents.length, P = prefix.length;
      const tokens = nodeIds.slice(0, n), path = pathTo(parents, pick % n);
      await withTarget(c, w, async (s) => {
        const spec = newCache(c);
        await prefill(s, spec, prefix);
        const o = await s.forward(spec, tokens, depths(parents).map((d) => P + d), treeMask(parents));
        spec.commitRows(o.newKeys, o.newValues, path);
        const after = await s.forward(spec, [next], [spec.length]);

        const plain = newCache(c);
        await prefill(s, plain, prefix);
        await prefill(s, plain, path.map((j) => tokens[j]));
        const want = await s.forward(plain, [next], [plain.length]);
        assert.equal(spec.length, plain.length);
        expectClose(
          mismatch('next-token logits', after.logits, want.logits),
          ...range(0, c.nLayers).flatMap((l) => [mismatch(`keys[${l}]`, spec.pastKeys(l), plain.pastKeys(l)), mismatch(`values[${l}]`, spec.pastValues(l), plain.pastValues(l))]),
        );
      }, rendering);
    }),
    { numRuns: RUNS },
  );
});

test('property: a [T, W] mask over the last W keys (W > T: staged draft rows) equals the reference', async () => {
  const arb = arbConfig.chain((c) =>
    fc.record({ c: fc.constant(c), prefix: arbTokens(c.vocabSize, 1, 6), ids: arbTokens(c.vocabSize, 1, 5), extra: fc.nat(), bits: fc.array(fc.boolean(), { minLength: 55, maxLength: 55 }) }),
  );
  await fc.assert(
    fc.asyncProperty(arb, arbSeed, arbAttention, async ({ c, prefix, ids, extra, bits }, seed, attention) => {
      const w = randomWeights(c, seed, 2);
      const P = prefix.length, T = ids.length, W = T + (extra % (P + 1)), open = P + T - W;
      // Random visibility over the last W keys, each token always seeing itself.
      const mask = Uint8Array.from({ length: T * W }, (_, k) => (bits[k % bits.length] || k % W === W - T + Math.floor(k / W) ? 1 : 0));
      const visible = new Uint8Array(T * (P + T));
      for (let i = 0; i < T; i++) {
        visible.fill(1, i * (P + T), i * (P + T) + open);
        visible.set(mask.subarray(i * W, (i + 1) * W), i * (P + T) + open);
      }
      const positions = range(P, T);
      const refPrefix = referenceForward(c, w, prefix, range(0, P), visibility(0, P));
      const ref = referenceForward(c, w, ids, positions, visible, 'halves', { keys: refPrefix.keys, values: refPrefix.values });
      await withTarget(c, w, async (s) => {
        const cache = newCache(c);
        await prefill(s, cache, prefix);
        const o = await s.forward(cache, ids, positions, mask);
        expectClose(mismatch(`logits (W=${W}, T=${T}, P=${P}, ${label(attention)})`, o.logits, ref.logits));
      }, attention);
    }),
    { numRuns: RUNS },
  );
});

test('example: Llama 3.2-like RoPE (theta 5e5, hd 64, llama3 scaling x32 from 8192) and Qwen3 q/k norms at far positions', async () => {
  const ropeScaling = { type: 'llama3' as const, factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 };
  const c = makeConfig({ vocabSize: 31, dim: 128, hiddenDim: 64, nLayers: 1, nHeads: 2, nKvHeads: 1, ropeTheta: 5e5, ropeScaling, qkNorm: true, maxSeqLen: 20000 });
  const w = randomWeights(c, 3, 2);
  // Every rotation pair is exercised: kept, blended and slowed frequencies all exist at hd 64.
  const ids = [3, 9, 27, 4], positions = [0, 700, 9000, 19000], vis = visibility(0, 4);
  const ref = referenceForward(c, w, ids, positions, vis);
  const o = await withTarget(c, w, (s) => s.forward(newCache(c), ids, positions));
  expectClose(mismatch('logits', o.logits, ref.logits), mismatch('keys[0]', o.newKeys[0], ref.keys[0]));
  // The oracle is not blind to either feature: dropping one changes the logits.
  const { ropeScaling: _, ...plain } = c;
  const unscaled = referenceForward(plain, w, ids, positions, vis), unnormed = referenceForward({ ...c, qkNorm: false }, w, ids, positions, vis);
  assert.ok(mismatch('scaling matters', unscaled.logits, ref.logits) !== null);
  assert.ok(mismatch('q/k norms matter', unnormed.logits, ref.logits) !== null);
});

/** HF's permutation of llama2.c q/k rows: within a head, row 2i + half lands on half*hd/2 + i. */
function permuteToHalves(t: { shape: number[]; data: Float32Array }, nHeads: number, hd: number) {
  const cols = t.data.length / (nHeads * hd), out = tensor(t.shape);
  for (let h = 0; h < nHeads; h++)
    for (let i = 0; i < hd / 2; i++)
      for (const half of [0, 1]) out.data.set(t.data.subarray((h * hd + 2 * i + half) * cols, (h * hd + 2 * i + half + 1) * cols), (h * hd + half * (hd / 2) + i) * cols);
  return out;
}

test('example: the reference\'s interleaved RoPE on llama2.c-layout q/k equals halves RoPE on HF-permuted q/k', () => {
  const c = makeConfig({ vocabSize: 23, dim: 16, nLayers: 2, nHeads: 4, nKvHeads: 2, attentionBias: true });
  const w = randomWeights(c, 7, 2), hf: Weights = new Map(w);
  for (let l = 0; l < c.nLayers; l++)
    for (const [name, heads] of [['q_proj', c.nHeads], ['k_proj', c.nKvHeads]] as const)
      for (const kind of ['weight', 'bias']) {
        const key = `model.layers.${l}.self_attn.${name}.${kind}`;
        hf.set(key, permuteToHalves(w.get(key)!, heads, c.headDim));
      }
  const ids = [1, 4, 9, 16, 2], pos = range(0, 5), vis = visibility(0, 5);
  const a = referenceForward(c, w, ids, pos, vis, 'interleaved'), b = referenceForward(c, hf, ids, pos, vis, 'halves');
  expectClose(mismatch('logits', a.logits, b.logits, 1e-10, 1e-10));
});

test('example: the target model keeps its weights outside the protobuf, read in place from the weight buffers', () => {
  const c = makeConfig({ vocabSize: 300, dim: 64, nLayers: 2, nHeads: 4 });
  const w = randomWeights(c, 2);
  const m = buildTargetModel(c, w);
  const weightBytes = [...w.values()].reduce((a, t) => a + t.data.byteLength, 0);
  // The protobuf holds graph and small constants only; every large weight is one external buffer, not a copy.
  assert.ok(m.bytes.length < weightBytes / 4, `protobuf ${m.bytes.length} bytes vs ${weightBytes} of weights`);
  const buffers = new Set(m.external.map((e) => e.data.buffer));
  assert.ok(buffers.has(w.get('model.embed_tokens.weight')!.data.buffer) && buffers.has(w.get('model.layers.1.mlp.down_proj.weight')!.data.buffer));
});

test('example: stats count passes and time; input buffers grow past maxTokens; bad inputs are rejected', async () => {
  const c = makeConfig({ vocabSize: 19, dim: 8, nLayers: 1, nHeads: 2, maxSeqLen: MAX_SEQ });
  const w = randomWeights(c, 1);
  const s = await TargetSession.create(c, w, { maxTokens: 2, threads: 1 });
  try {
    const cache = newCache(c);
    const o = await prefill(s, cache, [1, 2, 3, 4, 5]);
    assert.equal(o.logits.length, 5 * c.vocabSize);
    await prefill(s, cache, [6]);
    assert.equal(s.stats.passes, 2);
    assert.ok(s.stats.msTotal >= s.stats.msInRun && s.stats.msInRun > 0);
    await assert.rejects(s.forward(cache, [1, 2], [6, 7], new Uint8Array(3)), /tree mask has 3 entries/);
    await assert.rejects(s.forward(cache, [1, 2], [6]), /2 tokens but 1 positions/);
    await assert.rejects(s.forward(new KVCache(2, 2, 4, 8), [1], [0]), /does not fit the model/);
    await assert.rejects(TargetSession.create(c, new Map()), /missing tensor model.embed_tokens.weight/);
  } finally {
    await s.dispose();
  }
});

test('example: the one-kernel Attention reads a cache in rows without a Transpose (its keys are laid out as its values); a transposed cache costs two a layer', () => {
  const c = makeConfig({ vocabSize: 32, dim: 64, nLayers: 3, nHeads: 4, nKvHeads: 2, headDim: 16, hiddenDim: 128, maxSeqLen: MAX_SEQ });
  const w = randomWeights(c, 1);
  // NodeProto.op_type (field 4) = "Transpose": with keys always transposed, the rows cache cost one a layer.
  const transposes = (valueLayout: ValueLayout): number => {
    const buf = Buffer.from(buildTargetModel(c, w, 'fused', { valueLayout }).bytes), pat = Buffer.from([0x22, 9, ...Buffer.from('Transpose')]);
    let n = 0;
    for (let i = buf.indexOf(pat); i >= 0; i = buf.indexOf(pat, i + 1)) n++;
    return n;
  };
  assert.deepEqual([transposes('rows'), transposes('transposed')], [0, 2 * c.nLayers]);
});
