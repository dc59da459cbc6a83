/**
 * Policy comparison: plain decoding and a list of draft-length policies on the same prompts,
 * the same target and draft sessions, in one process. Runs are interleaved per prompt (the
 * order rotates so no method always runs first), after untimed warm-up runs, `repeats` times.
 *
 * Every (method, prompt, repeat) starts from a fresh policy state by default, so what an
 * adaptive policy pays to learn (goodput's exploration, AdaEDL's threshold drift) is timed, as
 * every fresh `generate` pays it; `warmPolicies` keeps one instance per method across all runs
 * (a long-running server) and the report says so.
 *
 * Speed is reported per repeat (tokens/s over all prompts), as the median and the spread
 * (min-max and IQR) over repeats, plus per prompt; on a shared machine a gap inside the spread
 * is a tie. Every policy's tokens are compared with plain decoding's; a difference is classified
 * (src/generate/near-tie.ts): near-ties are counted apart, any other difference is a real
 * mismatch and makes the comparison not lossless.
 */
import { linePlot } from '../util/svg-plot.ts';
import type { Drafter } from '../generate/drafter.ts';
import { Generator } from '../generate/generator.ts';
import { classifyMismatch, type MismatchVerdict } from '../generate/near-tie.ts';
import { resolveGenerationOptions, type GenerationOptions } from '../generate/options.ts';
import { GenerationStats } from '../generate/stats.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import type { LengthPolicy } from '../policies/policy.ts';
import type { TargetSession } from '../runtime/target.ts';
import { spread, type Spread } from '../util/stats.ts';

export interface CompareOptions {
  target: TargetSession;
  drafter: Drafter;
  /**
   * Policies compared with plain decoding, each under its label. `create` makes a fresh policy
   * (called per run, or once with `warmPolicies`); `drafter` overrides the shared one (e.g.
   * another tree shape, or self-drafting).
   */
  policies: { label: string; create: () => LengthPolicy; drafter?: Drafter }[];
  /** Token-id prompts. */
  prompts: number[][];
  /** Same for every method; a fixed seed makes sampled runs comparable token for token. */
  generation?: Partial<GenerationOptions>;
  /** Timed passes over all prompts. Default 5. */
  repeats?: number;
  /** Untimed runs of every method on the first prompt before timing. Default 1. */
  warmup?: number;
  /** One policy instance per method for the whole benchmark (warm-up included). Default false. */
  warmPolicies?: boolean;
  /** Called with one line per run (e.g. write it to stderr). */
  onProgress?: (line: string) => void;
}

export interface MethodResult {
  label: string;
  /** Timed runs. */
  runs: number;
  newTokens: number;
  wallMs: number;
  /** Tokens/s of each repeat (all prompts' tokens / their wall time): median and spread. */
  tokensPerSecond: Spread;
  /** Per prompt, tokens/s over the repeats. */
  perPrompt: Spread[];
  /** Median tokens/s / plain decoding's median. */
  speedup: number;
  /** Per-repeat ratio to plain decoding's tokens/s in the same repeat: spread. */
  speedupSpread: Spread;
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
  /** Timed runs whose tokens differ from plain decoding's at a classified near-tie. */
  nearTies: number;
  /** Timed runs whose tokens differ from plain decoding's otherwise: real mismatches. */
  mismatches: number;
  /** The first differences found (at most 10), classified. */
  verdicts: MismatchVerdict[];
}

export interface Comparison {
  prompts: number;
  repeats: number;
  warmup: number;
  /** Policies kept their state across runs (false: fresh per run). */
  warmPolicies: boolean;
  generation: GenerationOptions;
  ar: MethodResult;
  policies: MethodResult[];
  /** No real mismatch (near-ties allowed: see near-tie.ts). */
  lossless: boolean;
  /** Free-form context for the report (model, tree shape...), set by the caller. */
  meta?: Record<string, unknown>;
}

