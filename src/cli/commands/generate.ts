/** `eaglet generate`: plain or speculative decoding from the command line. */
import { loadGenerator } from '../../api.ts';
import { UsageError } from '../../errors.ts';
import { GENERATION_FLAGS, generationOptionsFromFlags } from '../../generate/options.ts';
import { checkPrompt, Generator } from '../../generate/generator.ts';
import { classifyMismatch, type MismatchVerdict } from '../../generate/near-tie.ts';
import type { GenerationOptions } from '../../generate/options.ts';
import type { GenerationStats } from '../../generate/stats.ts';
import type { TargetSession } from '../../runtime/target.ts';
import { TextStreamer } from '../../tokenizer/streamer.ts';
import type { Tokenizer } from '../../tokenizer/tokenizer.ts';
import { createPolicy, policyFlags, policyNames } from '../../policies/registry.ts';
import type { FlagSpec } from '../../option-schema.ts';
import { DRAFT_QUANT_FLAG, NATIVE_MATMUL_FLAG, QUANTIZE_FLAG, quantFromFlags, checkSelfDraftFlags, FUSED_ROUND_FLAG, MODEL_FLAGS, THREADS_FLAG, TREE_FLAGS, treeFromFlags, withTreeFlags } from '../common-flags.ts';
import { defineCommand } from '../command.ts';

const FLAGS: FlagSpec[] = [
  ...MODEL_FLAGS,
  { flag: 'prompt', type: 'string', meta: 'TEXT', help: 'prompt text (needs a tokenizer; BOS added if the tokenizer has one)' },
  { flag: 'prompt-ids', type: 'ints', meta: 'IDS', help: 'prompt as token ids, e.g. 1,2,3 (fed as given: no BOS added)' },
  ...GENERATION_FLAGS,
  { flag: 'draft', type: 'string', meta: 'PATH|random[:N]|self', help: 'EAGLE draft head directory, "random" (random:N: with an N-token draft vocabulary) for an untrained head, or "self" to draft with the target\'s own early layers (DEL: exit layer and length chosen per round): enables speculative decoding' },
  { flag: 'exit-layer', type: 'int', meta: 'E', help: 'self-drafting from the target\'s first E layers every round (static exit, 1..L-1; implies --draft self)' },
  DRAFT_QUANT_FLAG,
  QUANTIZE_FLAG,
  NATIVE_MATMUL_FLAG,
  FUSED_ROUND_FLAG,
  { flag: 'spec', type: 'bool', help: 'speculate when a draft head is given (the default; --no-spec forces plain decoding)' },
  ...TREE_FLAGS,
  { flag: 'policy', type: 'string', meta: 'NAME', help: `draft-length policy: ${policyNames().join(', ')} (NAME-N or NAME:opt=v inline; default: static trees of --depth, or the policy of a tuning file beside the head; the embedded pair: its whole chain on the fused round (static at --depth, 3 unless given), ldlp+threshold with its LDLP with --no-fused-round)` },
  ...policyFlags(),
  THREADS_FLAG,
  { flag: 'ldlp', type: 'string', meta: 'PATH', help: 'trained LDLP directory: predicts each round\'s depth (same as --policy ldlp --ldlp-path PATH)' },
  { flag: 'show-drafts', type: 'bool', help: 'colour tokens: green = drafted and accepted, plain = the target\'s own (on a terminal, unless NO_COLOR is set)' },
  { flag: 'json', type: 'bool', help: 'print one JSON object (ids, text, stats) instead of streaming text' },
  { flag: 'compare', type: 'bool', help: 'then run plain decoding on the same prompt in this process and print the measured speed ratio (--json: stats.compare)' },
];

/** Token ids as text, for --show-drafts on a model without a tokenizer. */
const idsAsText = { decode: (ids: readonly number[]) => ids.map((t) => `${t} `).join('') } as Tokenizer;

/** Colour only for a terminal, and never when NO_COLOR is set (https://no-color.org). */
export const useColour = (stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv): boolean => Boolean(stream.isTTY) && !env.NO_COLOR;

/** Green for drafted-and-accepted text. */
const paint = (text: string, fromDraft: boolean) => (fromDraft && text ? `\x1b[32m${text}\x1b[0m` : text);

