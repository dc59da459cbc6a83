/**
 * Draft-length policies: every policy keeps generation lossless (speculative == plain decoding,
 * greedy and sampled), plus each policy's own rule as a unit property: depths stay in
 * [0, maxDepth], threshold stops exactly below its confidence, AdaEDL's lambda follows its
 * update, the heuristic follows +2/-1, and goodput falls back to plain decoding when drafting
 * does not pay. Last, the benchmark library end to end on a tiny pair.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { TreeBuilder, type Frontier } from '../trees/index.ts';
import { comparePolicies, comparisonExitCode, comparisonMarkdown, writeComparison } from '../src/bench/compare.ts';
import { Generator } from '../src/generate/generator.ts';
import { AdaEdlPolicy, acceptanceBound } from '../src/policies/adaedl.ts';
import { GoodputPolicy } from '../src/policies/goodput.ts';
import { nondecreasing, SmartSpecPlanner, StepCost, StepOverhead } from '../src/policies/smartspec.ts';
import { HeuristicPolicy } from '../src/policies/heuristic.ts';
import type { LengthPolicy, RoundOutcome, RoundState } from '../src/policies/policy.ts';
import { createPolicy } from '../src/policies/registry.ts';
import { ThresholdPolicy } from '../src/policies/threshold.ts';
import { loadGenerator } from '../src/api.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { DraftSession } from '../src/runtime/draft.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { tinyConfig, tinyPair, treeShape } from './support/models.ts';

/** The training-free policies (trained predictors need files: their own tests), plus variants that stop early or change depth often. */
const SPECS = ['static', 'eagle2', 'threshold', 'adaedl', 'heuristic', 'goodput', 'static-1', 'static-0', 'threshold:min-confidence=0.6', 'adaedl:lambda=0.8:rate=0.2', 'goodput:explore-every=3'];

const state = (maxDepth: number): RoundState => ({ position: 10, lastFeature: new Float32Array(4), rootToken: 0, maxDepth });

/** A frontier as the builder would hand it to continueDrafting (only the fields policies read matter). */
function frontier(depth: number, values: number[], entropies: number[]): Frontier {
  const k = values.length;
  return {
    depth, count: k, rowOffset: 0, draftMask: new Uint8Array(0), tokens: new Int32Array(k), parentSlots: new Int32Array(k),
    values: Float64Array.from(values), entropies: Float64Array.from(entropies),
  };
}

test('every policy is lossless: speculative output == plain output, greedy and sampled', async () => {
  const sampling = fc.oneof(
    fc.constant({ temperature: 0 }),
    fc.record({ temperature: fc.constantFrom(0.7, 1.3), topK: fc.constantFrom(0, 5), topP: fc.constantFrom(1, 0.8), seed: fc.nat(1e6) }),
  );
  let drafted = 0, accepted = 0;
  await fc.assert(
    fc.asyncProperty(tinyConfig(), fc.nat(1e6), treeShape, sampling, fc.integer({ min: 1, max: 30 }), async (cfg, seed, tree, opts, maxNewTokens) => {
      const p = await tinyPair(cfg, seed, tree);
      try {
        const prompt = Array.from({ length: 1 + (seed % 8) }, (_, i) => (seed + 7 * i) % cfg.vocabSize);
        const gen = { ...opts, maxNewTokens };
        const ref = await p.ar.generate(prompt, gen);
        const { target, drafter } = p.spec.generator.parts;
        for (const spec of SPECS) {
          const g = new Generator({ target, drafter, policy: createPolicy(spec, { tree }) });
          // Twice: adaptive policies start the second run from what the first taught them.
          for (let r = 0; r < 2; r++) {
            const out = await g.generate(prompt, gen);
            assert.deepEqual(out.ids, ref.ids, `${spec} run ${r}`);
            drafted += out.stats.draftPasses;
            accepted += out.stats.roundTokens - out.stats.rounds;
          }
        }
      } finally {
        await p.dispose();
      }
    }),
    { numRuns: 25, seed: 11 },
  );
  // Only meaningful if drafts were sometimes accepted.
  assert.ok(drafted > 0 && accepted > 0, `${drafted} draft passes, ${accepted} drafted tokens accepted`);
});

test('every policy plans a depth in [0, maxDepth] whatever it has observed', () => {
  const outcome = fc.record({ depth: fc.integer({ min: 0, max: 8 }), treeSize: fc.nat(30), accepted: fc.nat(8), draftMs: fc.double({ min: 0, max: 50, noNaN: true }), verifyMs: fc.double({ min: 0, max: 50, noNaN: true }) })
    .map((o): RoundOutcome => ({ ...o, accepted: Math.min(o.accepted, o.depth) }));
  const step = fc.record({ maxDepth: fc.integer({ min: 0, max: 8 }), outcome, value: fc.double({ min: -20, max: 0, noNaN: true }), entropy: fc.double({ min: 0, max: 8, noNaN: true }) });
  fc.assert(
    fc.property(fc.constantFrom(...SPECS), fc.array(step, { minLength: 1, maxLength: 60 }), (spec, steps) => {
      const policy = createPolicy(spec, { tree: { topK: 2, maxDepth: 8, totalTokens: 12 } });
      for (const s of steps) {
        const plan = policy.plan(state(s.maxDepth));
        assert.ok(Number.isInteger(plan.depth) && plan.depth >= 0 && plan.depth <= s.maxDepth, `${spec}: depth ${plan.depth} of ${s.maxDepth}`);
        assert.ok(plan.totalTokens >= 1);
        assert.equal(typeof (policy.continueDrafting?.(frontier(1, [s.value], [s.entropy])) ?? true), 'boolean');
        policy.observe?.({ ...s.outcome, depth: Math.min(s.outcome.depth, plan.depth), accepted: Math.min(s.outcome.accepted, plan.depth) });
      }
    }),
    { numRuns: 200, seed: 12 },
  );
});

test('threshold continues exactly while the best path probability is >= min-confidence', () => {
  fc.assert(
    fc.property(fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: -10, max: 0, noNaN: true }), (min, best) => {
      const p = new ThresholdPolicy(8, { minConfidence: min });
      assert.equal(p.continueDrafting(frontier(2, [best, best - 1], [0, 0])), best >= Math.log(min));
    }),
    { seed: 13 },
  );
  const p = new ThresholdPolicy(8, { minConfidence: 0.5 });
  assert.equal(p.continueDrafting(frontier(1, [Math.log(0.5)], [0])), true); // at the threshold: go on
  assert.equal(p.continueDrafting(frontier(1, [Math.log(0.49)], [0])), false);
});

test('threshold 1 drafts one level per round, threshold 0 drafts the full depth (real drafter)', async () => {
  const cfg = fc.sample(tinyConfig(), { seed: 14, numRuns: 1 })[0];
  const tree = { topK: 2, maxDepth: 4, totalTokens: 8 };
  const p = await tinyPair(cfg, 14, tree);
  try {
    const { target, drafter } = p.spec.generator.parts;
    // Draft passes, and the passes a policy drafting `levels` per round would run: near the
    // token budget a round drafts at most the tokens left to emit minus its bonus.
    const run = async (min: number, levels: number) => {
      const maxNewTokens = 12, it = new Generator({ target, drafter, policy: new ThresholdPolicy(8, { minConfidence: min }) }).stream([1, 2, 3], { maxNewTokens, stopAtEos: false });
      let emitted = 0, expected = 0, rounds = 0;
      for (let r = await it.next(); ; r = await it.next()) {
        if (r.done) return { stats: r.value, expected, rounds };
        if (emitted > 0) (expected += Math.min(levels, maxNewTokens - emitted - 1)), rounds++; // the first chunk is the prefill's
        emitted += r.value.ids.length;
      }
    };
    const never = await run(1, 1), always = await run(0, tree.maxDepth);
    // Exact 1 is reachable only by a certain draft; a random head never is.
    assert.equal(never.stats.draftPasses, never.expected);
    assert.equal(always.stats.draftPasses, always.expected);
    assert.ok(always.expected > always.rounds * 2, `${always.expected} passes over ${always.rounds} rounds: too few full-depth rounds to tell`);
  } finally {
    await p.dispose();
  }
});

