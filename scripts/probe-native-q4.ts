/**
 * A probe, not a product change: what a q4 kernel that reads each packed weight block once for
 * all M rows (scripts/native/q4-rows-probe.cc, compiled here with g++) would cost a target's
 * Linear layers at M = 1-4 rows, against ORT's MatMulNBits on the same shapes and bytes, and what
 * that would make of a depth-3 round. Prints Markdown tables.
 *
 * Three measurements, one after the other: (1) the native kernel over every Linear weight of
 * --model (each layer's fused q/k/v, o, fused gate/up and down, and the LM head; quantized by
 * eaglet's own quantizer to q4, blocks of 128), ms per set of matrix-vector products at M rows,
 * 1 and 2 threads, with its check against a float64 reference and a 256 MB read-bandwidth
 * reference; (2) the same quantized weights as a chain of ORT MatMulNBits nodes (int8
 * activations, a Slice where a node's output is wider than the next node's input) at M rows;
 * (3) scripts/bench-quant.ts on the whole target (a step, padded to 2 rows, and a 4-row pass).
 *
 *   node --import tsx scripts/probe-native-q4.ts --model DIR/target [--threads 1,2 --repeats 9]
 *
 * The projection takes a round's cost in plain steps and its tau from an earlier measurement
 * (--round-steps, --tau: docs/performance.md, "The round's cost at q4 (session 18)") and swaps
 * ORT's MatMulNBits row scaling for the kernel's; see `projection` for what it assumes.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { compileNative } from './native-build.ts';
import { loadHfCheckpoint } from '../src/io/hf.ts';
import { QUANT, quantizeWeight } from '../src/model/quantize.ts';
import { EMBEDDING, LM_HEAD, type Tensor } from '../src/model/weights.ts';
import { GraphBuilder } from '../src/onnx/graph.ts';
import { OnnxOps } from '../src/onnx/ops.ts';
import { createSession, f32, releaseSession, runTimed } from '../src/runtime/ort.ts';
import { median } from '../src/util/stats.ts';
import { Rng } from '../src/util/rng.ts';
import { EagletError, UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'model', type: 'string', help: 'the target checkpoint directory (HF layout; its fp32 weights are quantized to q4 here)' },
  { flag: 'threads', type: 'ints', default: [1, 2], help: 'thread counts (native workers and ORT intra-op threads)' },
  { flag: 'repeats', type: 'int', min: 3, default: 9, help: 'interleaved timed repeats (after one warm-up) of each measurement' },
  { flag: 'passes', type: 'int', min: 1, default: 20, help: 'passes per timed repeat' },
  { flag: 'round-steps', type: 'number', default: 1.69, help: "the depth-3 round's cost in plain steps the projection starts from" },
  { flag: 'rows34', type: 'number', default: 0.33, help: "the share of a plain step the round's verifying rows 3-4 cost (ORT)" },
  { flag: 'tau', type: 'number', default: 2.93, help: 'tokens a round the projection assumes' },
  { flag: 'round-threads', type: 'int', min: 1, default: 2, help: 'the thread count --round-steps was measured at (the projection is printed for it only)' },
];
const f = scriptFlags(import.meta.url, FLAGS);
if (!f.model) throw new UsageError('--model', 'required: the target checkpoint directory');
const threadsList = f.threads as number[], repeats = f.repeats as number, passes = f.passes as number;
const ROWS = [1, 2, 3, 4];
const q4 = QUANT.q4;

/** The target's Linear weights as the graphs render them: fused q/k/v and gate/up per layer, then the LM head. */
function linearSet(): { name: string; w: Tensor }[] {
  const { config: c, weights } = loadHfCheckpoint(String(f.model));
  const get = (n: string) => {
    const t = weights.get(n);
    if (!t || t.quant) throw new EagletError(`${f.model}: ${n} is missing or already quantized (the probe quantizes fp32 weights itself)`);
    return t;
  };
  const concat = (names: string[]): Tensor => {
    const parts = names.map(get), k = parts[0].shape[1], n = parts.reduce((a, t) => a + t.shape[0], 0), data = new Float32Array(n * k);
    let at = 0;
    for (const t of parts) (data.set(t.data, at), (at += t.data.length));
    return { shape: [n, k], data };
  };
  const out: { name: string; w: Tensor }[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `model.layers.${l}.`;
    out.push({ name: `L${l}.qkv`, w: concat(['q', 'k', 'v'].map((x) => `${p}self_attn.${x}_proj.weight`)) });
    out.push({ name: `L${l}.o`, w: get(`${p}self_attn.o_proj.weight`) });
    out.push({ name: `L${l}.gate_up`, w: concat([`${p}mlp.gate_proj.weight`, `${p}mlp.up_proj.weight`]) });
    out.push({ name: `L${l}.down`, w: get(`${p}mlp.down_proj.weight`) });
  }
  out.push({ name: 'lm_head', w: get(c.tieEmbeddings ? EMBEDDING : LM_HEAD) });
  return out;
}

