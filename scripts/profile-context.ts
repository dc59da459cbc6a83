/**
 * Where a one-token pass's time goes against context length: ORT's own per-node profile of T = 1
 * passes of a bench:runtime sweep config (random weights, cost only) over a cache filled to each
 * context, summed per op type (ms a pass), beside the pass's wall time. The profiler adds a
 * little per node, so compare contexts with each other, not with bench:runtime's times.
 *
 * `--nodes` also lists the last context's nodes in execution order (op type, median us over the
 * passes, output shapes), one pass's worth: which nodes a layer runs and what each costs.
 *
 *   node --import tsx scripts/profile-context.ts -- --contexts 64,4000 --threads 1
 *   node --import tsx scripts/profile-context.ts -- --contexts 4000 --threads 2 --nodes
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomWeights } from '../src/model/random.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { TargetSession } from '../src/runtime/target.ts';
import { valueLayoutFor, type AttentionMode } from '../src/onnx/ops.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { THREADS_FLAG } from '../src/cli/common-flags.ts';
import { sizeNamed, SWEEP } from './runtime-sizes.ts';
import { median } from '../src/util/stats.ts';
import { UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'sweep', type: 'string', default: '29M', help: `config (${Object.keys(SWEEP)})` },
  { flag: 'contexts', type: 'string', default: '64,4000', help: 'context lengths' },
  { flag: 'attention', type: 'string', default: 'split', help: 'split or fused (values in its default layout)' },
  { flag: 'passes', type: 'int', min: 1, default: 30, help: 'profiled passes per context (after 5 warm-ups)' },
  { flag: 'nodes', type: 'bool', default: false, help: "also list the last context's nodes in execution order" },
  THREADS_FLAG,
];
const f = scriptFlags(import.meta.url, FLAGS);
const cfg = sizeNamed(SWEEP, String(f.sweep), '--sweep'), threads = f.threads as number | undefined, passes = f.passes as number;
const attention = String(f.attention) as AttentionMode;
if (attention !== 'split' && attention !== 'fused') throw new UsageError('--attention', `${attention} is not split or fused`);
const valueLayout = valueLayoutFor(attention);
const weights = randomWeights(cfg, 1, 1), rowSize = cfg.nKvHeads * cfg.headDim;
const chunk = Float32Array.from({ length: 64 * rowSize }, (_, i) => Math.sin(i)), rows = Array(cfg.nLayers).fill(chunk);
const byContext: { P: number; wall: number; run: number; kernels: number; nodes: number; ops: Map<string, number> }[] = [];
/** The last context's nodes by name, in execution order: op type, each pass's us, output shapes. */
let nodeList = new Map<string, { op: string; us: number[]; shapes: string }>();
for (const P of String(f.contexts).split(',').map(Number)) {
  if (!Number.isInteger(P) || P < 1 || P + 1 > cfg.maxSeqLen) throw new UsageError('--contexts', `${P} is not a context length in [1, ${cfg.maxSeqLen - 1}]`);
  const prefix = join(tmpdir(), `eaglet-profile-context-${process.pid}-${P}`);
  const s = await TargetSession.create(cfg, weights, { threads, attention, valueLayout, maxTokens: 1, profile: prefix });
  const cache = new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen).useValueLayout(valueLayout);
  while (cache.length < P) cache.append(rows, rows, Math.min(64, P - cache.length));
  const pass = () => s.forward(cache, [5], [P], undefined, { logits: false });
  for (let i = 0; i < 5; i++) await pass();
  const wall: number[] = [];
  for (let i = 0; i < passes; i++) {
    const t0 = performance.now();
    await pass();
    wall.push(performance.now() - t0);
  }
  s.endProfiling();
  await s.dispose();
  const file = readdirSync(tmpdir()).map((n) => join(tmpdir(), n)).find((n) => n.startsWith(prefix) && n.endsWith('.json'));
  if (!file) throw new Error(`ORT wrote no profile starting with ${prefix}`);
  const events = JSON.parse(readFileSync(file, 'utf8')) as { cat: string; name: string; ts: number; dur: number; args?: { op_name?: string; output_type_shape?: unknown } }[];
  rmSync(file);
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').sort((a, b) => a.ts - b.ts).slice(-passes);
  const kernels = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time') && e.ts >= runs[0].ts);
  const ops = new Map<string, number>();
  for (const e of kernels) ops.set(e.args?.op_name ?? '?', (ops.get(e.args?.op_name ?? '?') ?? 0) + e.dur / passes / 1000);
  nodeList = new Map();
  for (const e of kernels) {
    const name = e.name.replace(/_kernel_time$/, '');
    const n = nodeList.get(name) ?? { op: e.args?.op_name ?? '?', us: [], shapes: JSON.stringify(e.args?.output_type_shape ?? []) };
    n.us.push(e.dur);
    nodeList.set(name, n);
  }
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  byContext.push({ P, wall: median(wall), run: sum(runs.map((e) => e.dur)) / passes / 1000, kernels: sum([...ops.values()]), nodes: kernels.length / passes, ops });
}
const fmt = (x: number) => x.toFixed(3).padStart(7);
console.log(`${String(f.sweep)}, ${attention} attention (values ${valueLayout}), ${threads ?? 'default'} thread(s), ${passes} profiled one-token passes per context; ms a pass`);
console.log(`${'context'.padEnd(30)}${byContext.map((c) => String(c.P).padStart(9)).join('')}`);
console.log(`${'wall (median)'.padEnd(30)}${byContext.map((c) => fmt(c.wall).padStart(9)).join('')}`);
console.log(`${'session.run (profiled)'.padEnd(30)}${byContext.map((c) => fmt(c.run).padStart(9)).join('')}`);
console.log(`${'kernels'.padEnd(30)}${byContext.map((c) => fmt(c.kernels).padStart(9)).join('')}`);
console.log(`${'between kernels'.padEnd(30)}${byContext.map((c) => fmt(c.run - c.kernels).padStart(9)).join('')}`);
console.log(`${'nodes'.padEnd(30)}${byContext.map((c) => String(c.nodes).padStart(9)).join('')}`);
const last = byContext[byContext.length - 1];
for (const op of [...last.ops.keys()].sort((a, b) => last.ops.get(b)! - last.ops.get(a)!))
  console.log(`  ${op.padEnd(28)}${byContext.map((c) => fmt(c.ops.get(op) ?? 0).padStart(9)).join('')}`);
if (f.nodes) {
  console.log(`\nnodes of one pass at context ${last.P}, in execution order: op, median us (profiled), name, output shapes`);
  for (const [name, n] of nodeList) console.log(`  ${n.op.padEnd(34)}${median(n.us).toFixed(0).padStart(6)}  ${name}  ${n.shapes}`);
}