test("frontier entropies: each node carries its parent row's top-k entropy, the rest lumped as one outcome", () => {
  const row = (k: number) => fc.array(fc.double({ min: 0.01, max: 1, noNaN: true }), { minLength: k, maxLength: k }).map((w) => {
    const total = w.reduce((a, b) => a + b, 0) * 1.25; // a quarter of the mass outside the top-k
    return w.map((x) => Math.log(x / total)).sort((a, b) => b - a);
  });
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 4 }).chain((k) => fc.tuple(fc.constant(k), row(k), fc.array(row(k), { minLength: k, maxLength: k }))), ([k, rootRow, rows]) => {
      const b = new TreeBuilder({ topK: k, maxDepth: 3, totalTokens: 8 });
      const H = (lps: number[]) => {
        const rest = 1 - lps.reduce((a, lp) => a + Math.exp(lp), 0);
        return -lps.reduce((a, lp) => a + Math.exp(lp) * lp, 0) - rest * Math.log(rest);
      };
      b.reset(0);
      b.expand(rootRow.map((_, j) => j), rootRow);
      for (let i = 0; i < k; i++) assert.ok(Math.abs(b.frontier.entropies[i] - H(rootRow)) < 1e-9);
      b.expand(rows.flatMap((r) => r.map((_, j) => j)), rows.flat());
      const f = b.frontier;
      for (let i = 0; i < f.count; i++) assert.ok(Math.abs(f.entropies[i] - H(rows[f.parentSlots[i]])) < 1e-9);
    }),
    { numRuns: 100, seed: 19 },
  );
});

test('AdaEDL: lambda follows its documented update rule', () => {
  const outcome = fc.integer({ min: 1, max: 6 }).chain((depth) => fc.record({ depth: fc.constant(depth), accepted: fc.integer({ min: 0, max: depth }) }));
  fc.assert(
    fc.property(
      fc.record({ gamma: fc.double({ min: 0.01, max: 1, noNaN: true }), lambda: fc.double({ min: 0, max: 1, noNaN: true }), target: fc.double({ min: 0, max: 1, noNaN: true }), rate: fc.double({ min: 0, max: 1, noNaN: true }), beta: fc.double({ min: 0, max: 1, noNaN: true }) }),
      fc.array(fc.oneof(outcome, fc.constant({ depth: 0, accepted: 0 })), { maxLength: 40 }),
      (opts, outcomes) => {
        const p = new AdaEdlPolicy(8, opts);
        let lambda = opts.lambda, S = 0, T = 0;
        for (const o of outcomes) {
          p.observe({ ...o, treeSize: o.depth, draftMs: 1, verifyMs: 1 });
          if (o.depth === 0) continue; // a plain round teaches nothing about drafts
          S = opts.beta * S + o.accepted;
          T = opts.beta * T + o.accepted + (o.accepted < o.depth ? 1 : 0);
          lambda = Math.min(1, Math.max(0, lambda + opts.rate * (opts.target - S / T)));
          assert.ok(Math.abs(p.lambda - lambda) < 1e-12);
        }
      },
    ),
    { numRuns: 300, seed: 15 },
  );
  // Direction: rejections raise lambda (stop earlier), full acceptance lowers it (go deeper).
  const low = new AdaEdlPolicy(8), high = new AdaEdlPolicy(8);
  for (let i = 0; i < 20; i++) {
    low.observe({ depth: 4, treeSize: 8, accepted: 0, draftMs: 1, verifyMs: 1 });
    high.observe({ depth: 4, treeSize: 8, accepted: 4, draftMs: 1, verifyMs: 1 });
  }
  assert.ok(low.lambda > 0.5 && high.lambda < 0.5);
  assert.equal(acceptanceBound(0.2, 0), 1);
});

test('the draft graph outputs each row\'s full-vocabulary entropy', async () => {
  const cfg = makeConfig({ vocabSize: 40, dim: 16, nLayers: 1, nHeads: 2, maxSeqLen: 32 });
  const w = randomWeights(cfg, 3, 2);
  const s = await DraftSession.create(headConfigFor(cfg), randomHeadWeights(cfg, 4), cfg, w, { threads: 1, topK: cfg.vocabSize });
  try {
    const T = 5, cache = new KVCache(1, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen);
    const feats = Float32Array.from({ length: T * cfg.dim }, (_, i) => Math.sin(i));
    const out = await s.forward(cache, [1, 2, 3, 4, 5], feats, [0, 1, 2, 3, 4]);
    for (let r = 0; r < T; r++) {
      // topK = V returns the whole log-softmax row: recompute its entropy in float64.
      let h = 0;
      for (let j = 0; j < cfg.vocabSize; j++) h -= Math.exp(out.topkLogProbs[r * cfg.vocabSize + j]) * out.topkLogProbs[r * cfg.vocabSize + j];
      assert.ok(Math.abs(out.entropy[r] - h) < 1e-4, `row ${r}: ${out.entropy[r]} vs ${h}`);
      assert.ok(h > Math.log(9), 'above what a top-8 estimate could ever say'); // random head: near-flat rows
    }
  } finally {
    await s.dispose();
  }
});

test('AdaEDL with a real drafter: rows of high entropy stop drafting earlier than rows of low entropy', async () => {
  // One random target and head; only the LM head's scale differs, which flattens (x0.05) or
  // sharpens (x4) every draft distribution. Fixed lambda (rate 0) isolates the stop test.
  const cfg = makeConfig({ vocabSize: 48, dim: 16, nLayers: 1, nHeads: 2, maxSeqLen: 96 });
  const run = async (scale: number) => {
    const w = randomWeights(cfg, 7, 2), lm = w.get('lm_head.weight')!;
    for (let i = 0; i < lm.data.length; i++) lm.data[i] *= scale;
    const policy = new AdaEdlPolicy(12, { rate: 0 }), seen: number[] = [];
    const keep = policy.keepLevel.bind(policy);
    policy.keepLevel = (f, h) => (seen.push(h[0]), keep(f, h));
    const g = await loadGenerator({ model: { config: cfg, weights: w, source: 'hf' }, draft: { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, 8) }, tree: { topK: 3, maxDepth: 6, totalTokens: 12 }, policy, threads: 1 });
    seen.length = 0; // the load's warm-up round
    const out = await g.generate([1, 2, 3, 4], { maxNewTokens: 40, stopAtEos: false });
    await g.dispose();
    return { meanDepth: out.stats.depthSum / out.stats.rounds, meanEntropy: seen.reduce((a, b) => a + b, 0) / seen.length };
  };
  const flat = await run(0.05), sharp = await run(4);
  assert.ok(flat.meanEntropy > sharp.meanEntropy + 1, `entropies ${flat.meanEntropy} vs ${sharp.meanEntropy}`);
  assert.ok(flat.meanDepth < sharp.meanDepth, `mean depth ${flat.meanDepth} (flat) vs ${sharp.meanDepth} (sharp)`);
  assert.ok(flat.meanDepth < 1 && sharp.meanDepth > 3, `mean depth ${flat.meanDepth} (flat) vs ${sharp.meanDepth} (sharp)`);
});

