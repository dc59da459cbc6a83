/** `eaglet quantize`: a target checkpoint with its Linear weights and embedding table stored 8- or 4-bit (src/io/quantized-checkpoint.ts). */
import { copyFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../../errors.ts';
import { toHfConfig } from '../../io/hf.ts';
import { loadModel } from '../../load-model.ts';
import { saveQuantizedCheckpoint } from '../../io/quantized-checkpoint.ts';
import { readJsonFile } from '../../io/read.ts';
import { QUANT, quantizeTarget, quantOf } from '../../model/quantize.ts';
import type { FlagSpec } from '../../option-schema.ts';
import { requireFlags } from '../common-flags.ts';
import { defineCommand } from '../command.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'model', type: 'string', meta: 'PATH', help: 'target: HF checkpoint directory or llama2.c .bin (required)' },
  { flag: 'bits', type: 'string', choices: ['4', '8'], meta: '4|8', help: 'bits per weight (required)' },
  { flag: 'block-size', type: 'int', min: 0, max: 4096, default: 0, meta: 'B', help: 'weights per scale along the input axis, a power of two >= 16 (smaller: more accurate, more bytes); 0 = --quantize\'s: 128 at 4 bits, 32 at 8 (a target\'s graphs feed the kernels of blocks above 32 / 64 even row counts, so a row scores alike in a plain step and in verification)' },
  { flag: 'out', type: 'string', meta: 'DIR', help: 'the quantized checkpoint directory to write (required)' },
];

export const quantize = defineCommand({
  summary: 'write a target with 8- or 4-bit blockwise weights (load it with --model DIR)',
  usage: 'Usage: eaglet quantize --model PATH --bits 4|8 [--block-size B] --out DIR',
  description: `Quantizes every Linear weight of the target (projections; the LM head when untied) and
the token embedding table to 8 or 4 bits per weight with one fp32 scale per block of up to
--block-size weights along the input axis (symmetric, round to nearest), and writes DIR as an
HF-style checkpoint: config.json with an "eaglet_blockwise" quantization_config, model.safetensors
with U8 packed weights and F32 scales (format in docs/performance.md, "Quantized targets"). Norms and biases
stay fp32; a tied LM head reads the quantized embedding table. tokenizer.json,
tokenizer_config.json (the chat template) and generation_config.json are copied.
Loading DIR is the same as loading the original with --quantize q4|q8.`,
  flags: FLAGS,
  async run(f) {
    requireFlags(f, ['model', 'bits', 'out']);
    const src = f.model as string, out = f.out as string;
    const preset = QUANT[f.bits === '4' ? 'q4' : 'q8'], b = (f.blockSize as number) || preset.blockSize;
    if (b < 16 || (b & (b - 1)) !== 0) throw new UsageError('--block-size', `must be a power of two >= 16, got ${b}`);
    const q = { ...preset, blockSize: b };
    const model = await loadModel(src);
    const held = quantOf(model.config, model.weights);
    if (held) throw new UsageError('--model', `${src} is quantized already (${held.bits} bits)`);
    if (existsSync(out) && !statSync(out).isDirectory()) throw new UsageError('--out', `${out} exists and is not a directory`);
    const weights = quantizeTarget(model.config, model.weights, q);
    // Keep the source's own config fields (e.g. its architecture name) when it has a config.json.
    const hfConfig = model.source === 'hf' ? { ...(readJsonFile(join(src, 'config.json')) as Record<string, unknown>), ...toHfConfig(model.config) } : toHfConfig(model.config);
    saveQuantizedCheckpoint(out, model.config, weights, hfConfig);
    if (model.source === 'hf') for (const file of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json'])
      if (existsSync(join(src, file))) copyFileSync(join(src, file), join(out, file));
    const before = model.source === 'hf' ? sizeOf(join(src, 'model.safetensors')) : statSync(src).size;
    const after = statSync(join(out, 'model.safetensors')).size;
    process.stdout.write(`wrote ${out}: ${q.bits}-bit weights, ${mb(after)}${before ? ` (from ${mb(before)})` : ''}${model.source === 'llama2c' ? '; pass --tokenizer with the llama2.c tokenizer.bin when loading it' : ''}\n`);
  },
});

const sizeOf = (p: string): number => (existsSync(p) ? statSync(p).size : 0);
const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