/** The native kernel's weight file: "Q4P1", count, then per matrix a 32-byte name, N, K, packed bytes, scales. */
function writeWeightFile(path: string, set: { name: string; w: Tensor }[]): number {
  const chunks: Uint8Array[] = [new TextEncoder().encode('Q4P1'), new Uint8Array(new Int32Array([set.length]).buffer)];
  let bytes = 0;
  for (const { name, w } of set) {
    const q = quantizeWeight(w, q4), label = new Uint8Array(32);
    label.set(new TextEncoder().encode(name).subarray(0, 32));
    chunks.push(label, new Uint8Array(new Int32Array([q.n, q.k]).buffer), q.packed, new Uint8Array(q.scales.buffer));
    bytes += q.packed.byteLength + q.scales.byteLength;
  }
  writeFileSync(path, Buffer.concat(chunks));
  return bytes;
}

interface Timed { ms: number; min: number; max: number }
const timed = (xs: number[]): Timed => ({ ms: median(xs), min: Math.min(...xs), max: Math.max(...xs) });

/** (1) Run the native kernel; its JSON lines by kind. */
function runNative(exe: string, weightFile: string): { time: Map<string, Timed>; bandwidth: Map<number, Timed>; vnni: Map<number, Timed>; checks: Record<string, unknown>[] } {
  const run = spawnSync(exe, [weightFile, '--threads', threadsList.join(','), '--rows', ROWS.join(','), '--repeats', String(repeats), '--passes', String(passes)], { encoding: 'utf8', maxBuffer: 1 << 24 });
  const lines = run.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, number | string | boolean>);
  const checks = lines.filter((l) => l.kind === 'check');
  for (const c of checks) console.log(`native check: ${c.threads} thr, M=${c.rows}: max |diff| ${c.maxDiff} (max |y| ${c.maxAbs}; ${c.tolRatio} of the tolerance), row-exact across M: ${c.rowExact}`);
  if (run.status !== 0) throw new EagletError(`the native probe failed (exit ${run.status}): ${run.stderr.trim().split('\n').pop()}`);
  const time = new Map<string, Timed>(), bandwidth = new Map<number, Timed>(), vnni = new Map<number, Timed>();
  for (const l of lines) {
    if (l.kind === 'time') time.set(`${l.threads}/${l.rows}`, { ms: l.ms as number, min: l.min as number, max: l.max as number });
    if (l.kind === 'bandwidth') bandwidth.set(l.threads as number, { ms: l.gbps as number, min: l.min as number, max: l.max as number });
    if (l.kind === 'vnni') vnni.set(l.threads as number, { ms: l.gops as number, min: l.min as number, max: l.max as number });
  }
  return { time, bandwidth, vnni, checks };
}