test('heuristic: +2 after a fully accepted round, -1 otherwise, within [1, maxDepth]', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 10 }), fc.integer({ min: 1, max: 10 }), fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 50 }), (start, maxDepth, fractions) => {
      const p = new HeuristicPolicy(8, { start });
      let model = Math.min(start, maxDepth);
      for (const f of fractions) {
        const { depth } = p.plan(state(maxDepth));
        assert.equal(depth, model);
        const accepted = Math.round(f * depth);
        p.observe({ depth, treeSize: depth, accepted, draftMs: 1, verifyMs: 1 });
        model = accepted === depth ? Math.min(model + 2, maxDepth) : Math.max(1, model - 1);
      }
    }),
    { numRuns: 200, seed: 16 },
  );
});

test('heuristic: a round clipped below its depth (tokens or rows left) neither learns nor lowers the depth the next rounds plan', () => {
  const p = new HeuristicPolicy(8, { start: 4 });
  assert.equal(p.plan(state(4)).depth, 4);
  p.observe({ depth: 4, treeSize: 4, accepted: 2, draftMs: 1, verifyMs: 1 }); // 4 - 1
  // The last rounds of a generation: the generator allows 1 level, then none (one token left).
  for (const [allowed, accepted] of [[1, 1], [1, 0], [0, 0]]) {
    const { depth } = p.plan(state(allowed));
    assert.equal(depth, allowed);
    p.observe({ depth, treeSize: depth, accepted, draftMs: 1, verifyMs: 1 });
  }
  // The next generation (a policy kept across calls) resumes the schedule where it was.
  assert.equal(p.plan(state(4)).depth, 3);
  p.observe({ depth: 3, treeSize: 3, accepted: 3, draftMs: 1, verifyMs: 1 });
  assert.equal(p.plan(state(4)).depth, 4); // 3 + 2, within the deepest the rounds allowed
});

/**
 * Drives goodput through simulated rounds: a round at depth d costs draftMs(d) + verifyMs(d) and
 * accepts a drafted token at each level with probability `accept` (seeded). Returns the depths.
 */
function simulate(policy: LengthPolicy, rounds: number, accept: number, draftMs: (d: number) => number, verifyMs: (d: number) => number, maxDepth = 5): number[] {
  const rng = fc.sample(fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { minLength: rounds * maxDepth, maxLength: rounds * maxDepth }), { seed: 17, numRuns: 1 })[0];
  const depths: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const { depth } = policy.plan(state(maxDepth));
    let accepted = 0;
    while (accepted < depth && rng[r * maxDepth + accepted] < accept) accepted++;
    policy.observe?.({ depth, treeSize: depth, accepted, draftMs: draftMs(depth), verifyMs: verifyMs(depth) });
    depths.push(depth);
  }
  return depths;
}

test('goodput chooses plain decoding when drafting is costly, and explores only every N-th round', () => {
  // Drafting costs 10x a target step per level: even perfect acceptance does not pay.
  const costly = simulate(new GoodputPolicy(8, 5, { exploreEvery: 10 }), 206, 1, (d) => 10 * d, () => 1);
  assert.deepEqual(costly.slice(0, 6), [5, 4, 3, 2, 1, 0]); // warm-up: every depth once, deepest first
  const after = costly.slice(6);
  after.forEach((d, i) => assert.equal(d, (i + 1) % 10 === 0 ? 1 : 0, `round ${i}`));
  // Drafting nearly free and well accepted: the deepest tree wins.
  const cheap = simulate(new GoodputPolicy(8, 5), 300, 0.9, (d) => 0.05 * d, (d) => 1 + 0.02 * d);
  assert.ok(cheap.slice(-100).filter((d) => d === 5).length >= 90, cheap.join(','));
  // Drafts always rejected: speculation only adds cost, so plain decoding.
  const rejected = simulate(new GoodputPolicy(8, 5, { exploreEvery: 0 }), 50, 0, (d) => 0.2 * d, (d) => 1 + 0.05 * d);
  assert.ok(rejected.slice(6).every((d) => d === 0));
});

test('goodput recovers: when drafts start being accepted, exploration finds depth again', () => {
  const p = new GoodputPolicy(8, 5, { exploreEvery: 5 });
  const draft = (d: number) => 0.1 * d, verify = (d: number) => 1 + 0.02 * d;
  const before = simulate(p, 60, 0, draft, verify);
  assert.ok(before.slice(-20).filter((d) => d === 0).length >= 15, before.join(','));
  const later = simulate(p, 200, 0.9, draft, verify);
  assert.ok(later.slice(-20).filter((d) => d >= 4).length >= 15, later.slice(-20).join(','));
});

