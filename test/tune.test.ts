/**
 * `eaglet tune`: sub-shape acceptance from one full tree equals building each shape's tree;
 * tuning files apply only where they were measured; the command writes a usable file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { addSubtreeAcceptance, TreeBuilder, type VerifyTree } from '../trees/index.ts';
import { loadGenerator } from '../src/api.ts';
import { COMMANDS } from '../src/cli/commands.ts';
import { spawnSync } from 'node:child_process';
import { saveDraftHead } from '../src/io/draft-head-io.ts';
import { saveHfCheckpoint } from '../src/io/hf.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { costAwareDepth, depthCosts, machineInfo, readTuning, scoreShapes, tuningMismatch, type TuningFile } from '../src/tune/tuning.ts';
import type { Measurements } from '../src/tune/measure.ts';
import { EagleDrafter } from '../src/generate/eagle-drafter.ts';
import { RoundDrafter } from '../src/generate/round-drafter.ts';

/** Greedy accepted drafted tokens of `tree` against `next`. */
function accepted(tree: VerifyTree, next: number[]): number {
  let node = 0, a = 0;
  for (;;) {
    let c = tree.firstChild[node];
    while (c >= 0 && tree.tokens[c] !== next[a]) c = tree.nextSibling[c];
    if (c < 0 || a >= next.length) return a;
    node = c;
    a++;
  }
}

/** Drafts `depth` levels into `b` from per-level random top-k rows (the same rows whatever the shape). */
function grow(b: TreeBuilder, rows: { ids: number[]; lps: number[] }[], depth: number): void {
  b.reset(99);
  for (let t = 0; t < depth; t++) {
    const F = b.frontier.count, k = b.topK;
    b.expand(rows[t].ids.slice(0, F * k), rows[t].lps.slice(0, F * k));
  }
}

test('acceptance of every (depth, size) from one fully kept tree == building that shape', () => {
  const V = 5;
  const arb = fc.record({ k: fc.integer({ min: 1, max: 3 }), D: fc.integer({ min: 1, max: 4 }), seed: fc.integer() }).chain(({ k, D }) =>
    fc.record({
      k: fc.constant(k), D: fc.constant(D),
      // Per level, k rows of k distinct tokens; log-probs on a coarse grid so ties happen.
      rows: fc.array(fc.array(fc.tuple(fc.shuffledSubarray([0, 1, 2, 3, 4], { minLength: k, maxLength: k }), fc.array(fc.integer({ min: -4, max: 0 }), { minLength: k, maxLength: k })), { minLength: k, maxLength: k }), { minLength: D, maxLength: D }),
      next: fc.array(fc.integer({ min: 0, max: V - 1 }), { minLength: D, maxLength: D + 1 }),
    }));
  fc.assert(fc.property(arb, ({ k, D, rows, next }) => {
    const levels = rows.map((r) => ({ ids: r.flatMap(([ids]) => ids), lps: r.flatMap(([, lps]) => lps.map((x) => x / 2)) }));
    const C = k + (D - 1) * k * k, maxTokens = C;
    const full = new TreeBuilder({ topK: k, maxDepth: D, totalTokens: C });
    grow(full, levels, D);
    const tree = full.finish(C);
    const sums = new Float64Array((D + 1) * (maxTokens + 1));
    const path = addSubtreeAcceptance(tree, full.candidateValues, next, D, maxTokens, sums);
    assert.equal(path.length, accepted(tree, next));
    for (let d = 1; d <= D; d++) {
      for (let n = 1; n <= maxTokens; n++) {
        const b = new TreeBuilder({ topK: k, maxDepth: d, totalTokens: n });
        grow(b, levels, d);
        assert.equal(sums[d * (maxTokens + 1) + n], accepted(b.finish(n), next), `depth ${d} size ${n}`);
      }
    }
  }), { numRuns: 300, seed: 4 });
});

const tuning = (over: Partial<TuningFile> = {}): TuningFile => ({
  format: 'eaglet-tuning', version: 1, created: '', machine: machineInfo(), threads: 1,
  source: { model: '', draft: '', prompts: '', tokens: 0 }, tree: { topK: 2, maxDepth: 3, totalTokens: 5 }, policy: 'static',
  predicted: { topK: 2, depth: 3, totalTokens: 5, accepted: 1, tau: 2, roundMs: 1, speedup: 1 }, policyRuns: [], plainTokensPerSecond: 1, byDepth: [],
  measured: { verifyMs: [], verifyContext: 0, acceptance: [], tokens: 0 }, ...over,
});

