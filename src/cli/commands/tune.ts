/** `eaglet tune`: the tree shape and policy that maximise tokens/s on this machine (src/tune/). */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { loadGenerator } from '../../api.ts';
import { comparePolicies } from '../../bench/compare.ts';
import { readPrompts } from '../../bench/prompts.ts';
import { DEFAULT_PATHS } from '../../default-model.ts';
import { UsageError } from '../../errors.ts';
import { EagleDrafter } from '../../generate/eagle-drafter.ts';
import { RoundDrafter } from '../../generate/round-drafter.ts';
import { writeFileAtomic } from '../../io/atomic.ts';
import { loadDraftHead } from '../../io/draft-head-io.ts';
import { DRAFT_QUANT } from '../../model/quantize.ts';
import { createPolicy, policyEntry } from '../../policies/registry.ts';
import { RoundSession } from '../../runtime/round.ts';
import { greedySequences, measureAcceptance, measureFusedRounds, measureVerify, type AcceptanceTable, type Measurements } from '../../tune/measure.ts';
import { bestByDepth, machineInfo, scoreShapes, TUNING_FILE, type ShapeScore, type TuningFile } from '../../tune/tuning.ts';
import type { FlagSpec } from '../../option-schema.ts';
import { median } from '../../util/stats.ts';
import { DRAFT_QUANT_FLAG, MODEL_FLAGS, NATIVE_MATMUL_FLAG, policyList, policyName, QUANTIZE_FLAG, quantFromFlags, THREADS_FLAG } from '../common-flags.ts';
import { defineCommand } from '../command.ts';

const FLAGS: FlagSpec[] = [
  ...MODEL_FLAGS,
  { flag: 'draft', type: 'string', meta: 'PATH', help: 'EAGLE draft head directory (default: the embedded default\'s); the tuning file is written beside it' },
  { flag: 'prompts', type: 'string', meta: 'PATH', help: 'prompt file, as for bench (default with the embedded pair: its 16 training-split prompts)' },
  { flag: 'max-new-tokens', type: 'int', min: 8, default: 64, meta: 'N', help: 'greedy continuation per prompt that acceptance is measured along' },
  { flag: 'max-top-k', type: 'int', min: 1, max: 8, default: 4, meta: 'K', help: 'top-k values tried: 1..K' },
  { flag: 'max-depth', type: 'int', min: 1, max: 16, default: 8, meta: 'D', help: 'depths tried: 1..D' },
  { flag: 'max-tokens', type: 'int', min: 1, max: 128, default: 32, meta: 'N', help: 'tree sizes tried: 1..N drafted tokens' },
  { flag: 'repeats', type: 'int', min: 1, default: 5, meta: 'N', help: 'timed repeats of each verify size (median)' },
  { flag: 'policies', type: 'string', meta: 'LIST', help: 'policies run at the best shape (default: static, threshold, goodput, and ldlp+threshold with an ldlp/ beside the head)' },
  { flag: 'fused-round', type: 'bool', help: 'price chains (top-k 1) as one ORT call per round (draft and verify fused), and run the policies at a chain that way; recorded in the tuning file, which makes `generate` run a tuned chain the same way (default: on for the embedded default pair, as generate; --no-fused-round: pass by pass)' },
  THREADS_FLAG,
  QUANTIZE_FLAG,
  DRAFT_QUANT_FLAG,
  NATIVE_MATMUL_FLAG,
  { flag: 'out', type: 'string', meta: 'FILE', help: `tuning file (default: ${TUNING_FILE} beside the head)` },
];

const fmtShape = (s: ShapeScore) => `${s.topK}x${s.depth}x${s.totalTokens}`;

