/**
 * Where a speculative round's milliseconds go, on a real pair generating real text. For each
 * thread count, three generators over the same pair run the same prompts, interleaved prompt by
 * prompt: plain decoding, a static chain of depth D drafted pass by pass (EagleDrafter: one ORT
 * call per depth + one verify call), and the same chain as one fused call per round
 * (RoundDrafter). Per round it reports, from the sessions' own counters:
 *
 *   draft   ms in the draft head's session.run, and in its feeds + output unpacking
 *   verify  ms in the target's (or the fused) session.run, and in its feeds + outputs
 *   JS      the rest of the round: tree building, acceptance, cache commits, policy
 *
 * with the plain step beside it, and tokens/s over all prompts (median and min-max of repeats).
 * Greedy; every speculative output is checked equal to plain decoding's.
 *
 * Inside the fused call (`--split`, D >= 2): rounds that verify [root, first draft] only (2 rows,
 * the rows a plain step computes when passes are padded to even rows), on round graphs of depth
 * 1..D, interleaved with the above. Graph d minus graph d - 1 is one in-graph head step (its
 * layer and LM head); graph 1 minus the plain step is the head's catch-up (C rows, its first
 * draft included) plus the round's own feeds, outputs and JS; the depth-D round verifying all D
 * drafts minus graph D verifying 2 rows is the verification's further rows. Their tau is the
 * depth-1 chain's; the check against plain decoding holds for them too.
 *
 *   node --import tsx scripts/bench-round.ts [-- --model M --draft H --prompts F --depth 3 --threads 1,2 --repeats 3 --max-new-tokens 64 --max-prompts N --draft-quant q4 --quantize q4 --native-matmul]
 * Without --model: the embedded default pair and its held-out prompts.
 */