test('a tuning file applies on its machine and thread count, and is reported (not applied) elsewhere', async (t) => {
  assert.equal(tuningMismatch(tuning(), 1), null);
  assert.match(tuningMismatch(tuning(), 2)!, /1 threads, running with 2/);
  assert.match(tuningMismatch(tuning({ machine: { ...machineInfo(), cpu: 'Other CPU' } }), 1)!, /another machine \(Other CPU/);
  const q4w = { target: 'q4', draft: 'q4', targetBlock: 128, draftBlock: 128 } as const;
  assert.equal(tuningMismatch(tuning({ weights: q4w }), 1, machineInfo(), q4w), null);
  assert.match(tuningMismatch(tuning({ weights: q4w }), 1)!, /measured with target q4 \(blocks of 128\), head q4 \(blocks of 128\); running with target fp32, head fp32/);
  assert.match(tuningMismatch(tuning(), 1, machineInfo(), { target: 'fp32', draft: 'q8', draftBlock: 128 })!, /running with target fp32, head q8 \(blocks of 128\)/);
  // The quantization's block size counts too (a block-32 q4 tuning does not describe block-128 q4),
  // and a file from before block sizes were recorded applies to no quantized load.
  assert.match(tuningMismatch(tuning({ weights: { ...q4w, targetBlock: 32 } }), 1, machineInfo(), q4w)!, /target q4 \(blocks of 32\), .*; running with target q4 \(blocks of 128\)/);
  assert.match(tuningMismatch(tuning({ weights: { target: 'q4', draft: 'fp32' } }), 1, machineInfo(), { target: 'q4', draft: 'fp32', targetBlock: 128 })!, /target q4 \(block size not recorded\)/);
  assert.equal(tuningMismatch(tuning({ weights: { target: 'fp32', draft: 'fp32' } }), 1), null, 'fp32 needs no block size');
  // Rounds priced on ORT's MatMulNBits do not describe eaglet's own kernel, nor the other way round.
  assert.match(tuningMismatch(tuning({ weights: q4w }), 1, machineInfo(), { ...q4w, kernel: 'native' })!, /measured with target q4 \(blocks of 128\), head q4 \(blocks of 128\); running with .* on eaglet's own kernel/);
  assert.match(tuningMismatch(tuning({ weights: { ...q4w, kernel: 'native' } }), 1, machineInfo(), q4w)!, /on eaglet's own kernel \(--native-matmul\); running with target q4 \(blocks of 128\), head q4 \(blocks of 128\)$/);
  assert.equal(tuningMismatch(tuning({ weights: { ...q4w, kernel: 'native' } }), 1, machineInfo(), { ...q4w, kernel: 'native' }), null);

  const dir = mkdtempSync(join(tmpdir(), 'eaglet-tuning-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = makeConfig({ vocabSize: 32, dim: 16, nLayers: 1, nHeads: 2, maxSeqLen: 64 });
  const model = { config: cfg, weights: randomWeights(cfg, 1, 3), source: 'hf' as const };
  saveDraftHead(join(dir, 'head'), { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, 2) });
  writeFileSync(join(dir, 'head', 'tuning.json'), JSON.stringify(tuning({ policy: 'threshold' })));
  const here = await loadGenerator({ model, draft: join(dir, 'head'), threads: 1 });
  assert.deepEqual(here.generator.parts.drafter!.shape, { topK: 2, maxDepth: 3, totalTokens: 5 });
  assert.equal(here.generator.policy.name, 'threshold');
  assert.match(here.notes[0], /using .*tuning.json: top-k 2, depth 3, 5 tokens, policy threshold/);
  await here.dispose();
  const flags = await loadGenerator({ model, draft: join(dir, 'head'), threads: 1, tree: { maxDepth: 2 } });
  assert.deepEqual(flags.generator.parts.drafter!.shape, { topK: 2, maxDepth: 2, totalTokens: 5 }, 'options override the file');
  await flags.dispose();
  const other = await loadGenerator({ model, draft: join(dir, 'head'), threads: 2 });
  assert.match(other.notes[0], /not applied: measured with 1 threads, running with 2/);
  assert.notDeepEqual(other.generator.parts.drafter!.shape, { topK: 2, maxDepth: 3, totalTokens: 5 });
  await other.dispose();
  // Costs measured with fp32 weights do not describe a 4-bit head (or target): reported, not applied.
  const q4 = await loadGenerator({ model, draft: join(dir, 'head'), threads: 1, draftQuant: 'q4' });
  assert.match(q4.notes[0], /not applied: measured with target fp32, head fp32; running with target fp32, head q4 \(blocks of 128\)/);
  assert.notDeepEqual(q4.generator.parts.drafter!.shape, { topK: 2, maxDepth: 3, totalTokens: 5 });
  await q4.dispose();
  // This target's widths (16, 48) take q4 blocks of 16 (the largest power of two dividing them, up to 128); a quantized target's head defaults to 8 bits.
  const q4here = { target: 'q4', draft: 'q8', targetBlock: 16, draftBlock: 128 } as const;
  writeFileSync(join(dir, 'head', 'tuning.json'), JSON.stringify(tuning({ policy: 'threshold', weights: q4here })));
  const both = await loadGenerator({ model, draft: join(dir, 'head'), threads: 1, quantize: 'q4' });
  assert.deepEqual(both.generator.parts.drafter!.shape, { topK: 2, maxDepth: 3, totalTokens: 5 }, 'a q4-target tuning applies to a q4 run');
  // Read before the target's Linear weights are released (eaglet tune records it without keepWeights).
  assert.deepEqual(both.weightFormats, q4here);
  await both.dispose();
  // An older q4 file (no block sizes): one line says why it is not applied.
  // The same bits as this load, so only the missing block sizes keep it from applying.
  writeFileSync(join(dir, 'head', 'tuning.json'), JSON.stringify(tuning({ policy: 'threshold', weights: { target: 'q4', draft: 'q8' } })));
  const old = await loadGenerator({ model, draft: join(dir, 'head'), threads: 1, quantize: 'q4' });
  assert.match(old.notes[0], /not applied: measured with target q4 \(block size not recorded\), head q8 \(block size not recorded\); running with target q4 \(blocks of 16\), head q8 \(blocks of 128\)/);
  assert.notDeepEqual(old.generator.parts.drafter!.shape, { topK: 2, maxDepth: 3, totalTokens: 5 });
  await old.dispose();
});

/** A random target + head + two prompts in a temporary directory, and `eaglet tune` over them with `flags` (short settings, 1 thread). */
function tuneRandomPair(ctx: { after(fn: () => void): void }, flags: string[]) {
  const out = runTune(ctx, flags, '[1,2,3]\n[4,5,6,7]\n');
  assert.equal(out.r.status, 0, out.r.stderr);
  return out;
}

/** `eaglet tune` over a random pair (context 64) and `prompts` (a JSONL file's text). */
function runTune(ctx: { after(fn: () => void): void }, flags: string[], prompts: string) {
  const dir = mkdtempSync(join(tmpdir(), 'eaglet-tune-'));
  ctx.after(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = makeConfig({ vocabSize: 24, dim: 16, nLayers: 2, nHeads: 2, maxSeqLen: 64 });
  saveHfCheckpoint(join(dir, 'model'), cfg, randomWeights(cfg, 5, 3));
  saveDraftHead(join(dir, 'head'), { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, 6) });
  writeFileSync(join(dir, 'prompts.jsonl'), prompts);
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'tune', '--model', join(dir, 'model'), '--draft', join(dir, 'head'), '--prompts', join(dir, 'prompts.jsonl'),
    '--max-new-tokens', '12', '--repeats', '1', '--threads', '1', '--policies', 'static', ...flags], { encoding: 'utf8' });
  return { dir, r };
}

test("a tree that cannot reach its depth: the error names where each value came from (flag, tuning file); a file's own bad tree names the file", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'eaglet-tuning-src-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = makeConfig({ vocabSize: 32, dim: 16, nLayers: 1, nHeads: 2, maxSeqLen: 64 });
  saveHfCheckpoint(join(dir, 'model'), cfg, randomWeights(cfg, 1, 3));
  const head = join(dir, 'head'), file = join(head, 'tuning.json');
  saveDraftHead(head, { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, 2) });
  const generate = async (tree: TuningFile['tree'], ...flags: string[]): Promise<string> => {
    writeFileSync(file, JSON.stringify(tuning({ tree })));
    const stderr = process.stderr.write;
    process.stderr.write = (() => true) as typeof process.stderr.write; // the "using tuning.json" note
    try {
      await COMMANDS.generate.run(['--model', join(dir, 'model'), '--draft', head, '--threads', '1', '--prompt-ids', '1', '--max-new-tokens', '2', '--json', ...flags]);
      return '';
    } catch (e) {
      return (e as Error).message;
    } finally {
      process.stderr.write = stderr;
    }
  };
  const at = file.replace(/[.\\/]/g, '\\$&');
  // The depth from the file, the tokens from the flag (this named --depth, which was not given).
  assert.match(await generate({ topK: 1, maxDepth: 3, totalTokens: 3 }, '--total-tokens', '2'), new RegExp(`^--total-tokens: 2 tokens cannot reach depth 3 \\(${at}\\): `));
  // The tokens from the file, the depth from the flag.
  assert.match(await generate({ topK: 1, maxDepth: 3, totalTokens: 3 }, '--depth', '5'), new RegExp(`^--total-tokens \\(${at}\\): 3 tokens cannot reach depth 5 \\(--depth\\): `));
  // A file whose own tree cannot be reached, or is out of range, is a bad file (eaglet tune writes neither).
  assert.match(await generate({ topK: 1, maxDepth: 3, totalTokens: 2 }), new RegExp(`^${at}: tree.totalTokens: 2 tokens cannot reach depth 3 \\(tree.maxDepth\\)`));
  assert.match(await generate({ topK: 1, maxDepth: 40, totalTokens: 40 }), new RegExp(`^${at}: tree.maxDepth: must be an integer in \\[1, 32\\], got 40`));
});