test('comparePolicies: interleaved runs, fresh policy per run, median and spread, lossless verdict, reports written', async () => {
  const cfg = fc.sample(tinyConfig(), { seed: 18, numRuns: 1 })[0];
  const tree = { topK: 2, maxDepth: 3, totalTokens: 6 };
  const p = await tinyPair(cfg, 18, tree);
  const dir = mkdtempSync(join(tmpdir(), 'eaglet-bench-'));
  try {
    const { target, drafter } = p.spec.generator.parts;
    const specs = ['static-2', 'threshold', 'goodput'];
    const lines: string[] = [];
    const made = new Map<string, number>();
    const policies = specs.map((s) => ({ label: s, create: () => (made.set(s, (made.get(s) ?? 0) + 1), createPolicy(s, { tree })) }));
    const c = await comparePolicies({
      target, drafter: drafter!, policies,
      prompts: [[1, 2, 3], [4, 5]], generation: { maxNewTokens: 10, stopAtEos: false }, repeats: 3, warmup: 1, onProgress: (l) => lines.push(l),
    });
    assert.equal(lines.length, 3 * 2 * 4);
    assert.ok(c.lossless);
    assert.equal(c.warmPolicies, false);
    // Fresh state: one policy per timed run plus the warm-up run.
    for (const s of specs) assert.equal(made.get(s), 3 * 2 + 1);
    assert.deepEqual(c.policies.map((m) => m.label), specs);
    assert.equal(c.ar.tau, 1);
    assert.equal(c.ar.draftPasses, 0);
    for (const m of [c.ar, ...c.policies]) {
      assert.equal(m.runs, 6);
      assert.equal(m.newTokens, 60);
      const t = m.tokensPerSecond;
      assert.ok(t.min > 0 && t.min <= t.q1 && t.q1 <= t.median && t.median <= t.q3 && t.q3 <= t.max);
      assert.equal(m.perPrompt.length, 2);
      assert.ok(m.speedupSpread.min <= m.speedupSpread.max && m.speedup > 0);
    }
    const files = writeComparison(c, join(dir, 'cmp'));
    assert.deepEqual(JSON.parse(readFileSync(files[0], 'utf8')).policies.length, 3);
    assert.match(readFileSync(files[1], 'utf8'), /\| goodput \|.*\| yes \|/);
    assert.match(readFileSync(files[1], 'utf8'), /fresh policy state every run/);
    assert.match(readFileSync(files[2], 'utf8'), /^<svg/);
    assert.equal(comparisonExitCode(c), 0);

    const warm = await comparePolicies({
      target, drafter: drafter!, policies, prompts: [[1, 2, 3]], generation: { maxNewTokens: 6 }, repeats: 2, warmup: 0, warmPolicies: true,
    });
    for (const s of specs) assert.equal(made.get(s), 3 * 2 + 1 + 1);
    assert.match(comparisonMarkdown(warm), /policies WARM/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await p.dispose();
  }
});

test('comparePolicies: a forced real mismatch is counted as one, not as a near-tie, and exits 1', async () => {
  const cfg = fc.sample(tinyConfig(), { seed: 19, numRuns: 1 })[0];
  const tree = { topK: 2, maxDepth: 3, totalTokens: 6 };
  const p = await tinyPair(cfg, 19, tree);
  try {
    const { target, drafter } = p.spec.generator.parts;
    // Tree passes of more than one token (speculative verification only) see token 0's logit
    // raised by 50: speculation emits 0 where plain decoding would not. The classifier
    // recomputes with unmasked passes. Greedy verification reads the in-graph argmax, so it is
    // recomputed from the corrupted logits.
    const real = target.forward.bind(target);
    target.forward = async (cache, tokens, positions, mask, opts) => {
      if (!(mask && tokens.length > 1)) return real(cache, tokens, positions, mask, opts);
      const out = await real(cache, tokens, positions, mask), V = cfg.vocabSize;
      for (let r = 0; r < tokens.length; r++) {
        out.logits[r * V] += 50;
        let best = 0;
        for (let i = 1; i < V; i++) if (out.logits[r * V + i] > out.logits[r * V + best]) best = i;
        out.argmax[r] = best;
      }
      return out;
    };
    const c = await comparePolicies({
      target, drafter: drafter!, policies: [{ label: 'static-2', create: () => createPolicy('static-2', { tree }) }],
      prompts: [[1, 2, 3]], generation: { maxNewTokens: 8, stopAtEos: false }, repeats: 2, warmup: 0,
    });
    assert.equal(c.policies[0].mismatches, 2);
    assert.equal(c.policies[0].nearTies, 0);
    assert.equal(c.policies[0].verdicts[0].specToken, 0);
    assert.equal(c.lossless, false);
    assert.equal(comparisonExitCode(c), 1);
    assert.match(comparisonMarkdown(c), /NOT LOSSLESS/);
  } finally {
    await p.dispose();
  }
});

test('SmartSpec: the step overhead fit recovers ms per pass and per request-pass from observed steps', () => {
  fc.assert(
    fc.property(fc.double({ min: 0, max: 0.5, noNaN: true }), fc.double({ min: 0, max: 0.1, noNaN: true }), fc.integer({ min: 0, max: 63 }), (a, b, shift) => {
      const o = new StepOverhead();
      for (let i = shift; i < shift + 400; i++) {
        const n = 1 + (i % 16), deepest = (i >> 4) % 4, passes = 1 + deepest, rp = n * passes;
        o.observeBatch(passes, rp, a * passes + b * rp);
      }
      assert.ok(Math.abs(o.a - a) < 0.02 && Math.abs(o.b - b) < 0.005, `fit a ${o.a} b ${o.b}, true ${a} ${b}`);
    }),
    { numRuns: 30 },
  );
});

test('SmartSpec plans 0 when speculation costs more per expected token, deeper when it pays, and counts catch-up rows', () => {
  // Passes cost 1 ms + 0.1 ms per token; drafts 0.2 ms + 0.01 ms per row (one request or spread alike).
  const cost = (base: number, per: number) => new StepCost([1, 64], [base + per, base + 64 * per], [base + per, base + 64 * per], 16);
  let step = 0;
  // A stopped clock: every step takes no time beyond its passes, so no overhead is learned (the
  // wall clock made this test depend on how busy the machine was).
  const planner = new SmartSpecPlanner(cost(1, 0.1), cost(0.2, 0.01), 3, 3, () => step, undefined, 0.9, () => 0);
  const ps = Array.from({ length: 4 }, () => planner.policy());
  const state = (position: number): RoundState => ({ position, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 });
  // Rounds as a request runs them: plan at its position, then the outcome at the planned depth.
  const positions = new Map<object, number>();
  /** Runs n steps; returns the depths planned, step by step. */
  const rounds = (members: typeof ps, accepted: (depth: number) => number, n: number) => {
    const depths: number[][] = [];
    for (let r = 0; r < n; r++) {
      step++;
      depths.push(members.map((p) => {
        const at = positions.get(p) ?? 10, depth = p.plan(state(at)).depth, acc = accepted(depth);
        p.observe({ depth, treeSize: depth, accepted: acc, draftMs: 0, verifyMs: 0 });
        positions.set(p, at + acc + 1);
        return depth;
      }));
    }
    return depths;
  };
  // Every draft accepted: speculation pays, the planner goes deep for every request.
  assert.deepEqual(rounds(ps, (d) => d, 20).slice(1), new Array(19).fill([3, 3, 3, 3]));
  // Nothing accepted: plain steps, but for a re-try now and then (the evidence fades).
  for (const p of ps) planner.leave(p);
  const q = Array.from({ length: 4 }, () => planner.policy());
  const plain = rounds(q, () => 0, 40).flat();
  assert.ok(plain.filter((d) => d === 0).length >= 0.75 * plain.length, `depths ${plain}`);
  for (const p of q) planner.leave(p);
  // The first draft level carries the rows committed since the request's last draft: the
  // whole prompt for a request that has not drafted yet, accepted + 1 after a drafted round.
  step++;
  const fresh = planner.policy(), other = planner.policy();
  const plainDepth = fresh.plan(state(40)).depth;
  if (plainDepth === 0) {
    assert.equal(fresh.catchUpRows, 40);
    fresh.observe({ depth: 0, treeSize: 0, accepted: 0, draftMs: 0, verifyMs: 0 });
    assert.equal(fresh.catchUpRows, 41);
  } else {
    assert.equal(fresh.catchUpRows, 1);
    fresh.observe({ depth: plainDepth, treeSize: plainDepth, accepted: 2, draftMs: 0, verifyMs: 0 });
    assert.equal(fresh.catchUpRows, 3);
  }
  // A request alone (no fused round here): verify 2 tokens, one draft level of its catch-up rows.
  const one = planner.stepCost([fresh], [1]);
  assert.ok(Math.abs(one.passMs - (planner.verify.ms(2, 1) + planner.draft.ms(fresh.catchUpRows, 1))) < 1e-9);
  assert.ok(fresh.catchUpRows > 1 && planner.draft.ms(fresh.catchUpRows, 1) > planner.draft.ms(1, 1));
  planner.leave(other);
});

test('SmartSpec speculates only when the plan beats no speculation by its margin', () => {
  // One request, depth at most 1; verify passes cost 1 ms whatever their tokens, a draft pass
  // `draftMs`: speculating gains expectedTokens(1) / (1 + draftMs) over 1 token per ms.
  const flat = (ms: number) => new StepCost([1, 64], [ms, ms], [ms, ms], 16);
  const plan = (gain: number, margin: number) => {
    let step = 0;
    const probe = new SmartSpecPlanner(flat(1), flat(0), 1, 1, () => step, undefined, 0.9, () => 0).policy();
    const draftMs = probe.acceptance.expectedTokens(1) / gain - 1;
    const planner = new SmartSpecPlanner(flat(1), flat(draftMs), 1, 1, () => step, undefined, 0.9, () => 0);
    planner.margin = margin;
    const p = planner.policy();
    step++;
    const depth = p.plan({ position: 1, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 1 }).depth;
    assert.ok(Math.abs(planner.goodput([p], [1]) / planner.goodput([p], [0]) - gain) < 1e-9);
    return depth;
  };
  assert.equal(plan(1.05, 0.1), 0, 'a 5% modelled gain is inside a 10% margin');
  assert.equal(plan(1.05, 0), 1, 'without a margin any gain speculates');
  assert.equal(plan(1.2, 0.1), 1, 'a 20% gain clears the margin');
  assert.equal(plan(0.9, 0), 0, 'a loss never speculates');
});

test('SmartSpec cost fit: non-decreasing, least squares (sums kept), measurements already in order unchanged', () => {
  const near = (got: number[], want: number[]) => assert.ok(got.length === want.length && got.every((x, i) => Math.abs(x - want[i]) < 1e-12), `${got} != ${want}`);
  near(nondecreasing([0.65, 0.52, 0.61]), [0.585, 0.585, 0.61]);
  near(nondecreasing([0.7, 0.4, 0.8, 0.9]), [0.55, 0.55, 0.8, 0.9]);
  fc.assert(
    fc.property(fc.array(fc.double({ min: 0, max: 10, noNaN: true }), { minLength: 1, maxLength: 12 }), (xs) => {
      const y = nondecreasing(xs);
      assert.equal(y.length, xs.length);
      for (let i = 1; i < y.length; i++) assert.ok(y[i] >= y[i - 1] - 1e-12, `${y}`);
      assert.ok(Math.abs(y.reduce((a, b) => a + b, 0) - xs.reduce((a, b) => a + b, 0)) < 1e-9);
      const sorted = [...xs].sort((a, b) => a - b);
      assert.deepEqual(nondecreasing(sorted), sorted);
    }),
  );
  // The start-up costs a planner reads are the fit's.
  near(new StepCost([1, 2, 4], [0.8, 0.6, 0.9], [0.8, 0.6, 0.9], 4).one, [0.7, 0.7, 0.9]);
});

test('SmartSpec prices a batched pass for its padding: calls of unequal length cost what the longest makes them', () => {
  // A pass costs 1 ms + 0.02 ms a packed token + 0.01 ms a padded row of attention ([n, m]);
  // measured as the start-up measures it: tokens spread evenly (packed = padded), and perToken.
  const c0 = 1, cN = 0.02, cP = 0.01, xs = [1, 2, 4, 8, 16, 32, 64];
  const even = xs.map((t) => c0 + (cN + cP) * t);
  const cost = new StepCost(xs, even, even, 16, cN), blind = new StepCost(xs, even, even, 16);
  const truth = (t: number, n: number, m: number) => c0 + cN * t + cP * n * m;
  // One request verifying 4 tokens among 15 verifying 1: 19 packed tokens, 16 x 4 padded rows.
  assert.ok(Math.abs(cost.ms(19, 16, 4) - truth(19, 16, 4)) < 1e-9, `${cost.ms(19, 16, 4)} against ${truth(19, 16, 4)}`);
  assert.ok(Math.abs(cost.ms(40, 16, 4) - truth(40, 16, 4)) < 1e-9);
  // Even calls, or no padding cost measured: as before.
  assert.ok(Math.abs(cost.ms(32, 16, 2) - truth(32, 16, 2)) < 1e-9);
  assert.equal(cost.ms(19, 16), blind.ms(19, 16));
  assert.equal(blind.ms(19, 16, 4), blind.ms(19, 16));
  assert.ok(blind.ms(19, 16, 4) < truth(19, 16, 4) - 0.4, 'without it the padding is missed');
  // A padded pass never costs less than the even spread's model.
  assert.ok(new StepCost(xs, even, even, 16, 1).ms(19, 16, 4) >= cost.ms(19, 16));
  // The planner prices a step where one of 16 requests speculates with it (verify and draft).
  const planner = new SmartSpecPlanner(cost, cost, 3, 3, () => 0, undefined, 0.9, () => 0), unpadded = new SmartSpecPlanner(blind, blind, 3, 3, () => 0, undefined, 0.9, () => 0);
  for (const pl of [planner, unpadded]) {
    const ms = Array.from({ length: 16 }, () => pl.policy());
    const k = ms.map((_, i) => (i === 0 ? 3 : 0));
    const c = pl.stepCost(ms, k);
    if (pl === planner) assert.ok(Math.abs(c.passMs - (truth(19, 16, 4) + 3 * truth(1, 1, 1))) < 1e-9, `${c.passMs}`);
    else assert.ok(c.passMs < truth(19, 16, 4) + 3 * truth(1, 1, 1) - 0.4);
  }
  // The first draft level: calls longer than splitRows run in a pass of their own.
  const split = new SmartSpecPlanner(cost, cost, 3, 3, () => 0, undefined, 0.9, () => 0);
  split.splitRows = 4;
  const a = split.policy(), b = split.policy();
  a.plan({ position: 30, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 0 });
  b.plan({ position: 2, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 0 });
  assert.equal(a.catchUpRows, 30);
  assert.equal(b.catchUpRows, 2);
  const both = split.stepCost([a, b], [1, 1]);
  assert.ok(Math.abs(both.passMs - (truth(4, 2, 2) + truth(30, 1, 30) + truth(2, 1, 2))) < 1e-9, `${both.passMs}`);
});

test('SmartSpec: a lone request runs a round first, then plans from the steps it saw, not the start-up round costs', () => {
  // Start-up said a fused round costs 1.1 ms (a busy moment) and a plain pass 0.3; steps really
  // take 0.3 ms plain and 0.6 ms for a round at any length. Every draft is accepted.
  const flat = (ms: number) => new StepCost([1, 64], [ms, ms], [ms, ms], 16);
  let step = 0, clock = 0;
  const planner = new SmartSpecPlanner(flat(0.3), flat(0.1), 3, 3, () => step, [0.3, 1.1, 1.1, 1.1], 0.9, () => clock);
  planner.margin = 0.1;
  const p = planner.policy();
  const depths: number[] = [];
  for (let r = 0; r < 12; r++) {
    step++;
    const depth = p.plan({ position: 10 + r, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 }).depth;
    clock += depth === 0 ? 0.3 : 0.6;
    p.observe({ depth, treeSize: depth, accepted: depth, draftMs: 0, verifyMs: 0 });
    depths.push(depth);
  }
  assert.deepEqual(depths, new Array(12).fill(3), `one round at full length first, then the deepest: ${depths}`);
  // Without what the steps showed, the start-up costs would have it plan plain steps.
  const blind = new SmartSpecPlanner(flat(0.3), flat(0.1), 3, 3, () => 1, [0.3, 1.1, 1.1, 1.1], 0.9, () => 0), b = blind.policy();
  assert.ok(blind.goodput([b], [3]) < blind.goodput([b], [0]) * (1 + blind.margin));
  // The start-up figures alone (no steps seen) price the round at 1.1 ms + the learned overhead.
  const unseen = new SmartSpecPlanner(flat(0.3), flat(0.1), 3, 3, () => 0, [0.3, 1.1, 1.1, 1.1], 0.9, () => 0);
  const c = unseen.stepCost([unseen.policy()], [3]);
  assert.equal(c.passMs + c.overheadMs, 1.1);
  assert.ok(Math.abs(planner.stepCost([p], [3]).passMs + planner.stepCost([p], [3]).overheadMs - 0.6) < 1e-9);
});

test('SmartSpec: a lone round whose head caught up on the prompt is not a sample of what rounds cost', () => {
  // Rounds cost 0.6 ms, plain steps 0.3; but a round whose head first reads a 40-row prompt costs
  // 3 ms. Learning that one round priced every later round at 3 ms: plain steps for good.
  const flat = (ms: number) => new StepCost([1, 64], [ms, ms], [ms, ms], 16);
  let step = 0, clock = 0;
  const planner = new SmartSpecPlanner(flat(0.3), flat(0.1), 3, 3, () => step, [0.3, 0.6, 0.6, 0.6], 0.9, () => clock);
  const p = planner.policy();
  const depths: number[] = [];
  let position = 40;
  for (let r = 0; r < 10; r++) {
    step++;
    const depth = p.plan({ position, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 }).depth;
    clock += depth === 0 ? 0.3 : r === 0 ? 3 : 0.6;
    p.observe({ depth, treeSize: depth, accepted: depth, draftMs: 0, verifyMs: 0 });
    position += depth + 1;
    depths.push(depth);
  }
  assert.deepEqual(depths, new Array(10).fill(3), `the prompt's catch-up round did not price later rounds: ${depths}`);
  const c = planner.stepCost([p], [3]);
  assert.ok(Math.abs(c.passMs + c.overheadMs - 0.6) < 1e-9, `a round is priced as the rounds after the first took: ${c.passMs + c.overheadMs}`);
});

/** A lone request's rounds against a clock: fused rounds cost `roundMs(i)` (i = the round's count), plain steps 0.3 ms; every draft accepted. Returns each step's depth. */
function loneDepths(steps: number, roundMs: (i: number) => number, clip?: number): number[] {
  const flat = (ms: number) => new StepCost([1, 64], [ms, ms], [ms, ms], 16);
  let step = 0, clock = 0, rounds = 0, position = 10;
  const planner = new SmartSpecPlanner(flat(0.3), flat(0.1), 3, 3, () => step, [0.3, 0.6, 0.6, 0.6], 0.9, () => clock);
  if (clip !== undefined) planner.aloneClip = clip;
  const p = planner.policy();
  const depths: number[] = [];
  for (let r = 0; r < steps; r++) {
    step++;
    const depth = p.plan({ position, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 }).depth;
    clock += depth === 0 ? 0.3 : roundMs(++rounds);
    p.observe({ depth, treeSize: depth, accepted: depth, draftMs: 0, verifyMs: 0 });
    position += depth + 1;
    depths.push(depth);
  }
  return depths;
}

test('SmartSpec: a slow moment during a lone request\'s fused rounds does not keep it plain for good', () => {
  // Rounds cost 0.6 ms and plain steps 0.3, except three rounds at 3 ms (a busy moment): with a
  // plain moving average (no clip: the clip alone keeps it at 3 here, next test) their estimate
  // prices rounds above plain steps, and plain steps never re-measure it.
  const depths = loneDepths(80, (i) => (i >= 3 && i <= 5 ? 3 : 0.6), Infinity);
  assert.ok(depths.slice(0, 8).includes(0), `the slow rounds made it plan plain steps: ${depths}`);
  assert.ok(depths.slice(40).every((d) => d === 3), `re-measured rounds brought it back to the deepest: ${depths}`);
});

test('SmartSpec: one slow lone round (a spike of the host) does not switch a request to plain steps', () => {
  // Round 3 takes 3 ms, every other 0.6: the clipped average moves by a fraction of the model.
  const spike = (i: number) => (i === 3 ? 3 : 0.6);
  assert.deepEqual(loneDepths(40, spike), new Array(40).fill(3));
  // Without the clip (a plain moving average) the one spike costs a run of plain steps.
  assert.ok(loneDepths(40, spike, Infinity).includes(0));
});


/** A seeded uniform [0, 1) stream (an LCG: plain and reproducible, for the planner properties). */
function lcg(seed: number): () => number {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
}

/** A random step-cost curve over 1..64 tokens (a fifth of them without a per-token padding price). */
function randomStepCost(rand: () => number, base: number, slope: number): StepCost {
  const xs = [1, 4, 16, 64];
  return new StepCost(xs, xs.map((x) => base + x * rand() * slope), xs.map((x) => base * 1.2 + x * rand() * slope), 16, rand() < 0.2 ? NaN : rand() * slope);
}

test('SmartSpec scores a raise from its running sums as goodput scores the whole plan', () => {
  fc.assert(
    fc.property(fc.integer({ min: 2, max: 16 }), fc.integer({ min: 0, max: 1e6 }), (n, seed) => {
      const rand = lcg(seed);
      // Random padding costs (NaN: none) and a random split of long catch-up calls, so the sums cover both.
      const curve = (base: number) => { const xs = [1, 4, 16, 64]; return new StepCost(xs, xs.map((x) => base + x * rand() * 0.05), xs.map((x) => base * 1.2 + x * rand() * 0.05), 16, rand() < 0.2 ? NaN : rand() * 0.05); };
      const planner = new SmartSpecPlanner(curve(1), curve(0.2), 3, 3, () => 0, undefined, 0.9, () => 0);
      planner.splitRows = rand() < 0.3 ? Infinity : 1 + Math.floor(rand() * 6);
      planner.overhead.a = rand() * 0.1;
      planner.overhead.b = rand() * 0.01;
      const ms = Array.from({ length: n }, () => planner.policy());
      for (const m of ms) {
        m.plan({ position: 1 + Math.floor(rand() * 40), lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 0 });
        for (let r = 0; r < 1 + Math.floor(rand() * 6); r++) {
          const depth = Math.floor(rand() * 4);
          m.observe({ depth, treeSize: depth, accepted: Math.floor(rand() * (depth + 1)), draftMs: 0, verifyMs: 0 });
        }
      }
      const k = ms.map(() => Math.floor(rand() * 4));
      const r = planner.raiser(ms, k);
      for (let i = 0; i < n; i++)
        for (let d = k[i]; d <= 3; d++) {
          const was = k[i];
          k[i] = d;
          const want = planner.goodput(ms, k);
          k[i] = was;
          assert.ok(Math.abs(r.score(i, d) - want) <= 1e-9 * want, `member ${i} at ${d}: ${r.score(i, d)} against ${want}`);
        }
    }),
    { numRuns: 50 },
  );
});

test('SmartSpec: the bound that skips the ascent when no raise can pay plans what the full ascent plans', () => {
  let speculated = 0, plain = 0;
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 0, max: 1e6 }), (n, seed) => {
      const rand = lcg(seed);
      const curve = (base: number, slope: number) => randomStepCost(rand, base, slope);
      const verify = curve(1, 0.05), draft = curve(rand() * 0.6, 0.02), a = rand() * 0.1, b = rand() * 0.01, split = rand() < 0.3 ? Infinity : 1 + Math.floor(rand() * 6);
      const histories = Array.from({ length: n }, () => ({ position: 1 + Math.floor(rand() * 200), rounds: Array.from({ length: Math.floor(rand() * 8) }, () => { const depth = Math.floor(rand() * 4); return { depth, accepted: Math.floor(rand() * (depth + 1)) }; }) }));
      const plan = (full: boolean) => {
        const planner = new SmartSpecPlanner(verify, draft, 3, 3, () => 1, undefined, 0.9, () => 0);
        // The full ascent: neither bound (anyRaisePays, nor planAllZero's perfectRaisePays) skips it.
        if (full) Object.assign(planner, { anyRaisePays: (): boolean => true, perfectRaisePays: (): boolean => true });
        planner.splitRows = split;
        planner.overhead.a = a;
        planner.overhead.b = b;
        const ms = histories.map((h) => {
          const p = planner.policy();
          p.started = true; // past its prefill: the first to plan plans every member
          for (const r of h.rounds) p.observe({ depth: r.depth, treeSize: r.depth, accepted: r.accepted, draftMs: 0, verifyMs: 0 });
          return p;
        });
        return ms.map((p, i) => p.plan({ position: histories[i].position, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 }).depth);
      };
      const quick = plan(false), full = plan(true);
      assert.deepEqual(quick, full);
      if (full.some((d) => d > 0)) speculated++;
      else plain++;
    }),
    { numRuns: 200 },
  );
  // Both outcomes drawn, so the bound is tested where it skips and where it must not.
  assert.ok(speculated > 10 && plain > 10, `speculated ${speculated}, plain ${plain}`);
});