/** Runs the comparison; see the module comment. */
export async function comparePolicies(o: CompareOptions): Promise<Comparison> {
  if (o.prompts.length === 0) throw new RangeError('comparePolicies: no prompts');
  const repeats = o.repeats ?? 5, warmup = o.warmup ?? 1, warm = o.warmPolicies ?? false;
  const generation = resolveGenerationOptions(o.generation);
  const plain = new Generator({ target: o.target });
  const methods = [
    { label: 'ar', generator: () => plain, totals: new Totals('ar', o.prompts.length, repeats) },
    ...o.policies.map(({ label, create, drafter }) => {
      const make = () => new Generator({ target: o.target, drafter: drafter ?? o.drafter, policy: create() });
      const shared = warm ? make() : undefined;
      return { label, generator: () => shared ?? make(), totals: new Totals(label, o.prompts.length, repeats) };
    }),
  ];
  const say = o.onProgress ?? (() => {});

  for (let w = 0; w < warmup; w++) for (const m of methods) await m.generator().generate(o.prompts[0], generation);
  for (let r = 0; r < repeats; r++) {
    for (let p = 0; p < o.prompts.length; p++) {
      const ids: number[][] = [];
      for (let i = 0; i < methods.length; i++) {
        const k = (i + p + r) % methods.length, m = methods[k], g = m.generator();
        const out = await g.generate(o.prompts[p], generation);
        ids[k] = out.ids;
        m.totals.add(out.stats, p, r);
        say(`repeat ${r + 1}/${repeats} prompt ${p + 1}/${o.prompts.length} ${m.label}: ${out.stats.newTokens} tokens, ${out.stats.tokensPerSecond.toFixed(1)} tok/s, tau ${out.stats.tau.toFixed(2)}`);
      }
      for (let k = 1; k < methods.length; k++) {
        const v = await classifyMismatch(o.target, o.prompts[p], ids[0], ids[k], generation);
        if (v) methods[k].totals.verdict(v, say);
      }
    }
  }
  const ar = methods[0].totals.result(null);
  const policies = methods.slice(1).map((m) => m.totals.result(methods[0].totals));
  return { prompts: o.prompts.length, repeats, warmup, warmPolicies: warm, generation, ar, policies, lossless: policies.every((p) => p.mismatches === 0) };
}

/** Sums of GenerationStats over timed runs, and the per-(prompt, repeat) times. */
class Totals {
  runs = 0;
  nearTies = 0;
  mismatches = 0;
  readonly verdicts: MismatchVerdict[] = [];
  readonly sum = new GenerationStats();
  readonly tokens: number[][]; // [prompt][repeat]
  readonly ms: number[][];
  constructor(readonly label: string, prompts: number, repeats: number) {
    this.tokens = Array.from({ length: prompts }, () => new Array<number>(repeats).fill(0));
    this.ms = Array.from({ length: prompts }, () => new Array<number>(repeats).fill(0));
  }

  add(s: GenerationStats, prompt: number, repeat: number): void {
    this.runs++;
    this.sum.add(s);
    this.tokens[prompt][repeat] = s.newTokens;
    this.ms[prompt][repeat] = s.ms.total;
  }

  verdict(v: MismatchVerdict, say: (line: string) => void): void {
    if (v.nearTie) this.nearTies++;
    else this.mismatches++;
    if (this.verdicts.length < 10) this.verdicts.push(v);
    say(`${this.label}: ${v.nearTie ? 'near-tie' : 'MISMATCH'} at token ${v.position}: plain ${v.plainToken}, speculative ${v.specToken}, logit gap ${v.logitGap.toExponential(2)}`);
  }

  /** Tokens/s of each repeat over all prompts. */
  perRepeat(): number[] {
    const R = this.tokens[0].length;
    return Array.from({ length: R }, (_, r) => {
      let t = 0, ms = 0;
      for (let p = 0; p < this.tokens.length; p++) (t += this.tokens[p][r]), (ms += this.ms[p][r]);
      return ms > 0 ? (t * 1000) / ms : 0;
    });
  }

  result(ar: Totals | null): MethodResult {
    const j = this.sum.toJSON(), mine = this.perRepeat(), base = ar?.perRepeat() ?? mine;
    const tokensPerSecond = spread(mine);
    const perPrompt = this.tokens.map((ts, p) => spread(ts.map((t, r) => (this.ms[p][r] > 0 ? (t * 1000) / this.ms[p][r] : 0))));
    return {
      label: this.label, runs: this.runs, newTokens: j.newTokens, wallMs: j.wallMs, tokensPerSecond, perPrompt,
      speedup: tokensPerSecond.median / spread(base).median,
      speedupSpread: spread(mine.map((x, r) => x / base[r])),
      tau: this.sum.tau, meanDepth: j.meanDepth, rounds: j.rounds, draftPasses: j.draftPasses, targetPasses: j.targetPasses,
      acceptedHistogram: j.acceptedHistogram, ...(j.exitLayerHistogram ? { exitLayerHistogram: j.exitLayerHistogram } : {}), timeMs: j.timeMs, nearTies: this.nearTies, mismatches: this.mismatches, verdicts: this.verdicts,
    };
  }
}