/** (2) The same weights as a chain of ORT MatMulNBits nodes, ms per pass at each M. */
async function runOrtChain(set: { name: string; w: Tensor }[]): Promise<Map<string, Timed>> {
  const byName = new Map(set.map((s) => [s.name, s.w]));
  const out = new Map<string, Timed>();
  for (const threads of threadsList) {
    const g = new GraphBuilder('q4-chain'), ops = new OnnxOps(g, (n) => byName.get(n), 1, 'split', { quantize: { ...q4 }, fuseLinears: false });
    const K0 = set[0].w.shape[1];
    let x = g.input('x', 'float32', ['T', K0]), width = K0;
    for (const { name, w } of set) {
      const [n, k] = w.shape;
      if (width > k) x = g.op('Slice', [x, g.ints([0]), g.ints([k]), g.ints([1])]);
      x = ops.linear(x, ops.weight(name));
      width = n;
    }
    g.output(x, 'y', 'float32', ['T', width]);
    const s = await createSession(g.toModel({ opset: 23, irVersion: 10 }), { threads }), rng = new Rng(5);
    const feeds = ROWS.map((m) => ({ x: f32(Float32Array.from({ length: m * K0 }, () => rng.normal()), [m, K0]) }));
    const ms = ROWS.map(() => [] as number[]);
    for (let r = -1; r < repeats; r++)
      for (let i = 0; i < ROWS.length; i++) {
        const t0 = performance.now();
        for (let p = 0; p < passes; p++) await runTimed(s, feeds[i]);
        if (r >= 0) ms[i].push((performance.now() - t0) / passes);
      }
    ROWS.forEach((m, i) => out.set(`${threads}/${m}`, timed(ms[i])));
    await releaseSession(s);
  }
  return out;
}

/** (3) scripts/bench-quant.ts on the whole target: step (2 padded rows) and 4-row pass. */
function runWholeTarget(dir: string): Map<number, { step: Timed; verify: Timed }> {
  const json = join(dir, 'bench-quant.json'), script = fileURLToPath(new URL('./bench-quant.ts', import.meta.url));
  const run = spawnSync(process.execPath, ['--import', 'tsx', script, '--model', String(f.model), '--threads', threadsList.join(','), '--variants', 'nbits-q4', '--repeats', String(repeats), '--passes', String(2 * passes), '--verify', '4', '--json', json], { encoding: 'utf8' });
  if (run.status !== 0) throw new EagletError(`scripts/bench-quant.ts failed (exit ${run.status}): ${run.stderr.trim().split('\n').pop()}`);
  const out = new Map<number, { step: Timed; verify: Timed }>();
  for (const r of (JSON.parse(readFileSync(json, 'utf8')) as { results: { threads: number; stepMs: number; stepRange: number[]; verifyMs: number; verifyRange: number[] }[] }).results)
    out.set(r.threads, { step: { ms: r.stepMs, min: r.stepRange[0], max: r.stepRange[1] }, verify: { ms: r.verifyMs, min: r.verifyRange[0], max: r.verifyRange[1] } });
  return out;
}

const fmt = (t: Timed, d = 3) => `${t.ms.toFixed(d)} [${t.min.toFixed(d)}, ${t.max.toFixed(d)}]`;

/**
 * The round with the kernel in place of ORT's MatMulNBits, two ways. `ratio` (in plain steps):
 * the step costs what it does now; on its MatMulNBits share (ORT's chain at 2 rows / the whole
 * step) the verification's extra rows scale as the kernel's 4-row / 1-row (row-exact at any M,
 * so a step needs no padded row) instead of ORT's 4-row / 2-row (the step is padded to 2 rows).
 * `plainMs` / `roundMs` (kernel in both): its milliseconds replace ORT's chain in the plain step
 * (M = 1 for ORT's M = 2) and in the round's verification (M = 4 for M = 4); the round's other
 * parts (the head's passes, attention, norms, the round's own work) keep the cost they have
 * with ORT. Both keep tau, and the round's cost in steps, as given.
 */
function projection(step: number, ort2: number, ort4: number, nat1: number, nat4: number): { ratio: number; plainMs: number; roundMs: number; shareF: number } {
  const R = f.roundSteps as number, shareF = ort2 / step;
  const ratio = R - shareF * (ort4 / ort2 - 1) + shareF * (nat4 / nat1 - 1);
  return { ratio, plainMs: step - ort2 + nat1, roundMs: R * step - ort4 + nat4, shareF };
}

