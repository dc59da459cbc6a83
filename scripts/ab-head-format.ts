/**
 * Fused chain rounds with the draft head in several weight formats (or round sessions with ORT
 * config entries), raced in one process against plain decoding on one quantized target: each
 * variant is its own round session over the same target and head, and every prompt runs plain
 * decoding and each variant back to back, the order reversed on alternate prompts. Per variant:
 * tau, ms per round (decode only, after the prefill) in plain steps, and the decode-only
 * tokens/s ratio to plain decoding, median (min-max) over the repeats. Every output is checked
 * equal to plain decoding's. A variant listed twice brackets the run's drift.
 *
 * Variants (the head's Linear weights; the target keeps --quantize's format):
 *   q8, q4, q8-b64, q4-b32, ...   every head Linear in that format (blocks of 128 unless -bN)
 *   mlp4-bN                       the MLP's weights in 4 bits, blocks of N; the rest q8
 *   mlpattn4-bN                   the MLP's and attention's weights in 4 bits; fc (and the
 *                                 LM head) q8
 *   cfg:KEY=VALUE                 the q8 head, with this ORT session config entry on the round
 *                                 session (plain decoding keeps the defaults)
 *
 *   node --import tsx scripts/ab-head-format.ts --model DIR/target --draft DIR/head --prompts data/default/heldout-prompts.jsonl --variants q8,mlpattn4-b32,q4,q8 --threads 2
 */