test('SmartSpec: planAllZero (every draft accepted cannot pay) plans and times the step as the full ascent does', () => {
  let skipped = 0, speculated = 0;
  fc.assert(
    fc.property(fc.integer({ min: 2, max: 16 }), fc.integer({ min: 0, max: 1e6 }), (n, seed) => {
      const rand = lcg(seed);
      const curve = (base: number, slope: number) => randomStepCost(rand, base, slope);
      const verify = curve(1, 0.05), draft = curve(rand() * 0.6, 0.02), a = rand() * 0.1, b = rand() * 0.01, scale = [0.5 + rand(), 0.5 + rand()];
      // Half the members accepted every draft so far (expected tokens 1 + d: the bound is tight)
      // and carry one catch-up row (the bound's cheapest first level), so a wrong bound shows.
      const histories = Array.from({ length: n }, () => {
        const perfect = rand() < 0.5;
        return { position: rand() < 0.5 ? 1 : 1 + Math.floor(rand() * 200), rounds: Array.from({ length: Math.floor(rand() * 8) }, () => { const depth = Math.floor(rand() * 4); return { depth, accepted: perfect ? depth : Math.floor(rand() * (depth + 1)) }; }) };
      });
      let fired = false;
      const plan = (shortcut: boolean) => {
        const planner = new SmartSpecPlanner(verify, draft, 3, 3, () => 1, undefined, 0.9, () => 0);
        const internals = planner as unknown as { planAllZero(): boolean; timing: object };
        // Only planAllZero may skip the ascent (anyRaisePays never does); without it, neither.
        const always = (): boolean => true;
        Object.assign(planner, shortcut ? { anyRaisePays: always } : { anyRaisePays: always, perfectRaisePays: always });
        if (shortcut) {
          const own = internals.planAllZero.bind(planner);
          internals.planAllZero = () => (fired = own());
        }
        planner.overhead.a = a;
        planner.overhead.b = b;
        planner.passScale.set(scale);
        planner.deferSteps = 1; // every step learned from as it ends, as the ascent's steps are
        const ms = histories.map((h) => {
          const p = planner.policy();
          p.started = true;
          for (const r of h.rounds) p.observe({ depth: r.depth, treeSize: r.depth, accepted: r.accepted, draftMs: 0, verifyMs: 0 });
          return p;
        });
        const depths = ms.map((p, i) => p.plan({ position: histories[i].position, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 }).depth);
        const { allZero: _, ...timing } = internals.timing as { allZero: boolean }; // which planner timed it
        return { depths, timing };
      };
      const quick = plan(true), full = plan(false);
      assert.deepEqual(quick, full);
      if (fired) skipped++;
      if (full.depths.some((d) => d > 0)) speculated++;
    }),
    { numRuns: 300 },
  );
  // Both outcomes drawn: steps it skips, and steps where the ascent speculates (the bound must not skip those).
  assert.ok(skipped > 20 && speculated > 20, `skipped ${skipped}, speculated ${speculated}`);
});