const dir = mkdtempSync(join(tmpdir(), 'q4-rows-probe-'));
try {
  const exe = compileNative('q4-rows-probe', dir); // before anything is loaded, so a missing g++ fails fast
  const set = linearSet(), weightFile = join(dir, 'weights.bin'), bytes = writeWeightFile(weightFile, set);
  const packedBytes = set.reduce((a, { w }) => a + (w.shape[0] * w.shape[1]) / 2, 0);
  console.log(`${set.length} matrices, ${(bytes / 1e6).toFixed(1)} MB packed q4 (blocks of 128) + scales`);
  const native = runNative(exe, weightFile);
  const chain = await runOrtChain(set);
  const whole = runWholeTarget(dir);
  const tau = f.tau as number, R = f.roundSteps as number;
  console.log(`\nms per pass of every Linear weight (median [min, max] over ${repeats} repeats of ${passes} passes); ratio: M rows / 1 row\n`);
  console.log('| threads | M | native kernel ms | native / M=1 | ORT MatMulNBits chain ms | ORT / M=1 | ORT / M=2 |');
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const t of threadsList)
    for (const m of ROWS) {
      const n = native.time.get(`${t}/${m}`)!, o = chain.get(`${t}/${m}`)!, n1 = native.time.get(`${t}/1`)!.ms, o1 = chain.get(`${t}/1`)!.ms, o2 = chain.get(`${t}/2`)!.ms;
      console.log(`| ${t} | ${m} | ${fmt(n)} | ${(n.ms / n1).toFixed(3)} | ${fmt(o)} | ${(o.ms / o1).toFixed(3)} | ${(o.ms / o2).toFixed(3)} |`);
    }
  // The kernel runs 2 VPDPBUSD per row for every 64 packed bytes.
  const dpbusd4 = (2 * 4 * packedBytes) / 64;
  console.log('\n| threads | read GB/s (256 MB) | native M=1 GB/s | VPDPBUSD G/s (registers) | native M=4 VPDPBUSD G/s | whole target step ms (2 rows) | 4-row pass ms | 4 rows / step |');
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const t of threadsList) {
    const w = whole.get(t)!, bw = native.bandwidth.get(t)!, vn = native.vnni.get(t)!;
    console.log(`| ${t} | ${bw.ms.toFixed(1)} [${bw.min.toFixed(1)}, ${bw.max.toFixed(1)}] | ${(bytes / 1e6 / native.time.get(`${t}/1`)!.ms).toFixed(1)} | ${vn.ms.toFixed(2)} [${vn.min.toFixed(2)}, ${vn.max.toFixed(2)}] | ${(dpbusd4 / 1e6 / native.time.get(`${t}/4`)!.ms).toFixed(2)} | ${fmt(w.step)} | ${fmt(w.verify)} | ${(w.verify.ms / w.step.ms).toFixed(3)} |`);
  }
  console.log(`\nProjection at ${f.roundThreads} threads from a depth-3 round of ${R} plain steps at tau ${tau} (${(tau / R).toFixed(3)}x), its verifying rows 3-4 ${f.rows34} of a step (ORT). "Ratio": the kernel's row scaling in place of ORT's on the MatMulNBits share of the step; "kernel in both": its milliseconds in place of ORT's chain in the plain step (M=1 for ORT's padded M=2) and in the round's verification (M=4), all else as measured with ORT:\n`);
  console.log('| threads | MatMulNBits share of the step | ratio: rows 3-4 (steps) | ratio: round (steps) | tok/s ratio | kernel in both: step ms | round ms | round (steps) | tok/s ratio |');
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const t of threadsList.filter((x) => x === f.roundThreads)) {
    const step = whole.get(t)!.step.ms, o2 = chain.get(`${t}/2`)!.ms, o4 = chain.get(`${t}/4`)!.ms, n1 = native.time.get(`${t}/1`)!.ms, n4 = native.time.get(`${t}/4`)!.ms;
    const p = projection(step, o2, o4, n1, n4), rows34 = (f.rows34 as number) - (R - p.ratio);
    console.log(`| ${t} | ${p.shareF.toFixed(3)} | ${rows34.toFixed(3)} | ${p.ratio.toFixed(3)} | ${(tau / p.ratio).toFixed(3)}x | ${p.plainMs.toFixed(3)} | ${p.roundMs.toFixed(3)} | ${(p.roundMs / p.plainMs).toFixed(3)} | ${((tau * p.plainMs) / p.roundMs).toFixed(3)}x |`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