import { loadModel } from '../src/load-model.ts';
import { DRAFT_QUANT, quantizedModel, quantizedTensor, type WeightQuant } from '../src/model/quantize.ts';
import { loadDraftHead } from '../src/io/draft-head-io.ts';
import { TargetSession } from '../src/runtime/target.ts';
import { RoundSession } from '../src/runtime/round.ts';
import { RoundDrafter } from '../src/generate/round-drafter.ts';
import { Generator } from '../src/generate/generator.ts';
import { StaticPolicy } from '../src/policies/policy.ts';
import { readPrompts } from '../src/bench/prompts.ts';
import { textEncoder } from '../src/api.ts';
import type { Weights } from '../src/model/weights.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { median } from '../src/util/stats.ts';
import { UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'model', type: 'string', help: 'target checkpoint directory (required)' },
  { flag: 'draft', type: 'string', help: 'draft head directory (required)' },
  { flag: 'prompts', type: 'string', default: 'data/default/heldout-prompts.jsonl', help: 'prompt file' },
  { flag: 'quantize', type: 'string', choices: ['q8', 'q4'], default: 'q4', help: 'the target\'s weight format' },
  { flag: 'variants', type: 'string', default: 'q8,mlpattn4-b32,q4,q8', help: 'head formats / round session configs (see the header)' },
  { flag: 'depth', type: 'int', min: 1, default: 3, help: 'chain depth D of every round' },
  { flag: 'threads', type: 'int', min: 1, default: 2, help: 'ORT intra-op threads' },
  { flag: 'repeats', type: 'int', min: 1, default: 3, help: 'timed passes over the prompts (after one warm-up pass)' },
  { flag: 'max-prompts', type: 'int', min: 1, default: 8, help: 'use at most this many prompts' },
  { flag: 'max-new-tokens', type: 'int', min: 1, default: 128, help: 'tokens per prompt' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const D = f.depth as number, threads = f.threads as number, repeats = f.repeats as number, maxNewTokens = f.maxNewTokens as number;

/** A variant: which head weights go to 4 bits ahead of loading (the rest in `rest`), and the round session's extra config. */
interface Variant { label: string; rest: WeightQuant; four?: { block: number; attention: boolean }; config?: Record<string, string> }
function parseVariant(v: string): Variant {
  const uniform = /^q(4|8)(?:-b(16|32|64|128))?$/.exec(v), mixed = /^(mlp|mlpattn)4-b(16|32|64|128)$/.exec(v), cfg = /^cfg:([^=]+)=(.+)$/.exec(v);
  if (uniform) return { label: v, rest: { ...DRAFT_QUANT[`q${uniform[1]}` as 'q4' | 'q8'], ...(uniform[2] ? { blockSize: Number(uniform[2]) } : {}) } };
  if (mixed) return { label: v, rest: DRAFT_QUANT.q8, four: { block: Number(mixed[2]), attention: mixed[1] === 'mlpattn' } };
  if (cfg) return { label: v, rest: DRAFT_QUANT.q8, config: { [cfg[1]]: cfg[2] } };
  throw new UsageError('--variants', `${v} is not qB[-bN], mlp4-bN, mlpattn4-bN or cfg:KEY=VALUE (B = 4|8, N = 16|32|64|128)`);
}
const variants = String(f.variants).split(',').map(parseVariant);
if (!f.model || !f.draft) throw new UsageError(f.model ? '--draft' : '--model', f.model ? 'a draft head directory is required' : 'a target checkpoint directory is required');

/** The head's weights with its MLP (and attention) Linear weights quantized to 4 bits ahead: OnnxOps uses them as they are and quantizes the rest as the session's `quantize` says. */
function headWeights(w: Weights, four: NonNullable<Variant['four']>): Weights {
  const out = new Map(w);
  for (const [n, t] of w) if (t.shape.length === 2 && (n.includes('.mlp.') || (four.attention && n.includes('.self_attn.')))) out.set(n, quantizedTensor(t, { bits: 4, blockSize: four.block }));
  return out;
}

const model = quantizedModel(await loadModel(f.model as string), f.quantize as 'q4' | 'q8');
const head = loadDraftHead(f.draft as string, model.config);
const prompts = readPrompts(f.prompts as string, textEncoder(model.tokenizer)).slice(0, f.maxPrompts as number);
const target = await TargetSession.create(model.config, model.weights, { threads });
const methods: { label: string; gen: Generator<TargetSession> }[] = [{ label: 'plain', gen: new Generator({ target }) }];
for (const v of variants) {
  const w = v.four ? headWeights(head.weights, v.four) : head.weights;
  const round = await RoundSession.create(model.config, model.weights, head.config, w, D, { threads, quantize: v.rest, ...(v.config ? { config: v.config } : {}) });
  methods.push({ label: v.label, gen: new Generator({ target, drafter: new RoundDrafter(round, model.config.maxSeqLen), policy: new StaticPolicy(D, D) }) });
}

const acc = methods.map(() => ({ perRepeat: [] as number[], ms: 0, rounds: 0, tokens: 0 }));
const plainIds: string[] = [];
for (let r = -1; r < repeats; r++) {
  const rep = methods.map(() => ({ ms: 0, tokens: 0 }));
  for (let p = 0; p < prompts.length; p++) {
    const order = methods.map((_, i) => i);
    if ((p + r) % 2 !== 0) order.reverse();
    for (const m of order) {
      const it = methods[m].gen.stream(prompts[p], { maxNewTokens, stopAtEos: false });
      const first = await it.next();
      const ids = first.done ? [] : [...first.value.ids];
      const t0 = performance.now(); // decode only: after the prefill's chunk
      let next = await it.next();
      for (; !next.done; next = await it.next()) ids.push(...next.value.ids);
      const ms = performance.now() - t0, st = next.value;
      if (m === 0) plainIds[p] ??= ids.join();
      else if (plainIds[p] !== undefined && ids.join() !== plainIds[p]) throw new Error(`${methods[m].label}: output differs from plain decoding on prompt ${p}`);
      if (r < 0) continue;
      Object.assign(acc[m], { ms: acc[m].ms + ms, rounds: acc[m].rounds + st.rounds, tokens: acc[m].tokens + st.newTokens - 1 });
      rep[m].ms += ms;
      rep[m].tokens += st.newTokens - 1;
    }
  }
  if (r >= 0) rep.forEach((x, m) => acc[m].perRepeat.push(x.tokens / x.ms));
}

const step = acc[0].ms / acc[0].rounds, fmt = (x: number, d = 3) => x.toFixed(d);
console.log(`threads ${threads}, chain ${D}, ${prompts.length} prompts x ${maxNewTokens} tokens, ${repeats} repeats; plain step ${fmt(step)} ms (decode only); every output equal to plain decoding's`);
console.log('| head | tau | round ms | in plain steps | decode tok/s / plain, median (min-max) |');
console.log('| --- | ---: | ---: | ---: | ---: |');
methods.forEach((M, m) => {
  if (m === 0) return;
  const a = acc[m], ratios = a.perRepeat.map((x, i) => x / acc[0].perRepeat[i]), round = a.ms / a.rounds;
  console.log(`| ${M.label} | ${fmt(a.tokens / a.rounds)} | ${fmt(round)} | ${fmt(round / step)} | ${fmt(median(ratios))}x (${fmt(Math.min(...ratios))}-${fmt(Math.max(...ratios))}x) |`);
});