test('SmartSpec: over many steps with requests joining, planning late and leaving, the shortcuts plan and learn what the full ascent does', () => {
  let fired = 0, speculated = 0;
  fc.assert(
    fc.property(fc.integer({ min: 2, max: 16 }), fc.integer({ min: 0, max: 1e6 }), (n, seed) => {
      let s = seed; // reset below: both runs draw the same numbers
      const rand = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      const curve = (base: number, slope: number) => randomStepCost(rand, base, slope);
      const verify = curve(1, 0.05), draft = curve(rand() * 0.4, 0.02), split = rand() < 0.3 ? Infinity : 1 + Math.floor(rand() * 6);
      // The script: when each request joins and leaves, how many of its drafts each round would accept, the order members act in a step.
      const STEPS = 24;
      const reqs = Array.from({ length: n }, () => {
        const join = Math.floor(rand() * 8), perfect = rand() < 0.5;
        return { join, leave: join + 2 + Math.floor(rand() * STEPS), accepts: Array.from({ length: STEPS + 1 }, () => (perfect ? 3 : Math.floor(rand() * 4))) };
      });
      const orders = Array.from({ length: STEPS }, () => reqs.map((_, i) => [i, rand()] as const).sort((a, b) => a[1] - b[1]).map(([i]) => i));
      const run = (shortcut: boolean) => {
        let step = 0;
        const planner = new SmartSpecPlanner(verify, draft, 3, 3, () => step, undefined, 0.9, () => step * 1.9);
        planner.splitRows = split;
        planner.deferSteps = 1; // every step learned from as it ends, as the ascent's steps are (deferred learning: test/smartspec-all-zero.test.ts)
        planner.laneTimes = [{ get ms() { return step * 1.6; } }, { get ms() { return step * 0.2; } }];
        const internals = planner as unknown as { planAllZero(): boolean; timing: object };
        if (shortcut) {
          const own = internals.planAllZero.bind(planner);
          internals.planAllZero = () => (own() ? (fired++, true) : false);
        } else {
          // The full ascent over the started members, keeping the rule the ascent does not see:
          // where no raise could pay in a batch of every member (prefilling ones included), every
          // started one plans 0 (planAllZero's bound over more members than have started).
          const bound = (planner as unknown as { perfectRaisePays(n: number, best: number): boolean }).perfectRaisePays.bind(planner);
          const started = () => [...live.values()].filter((m) => m.p.started).length;
          Object.assign(planner, { anyRaisePays: (): boolean => true, perfectRaisePays: (n: number, best: number): boolean => (n > started() ? bound(n, best) : true) });
        }
        const live = new Map<number, { p: ReturnType<SmartSpecPlanner['policy']>; position: number; last?: number }>();
        const log: unknown[] = [];
        for (step = 0; step < STEPS; step++) {
          for (const [i, r] of reqs.entries()) if (r.join === step) live.set(i, { p: planner.policy(), position: 10 + i });
          // In a step each member in turn: observes its last round, then leaves or plans (a member
          // that joined this step prefills: it plans from the next step on, or later this one).
          for (const i of orders[step]) {
            const m = live.get(i);
            if (!m) continue;
            if (m.last !== undefined) {
              const accepted = Math.min(m.last, reqs[i].accepts[step]);
              m.p.observe({ depth: m.last, treeSize: m.last, accepted, draftMs: 0, verifyMs: 0 });
              m.position += accepted + 1;
            }
            if (reqs[i].leave <= step) {
              m.p.leave();
              live.delete(i);
              continue;
            }
            if (reqs[i].join === step && rand() < 0.5) continue; // still prefilling this step
            m.last = m.p.plan({ position: m.position, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 }).depth;
            log.push([step, i, m.last]);
          }
          const { allZero: _, ...timing } = internals.timing as { allZero: boolean }; // which planner timed it
          log.push(timing);
        }
        log.push(planner.overhead.a, planner.overhead.b, [...planner.passScale]);
        return log;
      };
      const r0 = s;
      const quick = run(true);
      s = r0; // the same draws for the full ascent's run
      const full = run(false);
      assert.deepEqual(quick, full);
      if (full.some((x) => Array.isArray(x) && x.length === 3 && typeof x[2] === 'number' && x[2] > 0)) speculated++;
    }),
    { numRuns: 100 },
  );
  assert.ok(fired > 100 && speculated > 10, `planAllZero fired ${fired}, runs that speculated ${speculated}`);
});

