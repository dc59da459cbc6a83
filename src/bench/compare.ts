/**
 * Policy comparison: plain decoding and a list of draft-length policies on the same prompts,
 * the same target and draft sessions, in one process. Runs are interleaved per prompt (the
 * order rotates so no method always runs first), after warm-up runs, `repeats` times. Every
 * policy's tokens are checked against plain decoding's: speculation must be lossless.
 *
 * Each policy is one instance for the whole benchmark, so adaptive policies carry what they
 * learned from one prompt to the next, as in a long-running server.
 */
import { linePlot } from '../../training/svg-plot.ts';
import type { Drafter } from '../generate/drafter.ts';
import { Generator } from '../generate/generator.ts';
import { resolveGenerationOptions, type GenerationOptions } from '../generate/options.ts';
import { GenerationStats } from '../generate/stats.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import type { LengthPolicy } from '../policies/policy.ts';
import type { TargetSession } from '../runtime/target.ts';

export interface CompareOptions {
  target: TargetSession;
  drafter: Drafter;
  /** Policies compared with plain decoding, each under its label; `drafter` overrides the shared one (e.g. another tree shape, or self-drafting). */
  policies: { label: string; policy: LengthPolicy; drafter?: Drafter }[];
  /** Token-id prompts. */
  prompts: number[][];
  /** Same for every method; a fixed seed makes sampled runs comparable token for token. */
  generation?: Partial<GenerationOptions>;
  /** Timed passes over all prompts. Default 1. */
  repeats?: number;
  /** Untimed runs of every method on the first prompt before timing. Default 1. */
  warmup?: number;
  /** Called with one line per run (e.g. write it to stderr). */
  onProgress?: (line: string) => void;
}

export interface MethodResult {
  label: string;
  /** Timed runs. */
  runs: number;
  newTokens: number;
  wallMs: number;
  /** Sum of new tokens / sum of wall time over the timed runs. */
  tokensPerSecond: number;
  /** tokensPerSecond / plain decoding's. */
  speedup: number;
  /** Tokens per target verification pass, bonus included (plain decoding = 1). */
  tau: number;
  meanDepth: number;
  rounds: number;
  /** Totals over the timed runs. */
  draftPasses: number;
  targetPasses: number;
  acceptedHistogram: number[];
  /** Self-drafting: rounds drafted per exit layer (index = exit layer). */
  exitLayerHistogram?: number[];
  timeMs: { prefill: number; draft: number; verify: number; policy: number; bookkeeping: number };
  /** Timed runs whose tokens differ from plain decoding's. */
  mismatches: number;
}

export interface Comparison {
  prompts: number;
  repeats: number;
  warmup: number;
  generation: GenerationOptions;
  ar: MethodResult;
  policies: MethodResult[];
  /** Every policy produced plain decoding's tokens on every timed run. */
  lossless: boolean;
  /** Free-form context for the report (model, tree shape...), set by the caller. */
  meta?: Record<string, unknown>;
}

/** Runs the comparison; see the module comment. */
export async function comparePolicies(o: CompareOptions): Promise<Comparison> {
  if (o.prompts.length === 0) throw new RangeError('comparePolicies: no prompts');
  const repeats = o.repeats ?? 1, warmup = o.warmup ?? 1;
  const generation = resolveGenerationOptions(o.generation);
  const methods = [
    { label: 'ar', generator: new Generator({ target: o.target }), totals: new Totals('ar') },
    ...o.policies.map(({ label, policy, drafter }) => ({ label, generator: new Generator({ target: o.target, drafter: drafter ?? o.drafter, policy }), totals: new Totals(label) })),
  ];
  const say = o.onProgress ?? (() => {});

  for (let w = 0; w < warmup; w++) for (const m of methods) await m.generator.generate(o.prompts[0], generation);
  for (let r = 0; r < repeats; r++) {
    for (let p = 0; p < o.prompts.length; p++) {
      const ids: number[][] = [];
      for (let i = 0; i < methods.length; i++) {
        const k = (i + p + r) % methods.length, m = methods[k];
        const out = await m.generator.generate(o.prompts[p], generation);
        ids[k] = out.ids;
        m.totals.add(out.stats);
        say(`repeat ${r + 1}/${repeats} prompt ${p + 1}/${o.prompts.length} ${m.label}: ${out.stats.newTokens} tokens, ${out.stats.tokensPerSecond.toFixed(1)} tok/s, tau ${out.stats.tau.toFixed(2)}`);
      }
      for (let k = 1; k < methods.length; k++) if (!sameTokens(ids[k], ids[0])) methods[k].totals.mismatches++;
    }
  }
  const ar = methods[0].totals.result(0);
  const policies = methods.slice(1).map((m) => m.totals.result(ar.tokensPerSecond));
  ar.speedup = 1;
  return { prompts: o.prompts.length, repeats, warmup, generation, ar, policies, lossless: policies.every((p) => p.mismatches === 0) };
}

