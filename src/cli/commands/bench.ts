/** `eaglet bench`: plain decoding vs draft-length policies on one prompt set (src/bench/compare.ts). */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { loadGenerator, type LoadedGenerator } from '../../api.ts';
import { DEFAULT_PATHS } from '../../default-model.ts';
import { comparePolicies, comparisonExitCode, comparisonMarkdown, writeComparison } from '../../bench/compare.ts';
import { randomPrompts, readPrompts } from '../../bench/prompts.ts';
import { UsageError } from '../../errors.ts';
import { checkPrompt } from '../../generate/generator.ts';
import { GENERATION_FLAGS, generationOptionsFromFlags } from '../../generate/options.ts';
import { createPolicy, policyEntry, policyFlags, policyNames } from '../../policies/registry.ts';
import type { FlagSpec } from '../../option-schema.ts';
import { DRAFT_QUANT_FLAG, NATIVE_MATMUL_FLAG, QUANTIZE_FLAG, quantFromFlags, checkSelfDraftFlags, FUSED_ROUND_FLAG, MODEL_FLAGS, policyList, policyName, ROUND_DEPTHS_FLAG, roundDepthsFromFlags, THREADS_FLAG, TREE_FLAGS, treeFromFlags, withTreeFlags } from '../common-flags.ts';
import { SelfDrafter } from '../../generate/self-drafter.ts';
import { defineCommand } from '../command.ts';

/** Policy-spec suffix: run the policy with the fused-round drafter. */
const FUSED_SUFFIX = '@fused';
const baseSpec = (s: string): string => (s.endsWith(FUSED_SUFFIX) ? s.slice(0, -FUSED_SUFFIX.length) : s);

/**
 * The depth of the round graph a fused row runs: `static-D` gets a graph of depth D (at most the
 * tree's), so depths compare at their own cost (the graph always drafts its full depth); any other
 * policy, the tree's depth.
 */
function fusedDepth(spec: string, treeDepth: number): number {
  const m = /^static-(\d+)$/.exec(spec);
  return m && Number(m[1]) >= 1 ? Math.min(Number(m[1]), treeDepth) : treeDepth;
}

const POLICIES_DEFAULT = 'default,static,threshold,adaedl,heuristic,goodput';

const FLAGS: FlagSpec[] = [
  ...MODEL_FLAGS,
  ...TREE_FLAGS,
  THREADS_FLAG,
  { flag: 'draft', type: 'string', meta: 'PATH|random[:N]|self', help: 'EAGLE draft head directory, "random" (random:N: with an N-token draft vocabulary), or "self" (no head: every policy drafts with the target\'s own early layers) (required with --model)' },
  DRAFT_QUANT_FLAG,
  QUANTIZE_FLAG,
  NATIVE_MATMUL_FLAG,
  FUSED_ROUND_FLAG,
  ROUND_DEPTHS_FLAG,
  { flag: 'draft-seed', type: 'int', min: 0, default: 0, meta: 'S', help: 'seed of the random draft head' },
  { flag: 'prompts', type: 'string', meta: 'PATH', help: 'prompt file (default with the embedded pair: its 24 held-out prompts): .jsonl (a string, an id array, or {"prompt"|"text": ...} / {"ids": [...]} per line) or text, one prompt per line' },
  { flag: 'random-prompts', type: 'int', min: 1, meta: 'N', help: 'instead of --prompts: N random token-id prompts' },
  { flag: 'prompt-length', type: 'int', min: 1, default: 16, meta: 'L', help: 'tokens per random prompt' },
  { flag: 'policies', type: 'string', default: POLICIES_DEFAULT, meta: 'LIST', help: 'comma-separated policy specs: NAME, static-D, NAME:flag=value; `default` = what `generate` uses with the same model flags; SPEC@fused runs SPEC with the fused round (one ORT call per round; chain trees) beside the others, static-D@fused on a round graph of depth D (at most --depth); self-drafting: del, exit-E (default with --draft self: del and every exit-E)' },
  { flag: 'repeats', type: 'int', min: 1, default: 5, meta: 'N', help: 'timed passes over the prompts (the spread is over these)' },
  { flag: 'warmup', type: 'int', min: 0, default: 1, meta: 'N', help: 'untimed runs of every method before timing' },
  { flag: 'warm-policies', type: 'bool', help: 'keep one policy instance per method across all runs (default: fresh state every run, so learning is timed)' },
  ...GENERATION_FLAGS,
  { flag: 'out', type: 'string', default: 'runs/bench/policies', meta: 'PREFIX', help: 'writes PREFIX.json, PREFIX.md and PREFIX.svg' },
  ...policyFlags(),
];