test('SmartSpec: a lone request\'s shortcut (planAlone) plans what the general ascent plans for one request', () => {
  let speculated = 0, plain = 0;
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 1e6 }), (seed) => {
      const rand = lcg(seed);
      const curve = (base: number, slope: number) => { const xs = [1, 4, 16, 64]; return new StepCost(xs, xs.map((x) => base + x * rand() * slope), xs.map((x) => base * 1.2 + x * rand() * slope), 16); };
      // Random start-up models: the batch passes, and a lone step at each length (any order: the
      // start-up medians need not rise with the length), a random margin and learned overhead.
      // The lone model may stop short of D (serving's fused round is min(maxDepth, totalTokens)
      // deep): deeper lengths are priced at its last entry.
      const verify = curve(0.2 + rand(), 0.05), draft = curve(rand() * 0.6, 0.02), D = 1 + Math.floor(rand() * 4);
      // Half the runs: one figure for every length k >= 1, as serving's fused round is priced.
      const flat = rand() < 0.5, one = 0.3 + 2 * rand();
      const alone = Array.from({ length: 2 + Math.floor(rand() * D) }, (_, d) => (d === 0 ? 0.2 + rand() : flat ? one : 0.3 + 2 * rand()));
      const margin = rand() * 0.3, a = rand() * 0.1, b = rand() * 0.01;
      let step = 0, clock = 0;
      const make = (general: boolean) => {
        const planner = new SmartSpecPlanner(verify, draft, D, D, () => step, alone, 0.9, () => clock);
        const internals = planner as unknown as { planAlone(m: unknown): void; ascend(ms: unknown[], fixed: boolean[], k: number[]): void; anyRaisePays(): boolean };
        // The general path for one request: the ascent from 0 (anyRaisePays prices batch passes, not a lone step, so it is bypassed).
        if (general) (internals.planAlone = (m) => internals.ascend([m], [false], [0])), (internals.anyRaisePays = () => true);
        planner.margin = margin;
        planner.overhead.a = a;
        planner.overhead.b = b;
        return { planner, p: planner.policy() };
      };
      const quick = make(false), full = make(true);
      let position = 1 + Math.floor(rand() * 100);
      // Rounds with random outcomes and step times (the same for both), so the acceptance
      // estimate and the learned lone-step overheads vary as they would in serving.
      for (let r = 0; r < 24; r++) {
        step++;
        const state = { position, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: D };
        const dq = quick.p.plan(state).depth, df = full.p.plan(state).depth;
        assert.equal(dq, df, `round ${r}: planAlone ${dq}, the ascent ${df}`);
        if (dq > 0) speculated++;
        else plain++;
        clock += alone[Math.min(dq, alone.length - 1)] * (0.5 + 1.5 * rand());
        const accepted = Math.floor(rand() * (dq + 1));
        for (const x of [quick, full]) x.p.observe({ depth: dq, treeSize: dq, accepted, draftMs: 0, verifyMs: 0 });
        position += accepted + 1;
      }
    }),
    { numRuns: 100 },
  );
  // Both outcomes drawn, so the choice is tested where it speculates and where it plans plain steps.
  assert.ok(speculated > 100 && plain > 100, `speculated ${speculated}, plain ${plain}`);
});