test('eaglet tune with fused chains only and no room for a fused round: one line naming the cause, not a TypeError', (ctx) => {
  const full = JSON.stringify(Array.from({ length: 63 }, (_, i) => 1 + (i % 20)));
  const { r } = runTune(ctx, ['--max-top-k', '1', '--max-depth', '2', '--max-tokens', '2', '--fused-round'], `${full}\n${full}\n`);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /--prompts: no prompt leaves room for a full fused round \(every one is too close to the 64-token context limit\)/);
  assert.doesNotMatch(r.stderr, /TypeError/);
});

test('eaglet tune writes a tuning file that loads and names a measured shape and policy', (ctx) => {
  const { dir, r } = tuneRandomPair(ctx, ['--max-top-k', '2', '--max-depth', '3', '--max-tokens', '6', '--draft-quant', 'q8']);
  assert.match(r.stdout, /chosen: tree \dx\dx\d, policy static/);
  const t = readTuning(join(dir, 'head'))!;
  assert.equal(t.threads, 1);
  assert.deepEqual(t.weights, { target: 'fp32', draft: 'q8', draftBlock: 128 }, 'the file names the weights its costs were measured with');
  assert.ok(t.tree.topK <= 2 && t.tree.maxDepth <= 3 && t.tree.totalTokens <= 6);
  assert.ok(['static', 'static-0'].includes(t.policy));
  assert.equal(t.measured.verifyMs.length, 8);
  assert.equal(t.measured.acceptance.length, 2);
  assert.ok(t.predicted.speedup > 0 && t.policyRuns.length === 1);
  assert.ok(JSON.parse(readFileSync(join(dir, 'head', 'tuning.json'), 'utf8')).byDepth.length === 6);
});

