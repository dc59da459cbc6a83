/**
 * What each further row pair costs one q4 MatMulNBits (int8 activations), with its weights in
 * DRAM or in cache: is a verification pass's second row pair paid in memory traffic (each row
 * pair streaming the packed weight again) or in arithmetic?
 *
 * One graph per (shape, nodes D): a chain of D MatMulNBits nodes over D distinct random
 * weights, K -> N -> K -> ... (a square K = N shape is one weight a node; K != N alternates a
 * [K -> N] node and an [N -> K] one), far past the last-level cache, so every run reads them from
 * DRAM; and with `--distinct d`, the same D nodes cycling over d distinct weights, whose packed
 * bytes stay in L2 / L3 across nodes and runs (the timings show ORT keeps one packed copy of a shared initializer). A shape may
 * also be a layer, `KxN+KxN+...` (e.g. a decoder layer's fused q/k/v, o, fused gate/up and down
 * projections: 768x1536+768x768+768x5632+2816x768), chained in that order with a Slice where a
 * node's output is wider than the next node's input; D then counts layers. Each graph runs at
 * M = 2, 4, 6, 8 rows, interleaved repeat by repeat; prints the median microseconds per node
 * (per layer) and each M's increment over M = 2 as a share of the M = 2 time.
 *
 *   node --import tsx scripts/nbits-rows.ts [-- --threads 1,2 --shapes 768x768,768x2816 --nodes 160 --distinct 2 --rows 2,4,6 --repeats 7]
 *
 * `--bits 8 --block 128` measures the draft head's format instead of q4's.
 *
 * On this host's AVX512-VNNI kernels every further row pair costs the same with the weights in
 * DRAM or in cache: arithmetic (docs/performance.md, "The verify's second row pair").
 */
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { GraphBuilder } from '../src/onnx/graph.ts';
import { OnnxOps } from '../src/onnx/ops.ts';
import { createSession, f32, releaseSession, runTimed, type Session } from '../src/runtime/ort.ts';
import { median } from '../src/util/stats.ts';
import { Rng } from '../src/util/rng.ts';
import { UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'threads', type: 'ints', default: [1, 2], help: 'ORT intra-op thread counts' },
  { flag: 'shapes', type: 'string', default: '768x768,768x2816', help: 'KxN shapes (K != N: a K->N node and an N->K node alternate)' },
  { flag: 'nodes', type: 'ints', default: [160], help: 'nodes (layers for a layer shape) per chain' },
  { flag: 'distinct', type: 'ints', default: [2], help: 'also run each chain with only this many distinct weights (units), cycled: the same nodes over fewer bytes' },
  { flag: 'bits', type: 'int', min: 4, max: 8, default: 4, help: 'weight bits: 4 or 8' },
  { flag: 'block', type: 'int', min: 16, default: 128, help: 'weights per block (16, 32, 64, 128)' },
  { flag: 'rows', type: 'ints', default: [2, 4, 6, 8], help: 'rows per pass (the first is the base)' },
  { flag: 'repeats', type: 'int', min: 3, default: 7, help: 'interleaved timed repeats (after one warm-up)' },
  { flag: 'ms', type: 'int', min: 10, default: 150, help: 'target milliseconds per timed measurement' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const rowsList = f.rows as number[], bits = f.bits as 4 | 8, blockSize = f.block as number;
if (bits !== 4 && bits !== 8) throw new UsageError('--bits', `${bits} is not 4 or 8`);
if (![16, 32, 64, 128].includes(blockSize)) throw new UsageError('--block', `${blockSize} is not 16, 32, 64 or 128`);

/** The [K, N] nodes of one unit of a shape spec: `KxN` (K != N: a K->N node and an N->K one) or a layer `KxN+KxN+...`. */
function unitOf(spec: string): [number, number][] {
  const nodes = spec.split('+').map((p) => p.split('x').map(Number) as [number, number]);
  if (nodes.some(([k, n]) => !(k > 0 && n > 0))) throw new UsageError('--shapes', `${spec} is not KxN or KxN+KxN+...`);
  return nodes.length === 1 && nodes[0][0] !== nodes[0][1] ? [nodes[0], [nodes[0][1], nodes[0][0]]] : nodes;
}

async function chain(spec: string, units: number, distinct: number, threads: number): Promise<{ s: Session; bytes: number; inWidth: number }> {
  const rng = new Rng(11), weights = new Map<string, { shape: number[]; data: Float32Array }>(), unit = unitOf(spec);
  const g = new GraphBuilder('chain'), ops = new OnnxOps(g, (name) => weights.get(name), 1, 'split', { quantize: { bits, blockSize }, fuseLinears: false });
  const layer = spec.includes('+'), nodes = layer ? units * unit.length : units;
  let x = g.input('x', 'float32', ['T', unit[0][0]]), width = unit[0][0], bytes = 0;
  for (let i = 0; i < nodes; i++) {
    const [K, out] = unit[i % unit.length], name = `w${i % (distinct * (layer ? unit.length : 1))}`, scale = 1 / Math.sqrt(K);
    if (width < K) throw new UsageError('--shapes', `${spec}: a node of input ${K} follows an output of ${width}`);
    if (width > K) x = g.op('Slice', [x, g.ints([0]), g.ints([K]), g.ints([1])]);
    if (!weights.has(name)) {
      weights.set(name, { shape: [out, K], data: Float32Array.from({ length: out * K }, () => rng.normal() * scale) });
      bytes += (out * K * bits) / 8 + (out * K * 4) / blockSize;
    }
    x = ops.linear(x, ops.weight(name));
    width = out;
  }
  g.output(x, 'y', 'float32', ['T', width]);
  return { s: await createSession(g.toModel({ opset: 23, irVersion: 10 }), { threads }), bytes, inWidth: unit[0][0] };
}

console.log(`q${bits} MatMulNBits, blocks of ${blockSize}, int8 activations; us per node, median of ${f.repeats} repeats [min, max]; +M: increment over M=${rowsList[0]} / the M=${rowsList[0]} node`);
for (const threads of f.threads as number[])
  for (const shape of String(f.shapes).split(',')) {
    const cases: { nodes: number; distinct: number; K: number; s: Session; bytes: number; feeds: Map<number, Float32Array>; loops: Map<number, number>; us: Map<number, number[]> }[] = [];
    for (const nodes of f.nodes as number[]) for (const distinct of [nodes, ...(f.distinct as number[]).filter((d) => d < nodes)]) {
      const { s, bytes, inWidth: K } = await chain(shape, nodes, distinct, threads), rng = new Rng(5), feeds = new Map<number, Float32Array>();
      for (const m of rowsList) feeds.set(m, Float32Array.from({ length: m * K }, () => rng.normal()));
      cases.push({ nodes, distinct, K, s, bytes, feeds, loops: new Map(), us: new Map(rowsList.map((m) => [m, []])) });
    }
    for (let r = -1; r < (f.repeats as number); r++)
      for (const c of cases)
        for (const m of rowsList) {
          const x = f32(c.feeds.get(m)!, [m, c.K]);
          if (r < 0) {
            const t0 = performance.now();
            await runTimed(c.s, { x });
            await runTimed(c.s, { x });
            c.loops.set(m, Math.max(3, Math.round((f.ms as number) / Math.max(0.01, (performance.now() - t0) / 2))));
            continue;
          }
          const loops = c.loops.get(m)!, t0 = performance.now();
          for (let i = 0; i < loops; i++) await runTimed(c.s, { x });
          c.us.get(m)!.push(((performance.now() - t0) * 1000) / loops / c.nodes);
        }
    for (const c of cases) {
      const base = median(c.us.get(rowsList[0])!);
      const cells = rowsList.map((m) => {
        const u = c.us.get(m)!, med = median(u), inc = m === rowsList[0] ? '' : ` (+${(((med - base) / base) * 100).toFixed(0)}%)`;
        return `M=${m} ${med.toFixed(1)} [${Math.min(...u).toFixed(1)}, ${Math.max(...u).toFixed(1)}]${inc}`;
      });
      console.log(`${threads} thr  ${shape.padEnd(9)} ${String(c.nodes).padStart(4)} ${shape.includes('+') ? 'layers' : 'nodes'} ${String(c.distinct).padStart(4)} distinct ${(c.bytes / 1e6).toFixed(1).padStart(6)} MB  ${cells.join('  ')}`);
      await releaseSession(c.s);
    }
  }