export const generate = defineCommand({
  summary: 'generate text, plain or speculative (--draft)',
  usage: 'Usage: eaglet generate [--model PATH] (--prompt TEXT | --prompt-ids IDS) [flags]',
  description: `Generates a continuation. With a draft head, drafts EAGLE-2 token trees and verifies each in one
target pass. Every token is a draw from the target's own distribution (lossless in distribution);
with the same seed the ids equal plain decoding's except where float32 rounding between the
one-token and the tree pass decides a near-tie (see README, "What holds").
Without --model it uses the embedded default (data/default): its target and draft head, and its LDLP
with --no-fused-round.`,
  flags: FLAGS,
  policyFlag: '--policy',
  async run(f) {
    if ((f.prompt === undefined) === (f.promptIds === undefined)) throw new UsageError('--prompt', 'give exactly one of --prompt or --prompt-ids');
    if (f.prompt === '') throw new UsageError('--prompt', 'is empty');
    const tree = treeFromFlags(f);
    const draft = f.spec === false ? null : (f.draft as string | undefined); // undefined: the default's head, if any
    const exitLayer = f.spec === false ? undefined : (f.exitLayer as number | undefined);
    checkSelfDraftFlags(f);
    // Options that only mean something while speculating: without a head they would silently decode plainly.
    const noHead = draft === null || (f.model !== undefined && draft === undefined && exitLayer === undefined);
    for (const [flag, given] of [['--policy', f.policy !== undefined], ['--ldlp', f.ldlp !== undefined], ['--spec', f.spec === true]] as const) {
      if (given && noHead) throw new UsageError(flag, draft === null ? 'contradicts --no-spec' : 'needs a draft head (--draft DIR, random or self)');
    }
    const g = await withTreeFlags(f, () => loadGenerator({
      model: f.model as string | undefined,
      policy: f.policy !== undefined ? ({ model, tree: shape }) => createPolicy(f.policy as string, { tree: shape, target: model, nLayers: model.config.nLayers }, f) : undefined,
      exitLayer,
      tokenizer: f.tokenizer as string | undefined,
      draft,
      ldlp: f.ldlp as string | undefined,
      tree,
      threads: f.threads as number,
      ...quantFromFlags(f),
      fusedRound: (f.fusedRound as boolean | undefined) ?? 'auto',
    }));
    for (const note of g.notes) process.stderr.write(`${note}\n`);
    try {
      if (f.prompt !== undefined && !g.tokenizer) throw new UsageError('--prompt', 'this model has no tokenizer beside it: pass --tokenizer, or use --prompt-ids');
      const prompt = (f.promptIds as number[] | undefined) ?? g.encode(f.prompt as string);
      // Text the tokenizer turned into ids the model does not have: the tokenizer is the wrong one.
      checkPrompt(prompt, g.model.config, f.promptIds ? '--prompt-ids' : f.tokenizer !== undefined ? '--tokenizer' : '--prompt');
      const opts = generationOptionsFromFlags(f);
      const ids: number[] = [];
      const colour = f.showDrafts && !f.json && useColour(process.stdout, process.env) ? new TextStreamer(g.tokenizer ?? idsAsText) : undefined;
      if (f.showDrafts && !colour && !f.json) process.stderr.write('[--show-drafts: no colour, since stdout is not a terminal or NO_COLOR is set]\n');
      const it = g.stream(prompt, opts);
      let r = await it.next();
      for (; !r.done; r = await it.next()) {
        const { ids: chunk, fromDraft, text } = r.value;
        ids.push(...chunk);
        if (f.json) continue;
        if (colour) chunk.forEach((id, i) => process.stdout.write(paint(colour.push(id), fromDraft[i])));
        else process.stdout.write(g.tokenizer ? text : chunk.map((t) => `${t} `).join(''));
      }
      if (colour) process.stdout.write(colour.flush());
      const stats: ReturnType<GenerationStats['toJSON']> & { compare?: Comparison } = r.value.toJSON();
      if (f.compare) stats.compare = await comparePlain(g.generator.parts.target, prompt, ids, stats.tokensPerSecond, opts);
      if (f.json) {
        process.stdout.write(JSON.stringify({ ids, text: g.tokenizer?.decode(ids), stats }) + '\n');
      } else {
        if (stats.stopReason === 'context') process.stderr.write(`\n[stopped: reached the model's context length of ${g.model.config.maxSeqLen} tokens]`);
        // The text alone goes to stdout (pipe it anywhere); the stats lines are for the person watching.
        process.stdout.write('\n');
        process.stderr.write(`\n${statsLine(stats, g.generator.parts.drafter ? g.generator.policy.name : 'plain decoding')}\n`);
        const c = stats.compare;
        if (c) {
          const same = c.verdict === null ? 'same ids' : c.verdict.nearTie ? `ids differ at a float32 near-tie (token ${c.verdict.position})` : `IDS DIFFER at token ${c.verdict.position}`;
          process.stderr.write(`[plain decoding, same prompt and process: ${c.plainTokensPerSecond.toFixed(1)} tok/s; measured ratio ${c.speedup.toFixed(2)}x; ${same}]\n`);
        }
      }
    } finally {
      await g.dispose();
    }
  },
});

/** Only measured things: tokens/s, tau, passes, where the time went. */
export function statsLine(s: ReturnType<GenerationStats['toJSON']>, mode: string): string {
  const t = s.timeMs, pct = (x: number) => `${s.wallMs > 0 ? Math.round((100 * x) / s.wallMs) : 0}%`;
  const spec = s.draftPasses > 0 || mode !== 'plain decoding' ? `, tau ${s.tau.toFixed(2)}, ${s.draftPasses} draft passes` : '';
  return `[${s.newTokens} tokens in ${(s.wallMs / 1000).toFixed(2)} s, ${s.tokensPerSecond.toFixed(1)} tok/s, ${mode}${spec}, ${s.targetPasses} target passes; ` +
    `time: prefill ${pct(t.prefill)}, draft ${pct(t.draft)}, verify ${pct(t.verify)}, other ${pct(t.policy + t.bookkeeping)}; stop: ${s.stopReason}]`;
}

/** What `--compare` measured. */
interface Comparison {
  plainTokensPerSecond: number;
  plainWallMs: number;
  /** This run's tokens/s / plain decoding's, both measured here. */
  speedup: number;
  /** null: plain decoding gave the same ids. */
  verdict: MismatchVerdict | null;
}

/** Plain decoding of the same prompt with the same options on the same target session. */
async function comparePlain(target: TargetSession, prompt: number[], ids: number[], tokensPerSecond: number, opts: GenerationOptions): Promise<Comparison> {
  const plain = await new Generator({ target }).generate(prompt, opts);
  const tps = plain.stats.tokensPerSecond;
  return {
    plainTokensPerSecond: Math.round(tps * 1000) / 1000, plainWallMs: Math.round(plain.stats.ms.total * 1000) / 1000,
    speedup: Math.round((tokensPerSecond / tps) * 1000) / 1000,
    verdict: await classifyMismatch(target, prompt, plain.ids, ids, opts),
  };
}