import { loadGenerator, type LoadedGenerator } from '../src/api.ts';
import { DEFAULT_PATHS } from '../src/default-model.ts';
import { readPrompts } from '../src/bench/prompts.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import type { RunStats } from '../src/runtime/ort.ts';
import { EagleDrafter } from '../src/generate/eagle-drafter.ts';
import { RoundDrafter } from '../src/generate/round-drafter.ts';
import { StaticPolicy } from '../src/policies/policy.ts';
import { Generator } from '../src/generate/generator.ts';
import { median } from '../src/util/stats.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'model', type: 'string', help: 'target (default: the embedded pair)' },
  { flag: 'draft', type: 'string', help: 'draft head directory (with --model)' },
  { flag: 'prompts', type: 'string', help: 'prompt file (default: the embedded held-out prompts)' },
  { flag: 'draft-quant', type: 'string', choices: ['q8', 'q4'], help: 'quantized draft head weights' },
  { flag: 'quantize', type: 'string', choices: ['q8', 'q4'], help: 'quantize the target (and the head, unless --draft-quant) at load' },
  { flag: 'depth', type: 'int', min: 1, default: 3, help: 'chain depth D' },
  { flag: 'threads', type: 'string', default: '1,2', help: 'thread counts' },
  { flag: 'repeats', type: 'int', min: 1, default: 3, help: 'timed passes over the prompts' },
  { flag: 'max-prompts', type: 'int', min: 1, default: 1000, help: 'use at most this many prompts' },
  { flag: 'max-new-tokens', type: 'int', min: 1, default: 64, help: 'tokens per prompt' },
  { flag: 'native-matmul', type: 'bool', help: 'blockwise Linear layers on eaglet\'s own kernel (LoadOptions.nativeMatMul)' },
  { flag: 'split', type: 'bool', help: 'also time rounds verifying 2 rows on round graphs of depth 1..D (where the fused round\'s time goes)' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const D = f.depth as number, repeats = f.repeats as number, maxNewTokens = f.maxNewTokens as number;
const tree = { topK: 1, maxDepth: D, totalTokens: D };

const snap = (s: RunStats): RunStats => ({ ...s });
const diff = (a: RunStats, b: RunStats): RunStats => ({ passes: a.passes - b.passes, msInRun: a.msInRun - b.msInRun, msTotal: a.msTotal - b.msTotal });

interface Acc { ms: number; rounds: number; tokens: number; draft: RunStats; verify: RunStats; tokps: number[] }
const acc = (): Acc => ({ ms: 0, rounds: 0, tokens: 0, draft: { passes: 0, msInRun: 0, msTotal: 0 }, verify: { passes: 0, msInRun: 0, msTotal: 0 }, tokps: [] });
const add = (a: RunStats, b: RunStats) => ((a.passes += b.passes), (a.msInRun += b.msInRun), (a.msTotal += b.msTotal));

for (const threads of String(f.threads).split(',').map(Number)) {
  const opts = f.model ? { model: f.model as string, draft: f.draft as string, tuning: false } : {};
  const split = f.split === true && D >= 2;
  const load = (fusedRound: boolean): Promise<LoadedGenerator> =>
    loadGenerator({ ...opts, tree, threads, fusedRound, tuning: false, draftQuant: f.draftQuant as 'q8' | 'q4' | undefined, quantize: f.quantize as 'q8' | 'q4' | undefined, nativeMatMul: f.nativeMatmul === true, ...(fusedRound && split ? { roundDepths: Array.from({ length: D }, (_, i) => i + 1) } : {}) });
  const passes = await load(false), fused = await load(true);
  const prompts = readPrompts((f.prompts as string | undefined) ?? DEFAULT_PATHS.heldoutPrompts, passes.encode).slice(0, f.maxPrompts as number);
  const target = passes.generator.parts.target;
  const methods = [
    { label: 'plain', gen: new Generator({ target }), draftStats: () => undefined, targetStats: () => target.stats },
    { label: `chain ${D}, pass by pass`, gen: new Generator({ target, drafter: passes.generator.drafter, policy: new StaticPolicy(D, D) }), draftStats: () => (passes.generator.drafter as EagleDrafter).session.stats, targetStats: () => target.stats },
    { label: `chain ${D}, fused round`, gen: new Generator({ target, drafter: fused.generator.drafter, policy: new StaticPolicy(D, D) }), draftStats: () => undefined, targetStats: () => (fused.generator.drafter as RoundDrafter).session.stats },
    // --split: one RoundDrafter per round graph, each verifying its first draft only.
    ...(split ? (fused.generator.drafter as RoundDrafter).sessions : []).map((s) => {
      const drafter = new RoundDrafter(s, target.cfg.maxSeqLen);
      return { label: `graph of depth ${s.depth}, verify 2 rows`, gen: new Generator({ target, drafter, policy: new StaticPolicy(1, 1) }), draftStats: () => undefined, targetStats: () => s.stats };
    }),
  ];
  const accs = methods.map(acc);
  const plainIds: number[][] = [];
  for (let r = -1; r < repeats; r++) {
    const rep = methods.map(() => ({ ms: 0, tokens: 0 }));
    for (let p = 0; p < prompts.length; p++) {
      for (let m = 0; m < methods.length; m++) {
        const M = methods[m];
        // Decode rounds only: snapshots are taken after the first chunk, i.e. after prefill.
        const it = M.gen.stream(prompts[p], { maxNewTokens, stopAtEos: false });
        const first = await it.next();
        const ids = first.done ? [] : [...first.value.ids];
        const t0 = performance.now(), d0 = M.draftStats() && snap(M.draftStats()!), v0 = snap(M.targetStats()), p0 = snap(target.stats);
        let r1 = await it.next();
        for (; !r1.done; r1 = await it.next()) ids.push(...r1.value.ids);
        const ms = performance.now() - t0, st = r1.value;
        if (m === 0) plainIds[p] = ids;
        else if (ids.join() !== plainIds[p].join()) throw new Error(`${M.label}: output differs from plain decoding on prompt ${p}`);
        if (r < 0) continue; // warm-up
        const a = accs[m];
        a.ms += ms;
        a.rounds += st.rounds;
        a.tokens += st.newTokens - 1;
        rep[m].ms += ms;
        rep[m].tokens += st.newTokens - 1;
        if (d0) add(a.draft, diff(M.draftStats()!, d0));
        add(a.verify, diff(M.targetStats(), v0));
        if (M.targetStats() !== target.stats) add(a.verify, diff(target.stats, p0)); // the fused drafter's plain steps
      }
    }
    if (r >= 0) rep.forEach((x, m) => accs[m].tokps.push((1000 * x.tokens) / x.ms));
  }
  const plainStep = accs[0].ms / accs[0].rounds;
  console.log(`\nthreads ${threads}: ${prompts.length} prompts x ${maxNewTokens} tokens, ${repeats} repeats, greedy (all outputs equal plain decoding's); ms per round (decode only)`);
  console.log('| method | tok/s median (min-max) | tau | round ms | in plain steps | draft run / feeds+outputs | verify run / feeds+outputs | JS rest |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  accs.forEach((a, m) => {
    const R = a.rounds, round = a.ms / R;
    const dr = a.draft.msInRun / R, dt = (a.draft.msTotal - a.draft.msInRun) / R;
    const vr = a.verify.msInRun / R, vt = (a.verify.msTotal - a.verify.msInRun) / R;
    const t = a.tokps;
    console.log(`| ${methods[m].label} | ${median(t).toFixed(0)} (${Math.min(...t).toFixed(0)}-${Math.max(...t).toFixed(0)}) | ${(a.tokens / R).toFixed(2)} | ${round.toFixed(3)} | ${(round / plainStep).toFixed(2)} | ${dr.toFixed(3)} / ${dt.toFixed(3)} (${(a.draft.passes / R).toFixed(1)} calls) | ${vr.toFixed(3)} / ${vt.toFixed(3)} (${(a.verify.passes / R).toFixed(1)} calls) | ${(round - dr - dt - vr - vt).toFixed(3)} |`);
  });
  if (split) {
    // The split rows follow the three methods: graph d at index 2 + d.
    const ms = (m: number) => accs[m].ms / accs[m].rounds, g = (d: number) => ms(2 + d);
    const steps = Array.from({ length: D - 1 }, (_, i) => `${(g(i + 2) - g(i + 1)).toFixed(3)}`).join(', ');
    console.log(`\nfused round of depth ${D}, ms (plain step ${plainStep.toFixed(3)}): catch-up + first draft + the round's feeds/outputs/JS ${(g(1) - plainStep).toFixed(3)}; ` +
      `head steps 2..${D} ${steps}; verifying rows 3..${D + 1} ${(ms(2) - g(D)).toFixed(3)}; whole round ${ms(2).toFixed(3)} = ${(ms(2) / plainStep).toFixed(2)} plain steps`);
  }
  await passes.dispose();
  await fused.dispose();
}