test('cost-aware LDLP labels: the depth with the most tokens per ms, never deeper than accepted', () => {
  fc.assert(fc.property(fc.array(fc.double({ min: 0.1, max: 10, noNaN: true }), { minLength: 2, maxLength: 9 }), fc.integer({ min: 0, max: 8 }), (ms, a) => {
    const t = costAwareDepth(a, ms);
    const rate = (d: number) => (1 + Math.min(a, d)) / ms[d];
    for (let d = 0; d < ms.length; d++) assert.ok(rate(t) >= rate(d), `depth ${t} beats ${d}`);
    if (t > a) assert.ok(ms[t] < ms[a], 'deeper than accepted only when that is cheaper');
  }), { numRuns: 300, seed: 5 });
  // Free drafting: draft what will be accepted. Drafting dearer than a plain step per token: never.
  assert.equal(costAwareDepth(3, [1, 1, 1, 1, 1, 1]), 3);
  assert.equal(costAwareDepth(3, [1, 2.5, 4, 5.5]), 0);
  const t = tuning({ byDepth: [1, 2, 3].map((depth) => ({ topK: 2, depth, totalTokens: depth, accepted: 0, tau: 1, roundMs: depth + 1, speedup: 1 })),
    measured: { verifyMs: [0, 1.5], verifyContext: 0, acceptance: [], tokens: 0 } });
  assert.deepEqual(depthCosts(t), [1.5, 2, 3, 4]);
  // A tuned fused chain runs one graph of the tuned depth (2 here), drafting both levels whatever
  // the plan: depth 1 costs that graph's round, not the depth-1 graph's; no depth past 2.
  const chain = [1, 2, 3].map((depth) => ({ topK: 1, depth, totalTokens: depth, accepted: 0, tau: 1, roundMs: depth + 1, speedup: 1, fused: true }));
  const f = tuning({ tree: { topK: 1, maxDepth: 2, totalTokens: 2 }, fusedRound: true, byDepth: chain, measured: { verifyMs: [0, 1.5], verifyContext: 0, acceptance: [], tokens: 0 } });
  assert.deepEqual(depthCosts(f), [1.5, 3, 3]);
});