test('SmartSpec: the lanes\' pass times scale the start-up model per lane, and the overhead learned is the step beyond its passes', () => {
  // Start-up said a verify pass costs 1 ms and a draft pass 0.1 ms; in serving, verify passes
  // take 0.5 ms and draft passes 1 ms, and each step 0.05 ms of JS beside them. Every draft is
  // accepted: at the start-up prices two requests drafting 3 gain (8 tokens in 1.3 ms against 2
  // in 1); at the real ones they lose (8 in 3.55 against 2 in 0.55).
  const flat = (ms: number) => new StepCost([1, 64], [ms, ms], [ms, ms], 16);
  const run = (timed: boolean) => {
    let step = 0, clock = 0;
    const lanes: [{ ms: number }, { ms: number }] = [{ ms: 0 }, { ms: 0 }];
    const planner = new SmartSpecPlanner(flat(1), flat(0.1), 3, 3, () => step, undefined, 0.9, () => clock);
    if (timed) planner.laneTimes = lanes;
    const ps = [planner.policy(), planner.policy()];
    const depths: number[] = [];
    let position = 10;
    for (let r = 0; r < 200; r++) {
      step++;
      const ks = ps.map((p) => p.plan({ position, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 }).depth);
      const levels = Math.max(...ks);
      lanes[0].ms += 0.5;
      lanes[1].ms += levels;
      clock += 0.5 + levels + 0.05;
      ps.forEach((p, i) => p.observe({ depth: ks[i], treeSize: ks[i], accepted: ks[i], draftMs: 0, verifyMs: 0 }));
      position += 1;
      depths.push(...ks);
    }
    return { planner, late: depths.slice(200) };
  };
  const timed = run(true), blind = run(false);
  assert.ok(timed.late.filter((d) => d === 0).length >= 0.9 * timed.late.length, `timed by its lanes, it plans plain steps: ${timed.late}`);
  assert.ok(Math.abs(timed.planner.passScale[0] - 0.5) < 0.02, `verify scale ${timed.planner.passScale[0]}`);
  const o = timed.planner.overhead;
  // (the fit's weak pull toward 0 keeps it a little under the 0.05 ms it samples)
  assert.ok(o.batchMs(1, 2) > 0.03 && o.batchMs(1, 2) <= 0.05 + 1e-9, `overhead of a plain step ${o.batchMs(1, 2)}`);
  // Without the lanes' times the start-up prices stand (and the overhead fit cannot go below 0).
  assert.ok(blind.late.filter((d) => d > 0).length >= 0.5 * blind.late.length, `blind, it speculates: ${blind.late}`);
  assert.deepEqual([...blind.planner.passScale], [1, 1, 1]);
});

test('SmartSpec: a request still prefilling is in no plan, and a step beside its prefill is not a sample of what steps cost', () => {
  // Steps cost their passes (1 ms), but a step beside a prefill takes 5 ms more (the prompt's pass).
  const flat = (ms: number) => new StepCost([1, 64], [ms, ms], [ms, ms], 16);
  let step = 0, clock = 0;
  const planner = new SmartSpecPlanner(flat(1), flat(0.1), 3, 3, () => step, undefined, 0.9, () => clock);
  const a = planner.policy(), b = planner.policy();
  const state = { position: 10, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 };
  for (let r = 0; r < 30; r++) {
    step++;
    const d = a.plan(state).depth; // b joined but has not planned: it is prefilling
    clock += 1 + (d > 0 ? d * 0.1 : 0) + 5;
    a.observe({ depth: d, treeSize: d, accepted: d, draftMs: 0, verifyMs: 0 });
  }
  assert.equal(planner.overhead.batchMs(4, 4), 0, 'the prefill steps taught it no overhead');
  assert.equal(b.started, false);
});

test('SmartSpec: one started request beside a prefilling one is priced as the batched step it runs, not as a lone fused round', () => {
  const flat = (ms: number) => new StepCost([1, 64], [ms, ms], [ms, ms], 8);
  const state = { position: 20, lastFeature: new Float32Array(4), rootToken: 0, maxDepth: 3 } as unknown as RoundState;
  const plan = (withPrefilling: boolean) => {
    // The lone fused round costs 3 ms at any depth; a batched verify 1 ms, a batched draft level 0.05 ms.
    const p = new SmartSpecPlanner(flat(1), flat(0.05), 3, 3, () => 0, [1, 3, 3, 3], 0.9, () => 0);
    const a = p.policy();
    for (let i = 0; i < 50; i++) a.observe({ depth: 3, treeSize: 3, accepted: 2, draftMs: 0, verifyMs: 0 } as unknown as RoundOutcome);
    if (withPrefilling) p.policy(); // joined, has not planned yet: prefilling
    a.plan(state);
    return { cost: p.stepCost([a], [3]), plainRun: (p as unknown as { plainRun: number }).plainRun };
  };
  const alone = plan(false), beside = plan(true);
  assert.deepEqual([alone.cost.passMs, alone.cost.passes], [3, 1]); // the fused round's model
  assert.equal(beside.cost.passes, 4); // verify + three draft levels: the batch model
  assert.ok(Math.abs(beside.cost.passMs - 1.15) < 1e-9, `${beside.cost.passMs}`);
  assert.equal(beside.plainRun, 0); // the lone request's explore counter does not move
});
