import * as ort from 'onnxruntime-node';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { GraphBuilder } from '../src/onnx/graph.ts';
import { OnnxOps } from '../src/onnx/ops.ts';
import { createSession } from '../src/runtime/ort.ts';
import { median } from '../src/util/stats.ts';
const P = Number(process.argv[2] ?? 4000), threads = Number(process.argv[3] ?? 1), rounds = Number(process.argv[4] ?? 200), prof = process.argv[5] === 'prof';
const L = 8, nKv = 8, hd = 64, nH = 8, W = nH * hd, S = 4160;
const layout = { nHeads: nH, nKvHeads: nKv, headDim: hd };
const rnd = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 0.5);
const gs = new GraphBuilder('split');
const ops = new OnnxOps(gs, () => undefined, 8192, 'split', { valueLayout: 'transposed' });
const q = gs.input('q', 'float32', [1, W]), k = gs.input('k', 'float32', [1, W]), v = gs.input('v', 'float32', [1, W]), mask = gs.input('mask', 'float32', [1, 'S1']);
let acc = '';
for (let l = 0; l < L; l++) {
  const keys = gs.input(`pk${l}`, 'float32', [1, nKv, hd, 'S']), values = gs.input(`pv${l}`, 'float32', [1, nKv, hd, 'S']);
  const y = ops.attention(acc ? gs.op('Add', [q, acc]) : q, k, v, { keys, values }, mask, layout);
  acc = y;
}
gs.output(acc, 'y', 'float32', [1, W]);
const prefix = `/tmp/kv8/attnprof-${process.pid}`;
const ss = await createSession(gs.toModel({ opset: 23, irVersion: 11 }), { threads, ...(prof ? { profile: prefix } : {}) });
const kT = Array.from({ length: L }, () => rnd(nKv * hd * S)), vT = Array.from({ length: L }, () => rnd(nKv * hd * S));
const m = new Float32Array(S + 1).fill(-1e30); for (let i = 0; i < P; i++) m[i] = 0; m[S] = 0;
const sf: Record<string, ort.Tensor> = { q: new ort.Tensor('float32', rnd(W), [1, W]), k: new ort.Tensor('float32', rnd(W), [1, W]), v: new ort.Tensor('float32', rnd(W), [1, W]), mask: new ort.Tensor('float32', m, [1, S + 1]) };
for (let l = 0; l < L; l++) (sf[`pk${l}`] = new ort.Tensor('float32', kT[l], [1, nKv, hd, S])), (sf[`pv${l}`] = new ort.Tensor('float32', vT[l], [1, nKv, hd, S]));
const ts: number[] = [];
for (let r = -20; r < rounds; r++) { const t0 = performance.now(); await ss.inner.run(sf); if (r >= 0) ts.push(performance.now() - t0); }
console.log(`P=${P} threads=${threads}: split attention x8 ${median(ts).toFixed(3)} ms (${Math.min(...ts).toFixed(3)}-${Math.max(...ts).toFixed(3)})`);
if (prof) {
  ss.inner.endProfiling();
  const file = readdirSync('/tmp/kv8').map((n) => `/tmp/kv8/${n}`).find((n) => n.startsWith(prefix))!;
  const ev = JSON.parse(readFileSync(file, 'utf8')) as any[]; rmSync(file);
  const runs = ev.filter((e) => e.cat === 'Session' && e.name === 'model_run').sort((a, b) => a.ts - b.ts).slice(-rounds);
  const ks = ev.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time') && e.ts >= runs[0].ts);
  const by = new Map<string, [number, number]>();
  for (const e of ks) { const o = e.args?.op_name; const c = by.get(o) ?? [0, 0]; c[0] += e.dur / rounds / 1000; c[1] += 1 / rounds; by.set(o, c); }
  console.log(`run ${(runs.reduce((a, e) => a + e.dur, 0) / rounds / 1000).toFixed(3)} ms, kernels ${([...by.values()].reduce((a, c) => a + c[0], 0)).toFixed(3)}`);
  for (const [o, [ms, n]] of [...by].sort((a, b) => b[1][0] - a[1][0])) console.log(`  ${o.padEnd(14)} ${ms.toFixed(3)} ms  ${n} nodes  ${(1000 * ms / n).toFixed(1)} us/node`);
}