/** 1 when some policy produced a real mismatch (the CLI's exit code), else 0. */
export const comparisonExitCode = (c: Comparison): number => (c.lossless ? 0 : 1);

/** The comparison as a Markdown table, plain decoding first. */
export function comparisonMarkdown(c: Comparison): string {
  const pct = (x: number, m: MethodResult) => (m.wallMs > 0 ? `${Math.round((100 * x) / m.wallMs)}%` : '-');
  const lossless = (m: MethodResult) =>
    m === c.ar ? '(reference)' : m.mismatches > 0 ? `NO (${m.mismatches} runs differ)` : m.nearTies > 0 ? `yes (${m.nearTies} near-ties)` : 'yes';
  const rows = [c.ar, ...c.policies].map((m) => {
    const t = m.tokensPerSecond, s = m.speedupSpread;
    return `| ${m.label} | ${t.median.toFixed(1)} | ${t.min.toFixed(1)}-${t.max.toFixed(1)} | ${m.speedup.toFixed(2)}x | ${s.min.toFixed(2)}-${s.max.toFixed(2)}x | ${m.tau.toFixed(2)} | ${m.meanDepth.toFixed(2)} | ${m.draftPasses} | ${m.targetPasses} | ` +
      `${pct(m.timeMs.draft, m)} | ${pct(m.timeMs.verify, m)} | ${pct(m.timeMs.prefill + m.timeMs.policy + m.timeMs.bookkeeping, m)} | ${lossless(m)} |`;
  });
  const g = c.generation, nearTies = c.policies.reduce((a, m) => a + m.nearTies, 0);
  return [
    `${c.prompts} prompts x ${c.repeats} repeats (after ${c.warmup} warm-up runs), max ${g.maxNewTokens} new tokens, temperature ${g.temperature}, seed ${g.seed}; ` +
      (c.warmPolicies ? 'policies WARM: one instance per method kept its state across all runs (--warm-policies).' : 'fresh policy state every run.'),
    'tokens/s: median over repeats (each repeat: all prompts) and min-max; speedup: ratio of medians, and the min-max of the per-repeat ratios.',
    '',
    '| method | tokens/s | tokens/s min-max | speedup | speedup min-max | tau | mean depth | draft passes | target passes | draft time | verify time | other time | lossless |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ...rows,
    '',
    ...c.policies.filter((m) => m.exitLayerHistogram).map((m) => `${m.label}: rounds per exit layer ${m.exitLayerHistogram!.map((n, e) => (n ? `E${e}:${n}` : '')).filter(Boolean).join(' ')}${m.rounds > m.exitLayerHistogram!.reduce((a, b) => a + b, 0) ? `, plain rounds ${m.rounds - m.exitLayerHistogram!.reduce((a, b) => a + b, 0)}` : ''}.`),
    '',
    !c.lossless
      ? 'NOT LOSSLESS: some policy produced different tokens from plain decoding, not explained by a near-tie (see the table and the JSON verdicts).'
      : `Lossless: every policy's output equals plain decoding's on all ${c.prompts * c.repeats} timed runs${nearTies ? `, except ${nearTies} runs that differ at a float32 near-tie (src/generate/near-tie.ts)` : ''}.`,
    '',
  ].join('\n');
}

/** Tokens/s as an SVG chart: svg-plot draws lines, so each method is a bar from 0 to its median and a min-max whisker. */
export function comparisonSvg(c: Comparison): string {
  const methods = [c.ar, ...c.policies];
  return linePlot(
    methods.flatMap((m, i) => [
      { label: `${m.label} ${m.tokensPerSecond.median.toFixed(0)} tok/s (${m.speedup.toFixed(2)}x)`, x: [i, i], y: [0, m.tokensPerSecond.median] },
      { label: `${m.label} min-max`, x: [i + 0.15, i + 0.15], y: [m.tokensPerSecond.min, m.tokensPerSecond.max] },
    ]),
    { title: `tokens/s per method: median over ${c.repeats} repeats, whisker = min-max${c.warmPolicies ? ' (warm policies)' : ''}`, xLabel: 'method (see legend)', yLabel: 'tokens/s' },
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