/** Sums of GenerationStats over timed runs. */
class Totals {
  runs = 0;
  mismatches = 0;
  readonly sum = new GenerationStats();
  constructor(readonly label: string) {}

  add(s: GenerationStats): void {
    this.runs++;
    this.sum.add(s);
  }

  result(arTokensPerSecond: number): MethodResult {
    const j = this.sum.toJSON(), tps = this.sum.tokensPerSecond;
    return {
      label: this.label, runs: this.runs, newTokens: j.newTokens, wallMs: j.wallMs, tokensPerSecond: tps,
      speedup: arTokensPerSecond > 0 ? tps / arTokensPerSecond : 0,
      tau: this.sum.tau, meanDepth: j.meanDepth, rounds: j.rounds, draftPasses: j.draftPasses, targetPasses: j.targetPasses,
      acceptedHistogram: j.acceptedHistogram, ...(j.exitLayerHistogram ? { exitLayerHistogram: j.exitLayerHistogram } : {}), timeMs: j.timeMs, mismatches: this.mismatches,
    };
  }
}

const sameTokens = (a: number[], b: number[]) => a.length === b.length && a.every((t, i) => t === b[i]);

/** The comparison as a Markdown table, plain decoding first. */
export function comparisonMarkdown(c: Comparison): string {
  const pct = (x: number, m: MethodResult) => (m.wallMs > 0 ? `${Math.round((100 * x) / m.wallMs)}%` : '-');
  const rows = [c.ar, ...c.policies].map((m) =>
    `| ${m.label} | ${m.tokensPerSecond.toFixed(1)} | ${m.speedup.toFixed(2)}x | ${m.tau.toFixed(2)} | ${m.meanDepth.toFixed(2)} | ${m.draftPasses} | ${m.targetPasses} | ` +
    `${pct(m.timeMs.draft, m)} | ${pct(m.timeMs.verify, m)} | ${pct(m.timeMs.prefill + m.timeMs.policy + m.timeMs.bookkeeping, m)} | ${m === c.ar ? '(reference)' : m.mismatches === 0 ? 'yes' : `NO (${m.mismatches} runs differ)`} |`,
  );
  const g = c.generation;
  return [
    `${c.prompts} prompts x ${c.repeats} repeats (after ${c.warmup} warm-up runs), max ${g.maxNewTokens} new tokens, temperature ${g.temperature}, seed ${g.seed}.`,
    '',
    '| method | tokens/s | speedup | tau | mean depth | draft passes | target passes | draft time | verify time | other time | lossless |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ...rows,
    '',
    ...c.policies.filter((m) => m.exitLayerHistogram).map((m) => `${m.label}: rounds per exit layer ${m.exitLayerHistogram!.map((n, e) => (n ? `E${e}:${n}` : '')).filter(Boolean).join(' ')}${m.rounds > m.exitLayerHistogram!.reduce((a, b) => a + b, 0) ? `, plain rounds ${m.rounds - m.exitLayerHistogram!.reduce((a, b) => a + b, 0)}` : ''}.`),
    '',
    c.lossless ? `Lossless: every policy's output equals plain decoding's on all ${c.prompts * c.repeats} timed runs.` : 'NOT LOSSLESS: some policy produced different tokens from plain decoding (see the table).',
    '',
  ].join('\n');
}

/** Speedups as an SVG chart: svg-plot draws lines, so each method is one vertical bar from 0. */
export function comparisonSvg(c: Comparison): string {
  const methods = [c.ar, ...c.policies];
  return linePlot(
    methods.map((m, i) => ({ label: `${m.label} ${m.speedup.toFixed(2)}x`, x: [i, i], y: [0, m.speedup] })),
    { title: 'speedup over plain decoding (tokens/s ratio)', xLabel: 'method (see legend)', yLabel: 'speedup' },
  );
}

/** Writes PREFIX.json, PREFIX.md and PREFIX.svg atomically; returns their paths. */
export function writeComparison(c: Comparison, prefix: string): string[] {
  const files: [string, string][] = [
    [`${prefix}.json`, JSON.stringify(c, null, 2) + '\n'],
    [`${prefix}.md`, comparisonMarkdown(c)],
    [`${prefix}.svg`, comparisonSvg(c)],
  ];
  for (const [path, text] of files) writeFileAtomic(path, text);
  return files.map(([path]) => path);
}
