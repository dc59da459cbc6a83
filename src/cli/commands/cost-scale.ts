/** `eaglet cost-scale`: a trained pair embedded in a larger shape, as a benchmark fixture (src/model/cost-scale.ts). */
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../../errors.ts';
import { DEFAULT_PATHS, defaultParts } from '../../default-model.ts';
import { loadDraftHead, saveDraftHead } from '../../io/draft-head-io.ts';
import { saveHfCheckpoint } from '../../io/hf.ts';
import { loadModel } from '../../load-model.ts';
import { loadPredictor, savePredictor } from '../../io/predictor-io.ts';
import { writeFileAtomic } from '../../io/atomic.ts';
import { parameterCount } from '../../model/config.ts';
import { quantOf } from '../../model/quantize.ts';
import { scaleHead, scaleMlpInput, scaleProblem, scaleTarget, type ScaleShape } from '../../model/cost-scale.ts';
import type { FlagSpec } from '../../option-schema.ts';
import { requireFlags } from '../common-flags.ts';
import { defineCommand } from '../command.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'model', type: 'string', meta: 'PATH', help: 'target: HF checkpoint directory or llama2.c .bin (default: the embedded default)' },
  { flag: 'draft', type: 'string', meta: 'PATH', help: 'its EAGLE draft head directory (default: the embedded default\'s)' },
  { flag: 'ldlp', type: 'string', meta: 'PATH', help: 'a trained LDLP of the pair, rewired too (default: the embedded default\'s when --model is not given)' },
  { flag: 'dim', type: 'int', min: 1, default: 768, meta: 'D', help: 'scaled width (a multiple of the head width; heads are added)' },
  { flag: 'layers', type: 'int', min: 1, default: 12, meta: 'L', help: 'scaled number of layers (extra layers are exact identities)' },
  { flag: 'intermediate', type: 'int', min: 1, default: 2816, meta: 'I', help: 'scaled SwiGLU width (extra units contribute 0); the defaults make the default pair a 100M-parameter fixture' },
  { flag: 'out', type: 'string', meta: 'DIR', help: 'writes DIR/target, DIR/head (and DIR/ldlp) (required)' },
];

const FIXTURE_NOTE = (src: string, shape: ScaleShape, params: number) => `# Cost-scaled benchmark fixture (not a model)

Made by \`eaglet cost-scale\` from ${src}: the trained pair embedded in a larger shape
(width ${shape.dim}, ${shape.nLayers} layers, SwiGLU width ${shape.hiddenDim}, ${(params / 1e6).toFixed(1)}M parameters).
Every extra head, unit and layer is exactly zero, so greedy output equals the original pair's
while every pass costs what a model of this shape costs. Use it to measure speculative decoding
in the memory-bound regime with real acceptance; it knows nothing the small pair does not.
`;

export const costScale = defineCommand({
  summary: 'embed a trained pair in a larger shape: a benchmark fixture with real acceptance',
  usage: 'Usage: eaglet cost-scale [--model PATH --draft PATH] [--dim D --layers L --intermediate I] --out DIR',
  description: `Writes DIR/target and DIR/head (and DIR/ldlp): the trained target and draft head embedded
in a larger shape (head width kept, heads added; zero-padded weights, RMSNorm weights and eps
rescaled so each norm of the padded vector equals the original's; extra heads, units and layers
contribute exactly zero). Greedy output equals the original pair's while every pass costs what a
model of the larger shape costs. A BENCHMARK FIXTURE, NOT A MODEL: it measures speculation in the
memory-bound regime with real acceptance. The vocabulary is kept.`,
  flags: FLAGS,
  async run(f) {
    requireFlags(f, ['out']);
    const useDefault = f.model === undefined;
    if (useDefault && !defaultParts().draft) throw new UsageError('--model', 'no model given and the embedded default pair is missing');
    if (!useDefault && f.draft === undefined) throw new UsageError('--draft', 'is required with --model');
    const modelPath = (f.model as string | undefined) ?? DEFAULT_PATHS.target;
    const draftPath = (f.draft as string | undefined) ?? DEFAULT_PATHS.draft;
    const ldlpPath = (f.ldlp as string | undefined) ?? (useDefault && defaultParts().ldlp ? DEFAULT_PATHS.ldlp : undefined);
    const shape: ScaleShape = { dim: f.dim as number, nLayers: f.layers as number, hiddenDim: f.intermediate as number };

    const model = await loadModel(modelPath);
    if (quantOf(model.config, model.weights)) throw new UsageError('--model', `${modelPath} is a quantized checkpoint: cost-scale an fp32 one, then quantize the result`);
    const problem = scaleProblem(model.config, shape);
    if (problem) {
      const flag = /^--[a-z]+/.exec(problem)?.[0];
      throw new UsageError(flag ?? '--dim', flag ? problem.slice(flag.length + 1) : problem);
    }
    const head = loadDraftHead(draftPath, model.config);
    const target = scaleTarget(model.config, model.weights, shape);
    const scaledHead = scaleHead(head.config, head.weights, model.config, shape);

    const out = f.out as string;
    mkdirSync(out, { recursive: true });
    const fixture = { 'eaglet.fixture': 'cost-scale', 'eaglet.source': modelPath };
    saveHfCheckpoint(join(out, 'target'), target.config, target.weights);
    if (model.source === 'hf') for (const file of ['tokenizer.json', 'tokenizer_config.json'])
      if (existsSync(join(modelPath, file))) copyFileSync(join(modelPath, file), join(out, 'target', file));
    saveDraftHead(join(out, 'head'), scaledHead, fixture);
    const written = [join(out, 'target'), join(out, 'head')];
    if (ldlpPath !== undefined) {
      const p = loadPredictor(ldlpPath, 'ldlp', model.config, 1);
      const mlp = scaleMlpInput(p.config.mlp, p.weights, model.config.dim, shape.dim);
      savePredictor(join(out, 'ldlp'), { config: { ...p.config, dim: shape.dim, mlp: mlp.config }, weights: mlp.weights }, fixture);
      written.push(join(out, 'ldlp'));
    }
    const params = parameterCount(target.config);
    writeFileAtomic(join(out, 'README.md'), FIXTURE_NOTE(`${modelPath} + ${draftPath}`, shape, params));
    process.stdout.write(`wrote ${written.join(', ')}: ${(params / 1e6).toFixed(1)}M-parameter target (was ${(parameterCount(model.config) / 1e6).toFixed(1)}M), a benchmark fixture with the original's greedy output\n`);
  },
});
