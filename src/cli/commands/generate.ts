/** `eaglet generate`: plain or speculative decoding from the command line. */
import { loadGenerator } from '../../api.ts';
import { UsageError } from '../../errors.ts';
import { GENERATION_FLAGS } from '../../generate/options.ts';
import { checkPrompt } from '../../generate/generator.ts';
import { loadModel } from '../../io/load-model.ts';
import { createPolicy, policyFlags, policyNames } from '../../policies/registry.ts';
import type { FlagSpec } from '../flags.ts';
import { MODEL_FLAGS, THREADS_FLAG, TREE_FLAGS, treeFromFlags } from '../common-flags.ts';
import { defineCommand } from '../command.ts';

const FLAGS: FlagSpec[] = [
  ...MODEL_FLAGS,
  { flag: 'prompt', type: 'string', meta: 'TEXT', help: 'prompt text (needs a tokenizer; BOS added if the tokenizer has one)' },
  { flag: 'prompt-ids', type: 'ints', meta: 'IDS', help: 'prompt as token ids, e.g. 1,2,3 (fed as given: no BOS added)' },
  ...GENERATION_FLAGS,
  { flag: 'draft', type: 'string', meta: 'PATH|random', help: 'EAGLE draft head directory, or "random" for an untrained head: enables speculative decoding' },
  { flag: 'spec', type: 'bool', default: true, help: 'speculate when a draft head is given (--no-spec forces plain decoding)' },
  ...TREE_FLAGS,
  { flag: 'policy', type: 'string', meta: 'NAME', help: `draft-length policy: ${policyNames().join(', ')} (NAME-N or NAME:opt=v inline; default: static trees of --depth)` },
  ...policyFlags(),
  THREADS_FLAG,
  { flag: 'json', type: 'bool', help: 'print one JSON object (ids, text, stats) instead of streaming text' },
];

export const generate = defineCommand({
  summary: 'generate text, plain or speculative (--draft)',
  usage: 'Usage: eaglet generate --model PATH (--prompt TEXT | --prompt-ids IDS) [flags]',
  description: 'Generates a continuation. With --draft, drafts EAGLE-2 token trees and verifies them in one\ntarget pass per round: the output is exactly what plain decoding gives (same seed, same tokens).',
  flags: FLAGS,
  async run(f) {
    if (!f.model) throw new UsageError('--model', 'is required (an HF checkpoint directory or a llama2.c .bin)');
    if ((f.prompt === undefined) === (f.promptIds === undefined)) throw new UsageError('--prompt', 'give exactly one of --prompt or --prompt-ids');
    if (f.prompt === '') throw new UsageError('--prompt', 'is empty');
    const model = await loadModel(f.model as string);
    const tree = treeFromFlags(f);
    const spec = f.spec && f.draft !== undefined;
    if (f.policy !== undefined && !spec) throw new UsageError('--policy', 'needs a draft head (--draft) and speculation on');
    const g = await loadGenerator({
      model,
      policy: spec && f.policy !== undefined ? createPolicy(f.policy as string, { tree, target: model }, f) : undefined,
      tokenizer: f.tokenizer as string | undefined,
      draft: f.spec ? (f.draft as string | undefined) : undefined,
      tree,
      threads: f.threads as number,
    });
    try {
      if (f.prompt !== undefined && !g.tokenizer) throw new UsageError('--prompt', 'this model has no tokenizer beside it: pass --tokenizer, or use --prompt-ids');
      const prompt = (f.promptIds as number[] | undefined) ?? g.encode(f.prompt as string);
      checkPrompt(prompt, g.model.config, f.promptIds ? '--prompt-ids' : '--prompt');
      const opts = {
        maxNewTokens: f.maxNewTokens as number, temperature: f.temperature as number, topK: f.topK as number,
        topP: f.topP as number, seed: f.seed as number, stopAtEos: f.stopAtEos as boolean,
      };
      const ids: number[] = [];
      const it = g.stream(prompt, opts);
      let r = await it.next();
      for (; !r.done; r = await it.next()) {
        ids.push(...r.value.ids);
        if (!f.json) process.stdout.write(g.tokenizer ? r.value.text : r.value.ids.map((t) => `${t} `).join(''));
      }
      const stats = r.value.toJSON();
      if (f.json) {
        process.stdout.write(JSON.stringify({ ids, text: g.tokenizer?.decode(ids), stats }) + '\n');
      } else {
        const mode = g.generator.parts.drafter ? `speculative, tau ${stats.tau.toFixed(2)}` : 'plain';
        if (stats.stopReason === 'context') process.stderr.write(`\n[stopped: reached the model's context length of ${g.model.config.maxSeqLen} tokens]`);
        process.stdout.write(`\n\n[${stats.newTokens} tokens in ${(stats.wallMs / 1000).toFixed(2)} s, ${stats.tokensPerSecond.toFixed(1)} tok/s, ${mode}, ${stats.targetPasses} target passes, stop: ${stats.stopReason}]\n`);
      }
    } finally {
      await g.dispose();
    }
  },
});