test('with fused round figures a chain is priced as its one-call round (as generate runs it) in plain steps timed beside it, other top-k pass by pass', () => {
  const table = (topK: number) => ({ topK, rounds: 1, meanAccepted: [[], [0, 1, 1, 1], [0, 1, 2, 2], [0, 1, 2, 3]], draftMs: [0, 1, 2, 3] });
  const m: Measurements = { verifyMs: [0, 1, 1.5, 2, 2.5], verifyContext: 0, acceptance: [table(1), table(2)], tokens: 0 };
  const rows = (scores: ReturnType<typeof scoreShapes>, topK: number) => scores.filter((s) => s.topK === topK).map((s) => [s.depth, s.totalTokens, s.roundMs, !!s.fused]);
  assert.deepEqual(rows(scoreShapes(m), 1).sort(), [[1, 1, 2.5, false], [2, 2, 4, false], [3, 3, 5.5, false]]);
  // Fused figures for depths 1 and 2 only: the 3-deep chain is left out, not priced pass by pass.
  // A round of 1.8 ms beside plain steps of 1.5 ms costs 1.2 plain steps: 1.2 x the table's 1 ms.
  const fused = scoreShapes({ ...m, fused: { roundMs: [0, 1.8, 1.4], plainMs: [0, 1.5, 1] } });
  assert.deepEqual(rows(fused, 1).sort(), [[1, 1, 1.2, true], [2, 2, 1.4, true]]);
  assert.deepEqual(rows(fused, 2), rows(scoreShapes(m), 2), 'top-k 2 is drafted pass by pass either way');
  assert.equal(fused[0].depth, 2, 'the cheaper fused chain wins: tau 3 in 1.4 ms');
});

test('eaglet tune --fused-round prices chains as fused rounds, and loadGenerator then runs the tuned chain fused', async (ctx) => {
  const { dir, r } = tuneRandomPair(ctx, ['--max-top-k', '1', '--max-depth', '3', '--max-tokens', '3', '--fused-round']);
  assert.match(r.stderr, /fused chain round by depth, in plain steps timed beside it: [\d.]+ [\d.]+ [\d.]+ \(pass by pass/);
  assert.match(r.stdout, /one ORT call per round: predicted/);
  const t = readTuning(join(dir, 'head'))!;
  assert.equal(t.fusedRound, true);
  const f = t.measured.fused!;
  assert.ok(f.roundMs.length === 4 && f.plainMs.length === 4);
  assert.ok(t.byDepth.every((s) => s.fused && Math.abs(s.roundMs - (f.roundMs[s.depth] / f.plainMs[s.depth]) * t.measured.verifyMs[1]) < 1e-9));
  const tuned = await loadGenerator({ model: join(dir, 'model'), draft: join(dir, 'head'), threads: 1, fusedRound: 'auto' });
  assert.ok(tuned.generator.parts.drafter instanceof RoundDrafter, 'the tuned chain runs as tune priced it');
  await tuned.dispose();
  const off = await loadGenerator({ model: join(dir, 'model'), draft: join(dir, 'head'), threads: 1, fusedRound: 'auto', tuning: false });
  assert.ok(off.generator.parts.drafter instanceof EagleDrafter, 'without the file a custom pair drafts pass by pass');
  await off.dispose();
});