export const tune = defineCommand({
  summary: 'measure this machine and pick the tree shape and policy with the most tokens/s',
  usage: 'Usage: eaglet tune [--model PATH --draft PATH] [--prompts FILE] [flags]',
  description: `Measures, on this machine and thread count: the target's cost per verified tree size, the
draft head's cost per depth (per top-k), and the head's acceptance for every shape (top-k, depth,
tree size) along the target's greedy continuation of the prompts. Predicts tokens/s of every shape
= (1 + accepted) / (draft + verify), runs the candidate policies at the best shape on the same
prompts, and writes the fastest shape and policy with every table to a tuning file beside the head.
With the fused round (the embedded pair's default, --fused-round) a chain's draft + verify is the
measured ms of its one-call round instead, and the policies at a chain run it that way.
generate, bench and loadGenerator then use it unless flags say otherwise; a file from another
machine, thread count or weight format (--quantize, --draft-quant, with the quantization's block
size) is reported and not applied.
Run it on an otherwise idle machine.
Tune on prompts that are not your benchmark's (the default pair: training-split prompts).`,
  flags: FLAGS,
  policyFlag: '--policies',
  async run(f) {
    const embedded = f.model === undefined;
    if (!embedded && f.draft === undefined) throw new UsageError('--draft', 'is required with --model');
    if (f.draft === 'random' || f.draft === 'self') throw new UsageError('--draft', `tune needs a trained head directory, not "${f.draft as string}"`);
    const draft = (f.draft as string | undefined) ?? DEFAULT_PATHS.draft;
    const promptsFile = (f.prompts as string | undefined) ?? (embedded ? DEFAULT_PATHS.tunePrompts : undefined);
    if (!promptsFile) throw new UsageError('--prompts', 'is required with --model');
    // Unknown names fail now, not after minutes of measuring (a known one that cannot run at the best shape is skipped there).
    const given = f.policies !== undefined ? policyList(String(f.policies), '--policies') : undefined;
    for (const spec of given ?? []) policyEntry(policyName(spec));
    const K = f.maxTopK as number, D = f.maxDepth as number, N = f.maxTokens as number;
    // As `generate` decides it ('auto'): the embedded target with its own head runs chains fused.
    const fusedRound = (f.fusedRound as boolean | undefined) ?? (embedded && draft === DEFAULT_PATHS.draft);
    // Fused round sessions are built from the target's weights: keep them.
    const g = await loadGenerator({ model: f.model as string | undefined, tokenizer: f.tokenizer as string | undefined, draft, tree: { topK: K, maxDepth: D, totalTokens: N }, threads: f.threads as number | undefined, ...quantFromFlags(f), tuning: false, policy: undefined, keepWeights: fusedRound });
    try {
      const { target, drafter } = g.generator.parts;
      // tune measures an EAGLE head (--draft self is refused above).
      const session = (drafter as EagleDrafter).session;
      const prompts = readPrompts(promptsFile, g.encode);
      const say = (line: string) => process.stderr.write(`${line}\n`);
      g.notes.forEach(say); // e.g. a tuning file beside the head that was measured elsewhere

      const sequences = await greedySequences(target, prompts, f.maxNewTokens as number);
      const tokens = sequences.reduce((n, s, i) => n + s.length - prompts[i].length, 0);
      say(`greedy continuations: ${tokens} tokens over ${prompts.length} prompts`);
      const verifyMs = await measureVerify(target, sequences[0], N + 1, f.repeats as number);
      say(`verify ms by tokens: ${verifyMs.slice(1).map((x) => x.toFixed(2)).join(' ')}`);
      const acceptance: AcceptanceTable[] = [];
      for (let k = 1; k <= K; k++) {
        const a = await measureAcceptance(target, session, sequences, prompts.map((p) => p.length), k, D, N);
        say(`top-k ${k}: ${a.rounds} rounds; draft ms by depth ${a.draftMs.slice(1).map((x) => x.toFixed(2)).join(' ')}`);
        acceptance.push(a);
      }
      // A chain round as one ORT call, built as loadGenerator builds it (same head quantization and threads).
      const head = fusedRound ? loadDraftHead(draft, g.model.config) : undefined, hq = g.weightFormats.draft;
      const roundSession = (depth: number) => RoundSession.create(g.model.config, g.model.weights, head!.config, head!.weights, depth, { threads: g.threads, quantize: hq === 'fp32' ? undefined : DRAFT_QUANT[hq], nativeLinear: g.nativeMatMul });
      const fused = fusedRound ? await measureFusedRounds(target, roundSession, prompts, Math.min(D, N), f.maxNewTokens as number) : undefined;
      // Chains are priced only where a full fused round ran; with top-k 1 alone nothing else is left.
      if (fused && fused.roundMs.length === 1 && K === 1)
        throw new UsageError('--prompts', `no prompt leaves room for a full fused round (every one is too close to the ${target.cfg.maxSeqLen}-token context limit), so no chain could be priced; use shorter prompts, --no-fused-round or --max-top-k 2 or more`);
      if (fused) {
        const steps = fused.roundMs.slice(1).map((x, i) => (x / fused.plainMs[i + 1]).toFixed(2)), byPasses = steps.map((_, i) => ((acceptance[0].draftMs[i + 1] + verifyMs[i + 2]) / verifyMs[1]).toFixed(2)); // top-k 1: draft D + verify D + 1
        say(`fused chain round by depth, in plain steps timed beside it: ${steps.join(' ')} (pass by pass, from the tables: ${byPasses.join(' ')}); plain step there ${median(fused.plainMs.slice(1)).toFixed(3)} ms`);
      }
      const measured: Measurements = { verifyMs, verifyContext: Math.min(sequences[0].length, target.cfg.maxSeqLen - N - 1), acceptance, ...(fused ? { fused } : {}), tokens };
      const scores = scoreShapes(measured), best = scores[0];
      const tree = { topK: best.topK, maxDepth: best.depth, totalTokens: best.totalTokens };

      // The policies at the best shape, measured on the same prompts (interleaved with plain decoding).
      const ldlpDir = join(dirname(resolve(draft)), 'ldlp');
      const specs = given ?? ['static', 'threshold', 'goodput', ...(existsSync(join(ldlpDir, 'config.json')) ? [`ldlp+threshold:path=${ldlpDir}`] : [])];
      // The policies run the best shape as generate will: a fused chain as one call per round.
      const bestSession = best.fused ? await roundSession(best.depth) : undefined;
      const policyDrafter = bestSession ? new RoundDrafter(bestSession, target.cfg.maxSeqLen) : new EagleDrafter(session, tree, target.cfg.maxSeqLen);
      const usable = specs.filter((spec) => {
        try {
          createPolicy(spec, { tree, target: g.model });
          return true;
        } catch (e) {
          say(`skipping policy ${spec}: ${(e as Error).message}`);
          return false;
        }
      });
      const c = await comparePolicies({
        target, drafter: policyDrafter, prompts, repeats: 1, warmup: 1,
        generation: { maxNewTokens: f.maxNewTokens as number, stopAtEos: false },
        policies: usable.map((spec) => ({ label: spec, create: () => createPolicy(spec, { tree, target: g.model }) })),
      }).finally(() => bestSession?.dispose());
      const runs = c.policies.map((p) => ({ policy: p.label, tokensPerSecond: p.tokensPerSecond.median, speedup: p.speedup, tau: p.tau }));
      const fastest = [...runs].sort((a, b) => b.tokensPerSecond - a.tokensPerSecond)[0];
      // Plain decoding wins when no policy beats it: `static-0` drafts nothing.
      const policy = fastest && fastest.speedup > 1 ? fastest.policy : 'static-0';

      const file: TuningFile = {
        format: 'eaglet-tuning', version: 1, created: new Date().toISOString(), machine: machineInfo(), threads: g.threads,
        weights: g.weightFormats,
        source: { model: (f.model as string | undefined) ?? DEFAULT_PATHS.target, draft, prompts: promptsFile, tokens },
        tree, policy, fusedRound, predicted: best, policyRuns: runs, plainTokensPerSecond: c.ar.tokensPerSecond.median,
        byDepth: bestByDepth(scores), measured,
      };
      const out = (f.out as string | undefined) ?? join(draft, TUNING_FILE);
      writeFileAtomic(out, JSON.stringify(file, null, 1) + '\n');

      const lines = [
        `plain step ${verifyMs[1].toFixed(3)} ms; best shape per top-k and depth (predicted, bookkeeping not counted):`,
        '| top-k x depth x tokens | tau | draft ms | verify ms | round ms | predicted speedup |',
        '| --- | ---: | ---: | ---: | ---: | ---: |',
        ...file.byDepth.map((s) => s.fused
          ? `| ${fmtShape(s)} (one call) | ${s.tau.toFixed(2)} | fused | fused | ${s.roundMs.toFixed(3)} | ${s.speedup.toFixed(2)}x |`
          : `| ${fmtShape(s)} | ${s.tau.toFixed(2)} | ${(s.roundMs - verifyMs[s.totalTokens + 1]).toFixed(3)} | ${verifyMs[s.totalTokens + 1].toFixed(3)} | ${s.roundMs.toFixed(3)} | ${s.speedup.toFixed(2)}x |`),
        '',
        `best shape ${fmtShape(best)}${best.fused ? ', one ORT call per round' : ''}: predicted ${best.speedup.toFixed(2)}x (tau ${best.tau.toFixed(2)})`,
        `measured at that shape on the tune prompts: plain ${c.ar.tokensPerSecond.median.toFixed(1)} tok/s; ${runs.map((r) => `${r.policy} ${r.speedup.toFixed(2)}x (tau ${r.tau.toFixed(2)})`).join(', ')}${c.lossless ? '' : ' (NOT LOSSLESS)'}`,
        `chosen: tree ${fmtShape(best)}, policy ${policy}; wrote ${out}`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
      if (!c.lossless) process.exitCode = 1;
    } finally {
      await g.dispose();
    }
  },
});
