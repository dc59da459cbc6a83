/**
 * Quantized-target kernels on a random-weight 100M target (cost only; or --model's checkpoint): the
 * plain decoding step (one T = 1 pass over a 64-token prefix) and a --verify-token verification pass (default 4), per rendering of the
 * Linear layers, in one process, interleaved repeat by repeat:
 *
 *   fp32        Gemm over fp32 weights
 *   nbits-qB    com.microsoft MatMulNBits, int8 activations (accuracy_level 4, the default)
 *   ...-bN      any of the quantized renderings with blocks of at most N weights (default: --quantize's)
 *   ...@A       any of them with attention rendered as A = split | fused (default: the model's default)
 *   nbits0-qB   MatMulNBits with fp32 activations (accuracy_level 0)
 *   dq-qB       blockwise DequantizeLinear then Gemm (standard ops)
 *
 * Prints medians with [min, max] over the repeats.
 *
 *   node --import tsx scripts/bench-quant.ts [-- --threads 1,2 --variants fp32,nbits-q4,nbits-q4-b32,dq-q4 --repeats 7 --verify 5 --model DIR --json out.json]
 */
import { writeFileAtomic } from '../src/io/atomic.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { QUANT } from '../src/model/quantize.ts';
import type { OnnxOpsOptions } from '../src/onnx/ops.ts';
import { randomWeights } from '../src/model/random.ts';
import { loadHfCheckpoint } from '../src/io/hf.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { TargetSession } from '../src/runtime/target.ts';
import { SIZES } from './runtime-sizes.ts';
import { median } from '../src/util/stats.ts';
import { UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'threads', type: 'string', default: '1,2', help: 'ORT intra-op thread counts to run' },
  { flag: 'variants', type: 'string', default: 'fp32,nbits-q8,nbits-q4,nbits0-q4,dq-q8,dq-q4', help: 'renderings to compare' },
  { flag: 'repeats', type: 'int', min: 3, default: 7, help: 'interleaved timed repeats (after one warm-up)' },
  { flag: 'passes', type: 'int', min: 1, default: 20, help: 'passes per timed repeat' },
  { flag: 'verify', type: 'int', min: 2, default: 4, help: 'tokens of the verification pass' },
  { flag: 'model', type: 'string', help: 'an HF checkpoint directory to measure instead of the random 100M target' },
  { flag: 'json', type: 'string', help: 'also write results here' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const { config: cfg, weights } = f.model ? loadHfCheckpoint(f.model as string) : { config: SIZES['100M'], weights: randomWeights(SIZES['100M'], 1, 3) };
const PREFIX = 64, repeats = f.repeats as number, passes = f.passes as number, V = f.verify as number;

function optionsOf(variant: string): OnnxOpsOptions['quantize'] {
  const v = variant.split('@')[0];
  if (v === 'fp32') return undefined;
  const m = /^(nbits0?|dq)-q(4|8)(?:-b(16|32|64|128))?$/.exec(v);
  if (!m) throw new UsageError('--variants', `${v} is not fp32, nbits-qB, nbits0-qB or dq-qB (optionally -bN, N = 16|32|64|128)`);
  const q = QUANT[`q${m[2]}` as 'q4' | 'q8'];
  return { ...q, blockSize: m[3] ? Number(m[3]) : q.blockSize, accuracyLevel: m[1] === 'nbits0' ? 0 : 4, kernel: m[1] === 'dq' ? 'dq' : 'nbits' };
}

const results: Record<string, unknown>[] = [];
for (const threads of String(f.threads).split(',').map(Number)) {
  const variants: { v: string; s: TargetSession; cache: KVCache; loadMs: number; step: number[]; verify: number[] }[] = [];
  for (const v of String(f.variants).split(',')) {
    const t0 = performance.now();
    const attention = v.split('@')[1];
    if (attention !== undefined && attention !== 'split' && attention !== 'fused') throw new UsageError('--variants', `${v}: attention ${attention} is not split or fused`);
    const s = await TargetSession.create(cfg, weights, { threads, quantize: optionsOf(v), attention });
    const cache = new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen);
    const prefix = Array.from({ length: PREFIX }, (_, i) => (i * 7) % cfg.vocabSize);
    const o = await s.forward(cache, prefix, prefix.map((_, i) => i), undefined, { logits: false });
    cache.append(o.newKeys, o.newValues, PREFIX);
    variants.push({ v, s, cache, loadMs: performance.now() - t0, step: [] as number[], verify: [] as number[] });
  }
  for (let r = -1; r < repeats; r++) {
    for (const x of variants) {
      const time = async (T: number) => {
        const ids = Array.from({ length: T }, (_, i) => i + 1), pos = ids.map((_, i) => PREFIX + i);
        const t0 = performance.now();
        for (let p = 0; p < passes; p++) await x.s.forward(x.cache, ids, pos, undefined, { logits: false });
        return (performance.now() - t0) / passes;
      };
      const step = await time(1), verify = await time(V);
      if (r >= 0) (x.step.push(step), x.verify.push(verify));
    }
  }
  for (const x of variants) {
    const row = { threads, variant: x.v, stepMs: median(x.step), stepRange: [Math.min(...x.step), Math.max(...x.step)], verifyMs: median(x.verify), verifyRange: [Math.min(...x.verify), Math.max(...x.verify)], sessionMs: x.loadMs };
    results.push(row);
    console.log(`${threads} thr  ${x.v.padEnd(10)} step ${row.stepMs.toFixed(2)} ms [${row.stepRange.map((n) => n.toFixed(2)).join(', ')}]  verify${V} ${row.verifyMs.toFixed(2)} ms [${row.verifyRange.map((n) => n.toFixed(2)).join(', ')}]  session ${x.loadMs.toFixed(0)} ms`);
    await x.s.dispose();
  }
}
if (f.json) writeFileAtomic(String(f.json), JSON.stringify({ model: f.model ?? 'random 100M', config: cfg, repeats, passes, verifyTokens: V, results }, null, 2) + '\n');
