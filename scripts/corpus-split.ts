/**
 * The train / held-out split of a target corpus (training/target-corpus.ts), for the pipeline
 * steps after target training: prints the files of one split (for `eaglet log --corpus`), or
 * writes token-id prompts cut from it (for `eaglet bench` / `collect-lengths`).
 *
 *   node --import tsx scripts/corpus-split.ts --corpus-dir node_modules/typescript/lib --split train
 *   node --import tsx scripts/corpus-split.ts --corpus-dir ... --split held-out --prompts out.jsonl \
 *        --model data/default/target --prompt-len 32 --count 24
 */
import { join } from 'node:path';
import { readTargetCorpus } from '../training/target-corpus.ts';
import { scriptFlags } from './script-flags.ts';
import { UsageError } from '../src/errors.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import { writeFileAtomic } from '../src/io/atomic.ts';

const f = scriptFlags(import.meta.url, [
  { flag: 'corpus-dir', type: 'string', help: 'corpus directory' },
  { flag: 'held-out', type: 'number', min: 0, max: 1, default: 0.1, help: 'held-out fraction (as in train-target)' },
  { flag: 'split', type: 'string', choices: ['train', 'held-out'], default: 'train', help: 'which split' },
  { flag: 'prompts', type: 'string', help: 'write token-id prompts (.jsonl id arrays, or .ids comma lines) instead of listing files' },
  { flag: 'model', type: 'string', help: 'model directory with tokenizer.json (for --prompts)' },
  { flag: 'prompt-len', type: 'int', min: 1, default: 32, help: 'tokens per prompt' },
  { flag: 'count', type: 'int', min: 1, default: 24, help: 'prompts, spread evenly over the split' },
]);
if (!f.corpusDir) throw new UsageError('--corpus-dir', 'is required');
const corpus = readTargetCorpus(f.corpusDir as string, f.heldOut as number);
const files = f.split === 'train' ? corpus.train : corpus.heldOut;
if (!f.prompts) {
  process.stdout.write(files.map((c) => join(f.corpusDir as string, c.name)).join('\n') + '\n');
} else {
  if (!f.model) throw new UsageError('--model', 'is required with --prompts (its tokenizer cuts the prompts)');
  const tok = loadTokenizer(f.model as string);
  const ids = files.flatMap((c) => tok.encode(c.text));
  const L = f.promptLen as number, n = f.count as number, step = Math.floor((ids.length - L) / n);
  if (step < L) throw new UsageError('--count', `the ${f.split} split holds ${ids.length} tokens: too few for ${n} prompts of ${L}`);
  // .ids: one comma-separated prompt per line (eaglet log / collect-lengths); else JSONL id arrays (eaglet bench).
  const asIds = (f.prompts as string).endsWith('.ids');
  const lines = Array.from({ length: n }, (_, i) => ids.slice(i * step, i * step + L)).map((p) => (asIds ? p.join(',') : JSON.stringify(p)));
  writeFileAtomic(f.prompts as string, lines.join('\n') + '\n');
  process.stderr.write(`wrote ${n} prompts of ${L} tokens from the ${f.split} split (${files.length} files, ${ids.length} tokens) to ${f.prompts}\n`);
}
