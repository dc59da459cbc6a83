// Temporary: 8 layers of one-token attention over a past of P rows: split (OnnxOps) vs GQA (shared past/present buffer).
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../src/onnx/graph.ts';
import { OnnxOps } from '../src/onnx/ops.ts';
import { createSession } from '../src/runtime/ort.ts';
import { median } from '../src/util/stats.ts';
const P = Number(process.argv[2] ?? 4000), threads = Number(process.argv[3] ?? 1), rounds = Number(process.argv[4] ?? 200);
const L = 8, nKv = 8, hd = 64, nH = 8, W = nH * hd, S = 4160, maxS = 4160;
const layout = { nHeads: nH, nKvHeads: nKv, headDim: hd };
const rnd = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 0.5);
const qd = rnd(W), kd = rnd(W), vd = rnd(W);
// split
const gs = new GraphBuilder('split');
const ops = new OnnxOps(gs, () => undefined, 8192, 'split', { valueLayout: 'transposed' });
const q = gs.input('q', 'float32', [1, W]), k = gs.input('k', 'float32', [1, W]), v = gs.input('v', 'float32', [1, W]), mask = gs.input('mask', 'float32', [1, 'S1']);
for (let l = 0; l < L; l++) {
  const keys = gs.input(`pk${l}`, 'float32', [1, nKv, hd, 'S']), values = gs.input(`pv${l}`, 'float32', [1, nKv, hd, 'S']);
  gs.output(ops.attention(q, k, v, { keys, values }, mask, layout), `y${l}`, 'float32', [1, W]);
}
const ss = await createSession(gs.toModel({ opset: 23, irVersion: 11 }), { threads });
const kT = Array.from({ length: L }, () => rnd(nKv * hd * S)), vT = Array.from({ length: L }, () => rnd(nKv * hd * S));
const m = new Float32Array(S + 1).fill(-1e30); for (let i = 0; i < P; i++) m[i] = 0; m[S] = 0;
const sf: Record<string, ort.Tensor> = { q: new ort.Tensor('float32', qd, [1, W]), k: new ort.Tensor('float32', kd, [1, W]), v: new ort.Tensor('float32', vd, [1, W]), mask: new ort.Tensor('float32', m, [1, S + 1]) };
for (let l = 0; l < L; l++) (sf[`pk${l}`] = new ort.Tensor('float32', kT[l], [1, nKv, hd, S])), (sf[`pv${l}`] = new ort.Tensor('float32', vT[l], [1, nKv, hd, S]));
// gqa
const gg = new GraphBuilder('gqa');
const q3 = gg.input('q', 'float32', [1, 1, W]), k3 = gg.input('k', 'float32', [1, 1, W]), v3 = gg.input('v', 'float32', [1, 1, W]);
const sl = gg.input('seqlens_k', 'int32', [1]), tot = gg.input('total', 'int32', []);
for (let l = 0; l < L; l++) {
  const pk = gg.input(`pk${l}`, 'float32', [1, nKv, maxS, hd]), pv = gg.input(`pv${l}`, 'float32', [1, nKv, maxS, hd]);
  const [y] = gg.node('GroupQueryAttention', [q3, k3, v3, pk, pv, sl, tot], { num_heads: nH, kv_num_heads: nKv }, { domain: 'com.microsoft', outputs: [`y${l}`, `prk${l}`, `prv${l}`] });
  gg.output(y, `out${l}`, 'float32', [1, 1, W]);
  gg.output(`prk${l}`, `prk${l}`, 'float32', [1, nKv, maxS, hd]);
  gg.output(`prv${l}`, `prv${l}`, 'float32', [1, nKv, maxS, hd]);
}
const sg = await createSession(gg.toModel({ opset: 23, irVersion: 11 }), { threads });
const kR = Array.from({ length: L }, () => rnd(nKv * hd * maxS)), vR = Array.from({ length: L }, () => rnd(nKv * hd * maxS));
const gf: Record<string, ort.Tensor> = { q: new ort.Tensor('float32', qd, [1, 1, W]), k: new ort.Tensor('float32', kd, [1, 1, W]), v: new ort.Tensor('float32', vd, [1, 1, W]), seqlens_k: new ort.Tensor('int32', Int32Array.from([P]), [1]), total: new ort.Tensor('int32', Int32Array.from([P + 1]), []) };
const fetch: Record<string, ort.Tensor | null> = {};
for (let l = 0; l < L; l++) {
  gf[`pk${l}`] = new ort.Tensor('float32', kR[l], [1, nKv, maxS, hd]); gf[`pv${l}`] = new ort.Tensor('float32', vR[l], [1, nKv, maxS, hd]);
  fetch[`out${l}`] = null; fetch[`prk${l}`] = new ort.Tensor('float32', kR[l], [1, nKv, maxS, hd]); fetch[`prv${l}`] = new ort.Tensor('float32', vR[l], [1, nKv, maxS, hd]);
}
kR[0][P * hd] = 123;
const o = await sg.inner.run(gf, fetch as any);
console.log('shared buffer written in place:', kR[0][P * hd] !== 123, kR[0][P * hd], 'present is same buffer:', (o[`prk0`].data as Float32Array).buffer === kR[0].buffer);
const ts: number[] = [], tg: number[] = [];
for (let r = -20; r < rounds; r++) {
  const order = r % 2 ? ['s', 'g'] : ['g', 's'];
  for (const x of order) {
    const t0 = performance.now();
    if (x === 's') await ss.inner.run(sf); else await sg.inner.run(gf, fetch as any);
    if (r >= 0) (x === 's' ? ts : tg).push(performance.now() - t0);
  }
}
const kvMB = (2 * L * nKv * hd * P * 4) / 1e6;
console.log(`P=${P} threads=${threads}: split ${median(ts).toFixed(3)} ms, gqa ${median(tg).toFixed(3)} ms (K/V ${kvMB.toFixed(1)} MB: split ${(kvMB / median(ts)).toFixed(1)} GB/s, gqa ${(kvMB / median(tg)).toFixed(1)} GB/s)`);
// without preallocated presents
const fetch2: Record<string, ort.Tensor | null> = {}; for (let l = 0; l < L; l++) fetch2[`out${l}`] = null;
const gf2 = { ...gf }; for (let l = 0; l < L; l++) { gf2[`pk${l}`] = new ort.Tensor('float32', kR[l].subarray(0, nKv * hd * P), [1, nKv, P, hd]); gf2[`pv${l}`] = new ort.Tensor('float32', vR[l].subarray(0, nKv * hd * P), [1, nKv, P, hd]); }
const t2: number[] = [];
for (let r = 0; r < 10; r++) { const t0 = performance.now(); await sg.inner.run(gf2, fetch2 as any); t2.push(performance.now() - t0); }
console.log(`gqa, past of P rows, presents not fetched: ${median(t2).toFixed(3)} ms`);