export const bench = defineCommand({
  summary: 'compare draft-length policies with plain decoding (speed, tau, losslessness)',
  usage: 'Usage: eaglet bench [--model PATH --draft PATH|random|self (--prompts FILE | --random-prompts N)] [flags]',
  description: `Compares plain decoding with draft-length policies on the same prompts in one process
(interleaved per prompt, after warm-up; every run starts from a fresh policy state unless
--warm-policies), and reports tokens/s (median and min-max over repeats), speedup, tau, mean depth,
passes and the time split. Every policy's output is compared with plain decoding's: a difference at
a float32 near-tie is counted apart; any other difference is a real mismatch and exits 1.
Without --model and --draft it benchmarks the embedded default pair on its held-out prompts.
The \`default\` row is the policy and tree \`generate\` uses with the same model flags.
Policies (per-policy flags below are --NAME-FLAG; inline: NAME:flag=value):
${policyNames().map((n) => `  ${n.padEnd(16)} ${policyEntry(n).summary}`).join('\n')}`,
  flags: FLAGS,
  policyFlag: '--policies',
  async run(f) {
    const embedded = f.model === undefined;
    if (embedded && f.draft !== undefined && f.draft !== 'self') throw new UsageError('--draft', 'needs --model (without both, bench uses the embedded default pair)');
    if (!embedded && !f.draft) throw new UsageError('--draft', 'is required with --model (a draft head directory, "random", or "self")');
    checkSelfDraftFlags(f);
    if (embedded && f.prompts === undefined && f.randomPrompts === undefined) f.prompts = DEFAULT_PATHS.heldoutPrompts;
    if ((f.prompts === undefined) === (f.randomPrompts === undefined)) throw new UsageError('--prompts', 'give exactly one of --prompts or --random-prompts');
    let specs = policyList(String(f.policies), '--policies');
    const selfOnly = f.draft === 'self';
    // Self-drafting policies beside a head build their sessions from the target's weights.
    const keepWeights = specs.map(baseSpec).some((sp) => sp !== 'default' && policyEntry(policyName(sp)).drafter === 'self');

    // --round-depths: the round graphs of fused rows at the tree's depth (static-D@fused rows of a smaller D keep their one graph).
    const roundDepths = roundDepthsFromFlags(f);
    const load = (fusedRound: boolean | 'auto', depth?: number) => withTreeFlags(f, () => loadGenerator({
      model: f.model as string | undefined, tokenizer: f.tokenizer as string | undefined, draft: f.draft as string | undefined,
      tree: { ...treeFromFlags(f), ...(depth === undefined ? {} : { maxDepth: depth, totalTokens: depth }) }, threads: f.threads as number, draftSeed: f.draftSeed as number, ...quantFromFlags(f), fusedRound, keepWeights,
      roundDepths: depth === undefined && fusedRound !== false ? roundDepths : undefined,
    }));
    const g = await load((f.fusedRound as boolean | undefined) ?? 'auto');
    // SPEC@fused rows: the same pair loaded again with the fused-round drafter, one per graph depth.
    const fusedSpecs = specs.filter((s) => s.endsWith(FUSED_SUFFIX));
    if (fusedSpecs.length > 0 && selfOnly) throw new UsageError('--policies', `${FUSED_SUFFIX} needs an EAGLE head (--draft PATH)`);
    const gFused = new Map<number, LoadedGenerator>();
    const treeDepth = Math.min(g.generator.drafter?.shape.maxDepth ?? 0, g.generator.drafter?.shape.totalTokens ?? 0);
    for (const s of fusedSpecs) {
      const D = fusedDepth(baseSpec(s), treeDepth);
      if (!gFused.has(D)) gFused.set(D, await load(true, D === treeDepth ? undefined : D));
    }
    for (const note of g.notes) process.stderr.write(`${note}\n`);
    let ownSelf: SelfDrafter | undefined;
    try {
      const tree = g.generator.drafter.shape;
      const L = g.model.config.nLayers;
      // With --draft self and the default list: DEL and every static exit.
      if (selfOnly && f.policies === POLICIES_DEFAULT) specs = ['del', ...Array.from({ length: L - 1 }, (_, i) => `exit-${i + 1}`)];
      for (const spec of specs.map(baseSpec)) if (selfOnly && /^(ldlp|specdec)/.test(policyName(spec))) throw new UsageError('--policies', `${spec} needs an EAGLE head (--draft PATH)`);
      // Self-drafting policies share one SelfDrafter (its sessions are built per exit layer on first use).
      const self = selfOnly ? (g.generator.drafter as SelfDrafter) : specs.map(baseSpec).some((sp) => sp !== 'default' && policyEntry(policyName(sp)).drafter === 'self') ? (ownSelf = new SelfDrafter(g.generator.parts.target, g.model.weights, tree, { session: { threads: g.threads, nativeLinear: g.nativeMatMul } })) : undefined;
      // Built after loading: trained predictors read the target's embeddings. `default` is the
      // loaded generator's own policy: exactly what `generate` would use.
      const policies = specs.map((label) => {
        const fusedRow = label.endsWith(FUSED_SUFFIX), spec = baseSpec(label);
        const isSelf = selfOnly || (spec !== 'default' && policyEntry(policyName(spec)).drafter === 'self');
        if (fusedRow && isSelf) throw new UsageError('--policies', `${label}: ${FUSED_SUFFIX} needs an EAGLE head policy`);
        // `default@fused`: the fused generator's own policy (what `generate` runs with the fused round).
        const create = spec === 'default' ? (fusedRow ? gFused.get(fusedDepth(spec, treeDepth))!.newPolicy : g.newPolicy) : () => createPolicy(spec, { tree, target: g.model, nLayers: L }, f);
        create(); // a bad spec fails here, before any run
        return { label, create, drafter: isSelf ? self : fusedRow ? gFused.get(fusedDepth(spec, treeDepth))!.generator.drafter : undefined };
      });
      const V = g.model.config.vocabSize;
      const prompts = f.prompts !== undefined
        ? readPrompts(f.prompts as string, g.encode)
        : randomPrompts(f.randomPrompts as number, f.promptLength as number, V, f.seed as number);
      // A prompt the model cannot take is the fault of the file or --prompt-length (the library would name its own `prompt`).
      prompts.forEach((p, i) => checkPrompt(p, g.model.config, f.prompts !== undefined ? `${f.prompts as string}: prompt ${i + 1}` : '--prompt-length'));
      const { target, drafter } = g.generator.parts;
      const generation = generationOptionsFromFlags(f);
      const c = await comparePolicies({
        target, drafter: drafter!, policies, prompts, generation, repeats: f.repeats as number, warmup: f.warmup as number, warmPolicies: f.warmPolicies === true,
        onProgress: (line) => process.stderr.write(`${line}\n`),
      });
      c.meta = { model: f.model ?? DEFAULT_PATHS.target, draft: f.draft ?? DEFAULT_PATHS.draft, tree, policies: specs, defaultPolicy: g.generator.policy.name, threads: g.threads };
      const out = f.out as string;
      mkdirSync(dirname(out), { recursive: true });
      const files = writeComparison(c, out);
      process.stdout.write(comparisonMarkdown(c) + `\nWrote ${files.join(', ')}\n`);
      process.exitCode = comparisonExitCode(c);
    } finally {
      await ownSelf?.dispose();
      for (const x of gFused.values()) await x.dispose();
      await g.dispose();
    }
  },
});
