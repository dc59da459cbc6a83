/**
 * A probe, not a product change: how fast a hand-written CPU kernel (scripts/native/kv-attend-probe.cc,
 * compiled here with g++) reads a one-token pass's past K/V, one query row's attention over the
 * live rows of every layer of a bench:runtime sweep config (default 29M) in the split layout,
 * against a read-bandwidth probe shaped like bench:runtime's (a one-row matvec over 256 MB) in the
 * same process, and what the pass would then cost against its bytes-read floor. Prints Markdown.
 *
 *   node --import tsx scripts/probe-native-kv.ts [--contexts 64,4000 --threads 1,2 --repeats 30]
 *   node --import tsx scripts/probe-native-kv.ts --ort-json t2.json,t1.json
 *     (files from `npm run -s bench:runtime -- --sizes none --contexts 64,4000 --threads T --json tT.json`)
 *
 * The kernel reads only the live rows (a kernel that is told the context length needs no mask);
 * the cache it reads has the stride KVCache would have at that length. Its output is checked
 * against a float64 reference (the native program fails above a float32 bound).
 *
 * The projection (with --ort-json, per thread count in those files): projected pass(P) =
 * ORT's split pass at the first context + native(P) - native(first context). It assumes what
 * grows with context in ORT's pass (the two past products a layer and the score-space join over
 * S) is replaced by the kernel, whose own growth includes its softmax, and that the rest of the
 * pass costs what it does at the first context. The floor is bench:runtime's, from the same file:
 * (weight bytes a pass reads + past K/V bytes) / ORT's one-row MatMul probe rate. The host's
 * bandwidth differs between processes (the native probe and ORT's probe do not read alike), so
 * the projection is also printed with the native growth rescaled to ORT's probe: the kernel's
 * rate as a share of its own process's probe, at the rate of the ORT process's probe.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { compileNative } from './native-build.ts';
import { SWEEP, sizeNamed } from './runtime-sizes.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { EagletError, UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'sweep', type: 'string', default: '29M', help: `bench:runtime's sweep config whose cache shape to probe (${Object.keys(SWEEP)})` },
  { flag: 'contexts', type: 'ints', default: [64, 4000], help: 'context lengths (the first is the projection\'s base)' },
  { flag: 'threads', type: 'ints', default: [1, 2], help: 'thread counts (1 or 2)' },
  { flag: 'repeats', type: 'int', min: 3, default: 30, help: 'timed rounds (after two warm-ups), each a probe run then the kernel over every layer, per context' },
  { flag: 'ort-json', type: 'string', help: "comma-separated bench:runtime --json files (one per thread count) for the projection" },
];
const f = scriptFlags(import.meta.url, FLAGS);
const cfg = sizeNamed(SWEEP, String(f.sweep), '--sweep');
const contexts = f.contexts as number[], threadsList = f.threads as number[];
for (const p of contexts) if (p + 16 > cfg.maxSeqLen) throw new UsageError('--contexts', `${p} is not a context length in [1, ${cfg.maxSeqLen - 16}]`);
for (const t of threadsList) if (t > 2) throw new UsageError('--threads', `${t}: the native probe runs 1 or 2 threads`);
if (cfg.nHeads !== cfg.nKvHeads) throw new UsageError('--sweep', `${f.sweep} groups ${cfg.nHeads / cfg.nKvHeads} query heads a K/V head; the native kernel takes one`);

/** The stride KVCache holds at `rows` rows, filled as bench:runtime fills it (64 rows an append). */
function strideAt(rows: number): number {
  const c = new KVCache(1, 1, cfg.headDim, cfg.maxSeqLen).useValueLayout('transposed'), chunk = [new Float32Array(64 * cfg.headDim)];
  while (c.length < rows) c.append(chunk, chunk, Math.min(64, rows - c.length));
  return c.stride;
}

interface Timed { ms: number; min: number; max: number }
interface NativeRow { time: Timed; probe: Timed; stride: number; kvBytes: number; maxDiff: number }

function runNative(exe: string): Map<string, NativeRow> {
  const args = ['--contexts', contexts.join(','), '--strides', contexts.map(strideAt).join(','), '--threads', threadsList.join(','), '--repeats', String(f.repeats),
    '--layers', String(cfg.nLayers), '--heads', String(cfg.nKvHeads), '--head-dim', String(cfg.headDim)];
  const run = spawnSync(exe, args, { encoding: 'utf8' });
  const lines = run.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, number | string | boolean>);
  if (run.status !== 0) throw new EagletError(`the native probe failed (exit ${run.status}): ${run.stderr.trim().split('\n').pop()}`);
  const out = new Map<string, NativeRow>(), key = (l: Record<string, unknown>) => `${l.threads}/${l.context}`;
  const row = (l: Record<string, unknown>) => out.get(key(l)) ?? out.set(key(l), {} as NativeRow).get(key(l))!;
  for (const l of lines) {
    const t = { ms: Number(l.ms ?? l.gbps), min: Number(l.min), max: Number(l.max) };
    if (l.kind === 'check') row(l).maxDiff = Number(l.maxDiff);
    if (l.kind === 'probe') row(l).probe = t;
    if (l.kind === 'time') Object.assign(row(l), { time: t, stride: Number(l.stride), kvBytes: Number(l.kvBytes) });
  }
  return out;
}

interface OrtRow { context: number; floorMs: number; bandwidthGBps: number; [pass: string]: unknown }
type OrtPass = { medianMs: number; minMs: number; maxMs: number; xFloor: number };

/** bench:runtime sweeps by thread count, from its --json files. */
function readOrt(files: string[]): Map<number, Map<number, OrtRow>> {
  const out = new Map<number, Map<number, OrtRow>>();
  for (const file of files) {
    let results: { sweep?: string; threads?: number; rows?: OrtRow[] }[];
    try {
      results = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new UsageError('--ort-json', `${file}: ${(e as Error).message}`);
    }
    const sweep = Array.isArray(results) ? results.find((r) => r.sweep === f.sweep && r.rows) : undefined;
    if (!sweep) throw new UsageError('--ort-json', `${file} holds no bench:runtime sweep of ${f.sweep}`);
    const rows = new Map(sweep.rows!.map((r) => [r.context, r]));
    for (const p of contexts) if (!rows.has(p)) throw new UsageError('--ort-json', `${file} has no row at context ${p} (it has ${[...rows.keys()]})`);
    out.set(sweep.threads!, rows);
  }
  return out;
}

const ort = f.ortJson ? readOrt(String(f.ortJson).split(',')) : new Map<number, Map<number, OrtRow>>();
const dir = mkdtempSync(join(tmpdir(), 'kv-attend-probe-'));
let native: Map<string, NativeRow>;
try {
  native = runNative(compileNative('kv-attend-probe', dir));
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const P0 = contexts[0], d = (x: number, n = 2) => x.toFixed(n), range = (t: Timed, n = 2) => `${d(t.ms, n)} (${d(t.min, n)}-${d(t.max, n)})`;
console.log(`\n${f.sweep}: ${cfg.nLayers} layers, ${cfg.nKvHeads} K/V heads x ${cfg.headDim}, keys and values [nKv, hd, stride]; native kernel over the live rows of all ${cfg.nLayers} layers (one pool call a layer), median of ${f.repeats} rounds (min-max), each right after a run of the bandwidth probe (one-row fp32 matvec over 256 MB, same threads); extra-rows GB/s: (bytes(P) - bytes(${P0})) / (ms(P) - ms(${P0}))\n`);
console.log('| threads | context | stride | K/V MB | kernel ms | kernel GB/s | extra-rows GB/s | native probe GB/s | kernel / probe | max abs diff vs float64 |');
console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const t of threadsList)
  for (const p of contexts) {
    const r = native.get(`${t}/${p}`)!, base = native.get(`${t}/${P0}`)!, gbps = r.kvBytes / 1e6 / r.time.ms;
    const extra = p === P0 ? '-' : d((r.kvBytes - base.kvBytes) / 1e6 / (r.time.ms - base.time.ms), 1);
    console.log(`| ${t} | ${p} | ${r.stride} | ${d(r.kvBytes / 1e6, 1)} | ${range(r.time, 3)} | ${d(gbps, 1)} | ${extra} | ${range(r.probe, 1)} | ${d(gbps / r.probe.ms)} | ${r.maxDiff.toExponential(1)} |`);
  }

if (ort.size) {
  console.log(`\nProjection (not a measurement): pass(P) = ORT pass(${P0}) + native(P) - native(${P0}); ORT's passes, floor and probe from the bench:runtime files; "pass / floor" is the median pass over the floor at the median probe (bench:runtime's own "x floor" is the median of its rounds' ratios, also shown). ` +
    `"At ORT's probe": the same with the native growth read at the kernel's extra-rows rate relative to its own probe times ORT's probe rate (the two processes' probes can differ: the host's bandwidth moves between processes)\n`);
  console.log('| threads | context | graph | ORT pass ms | ORT x floor | ORT pass / floor | floor ms (ORT probe GB/s) | native growth ms | projected ms | projected / floor | growth at ORT\'s probe ms | projected ms | projected / floor |');
  console.log('| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const [t, rows] of ort) {
    if (!threadsList.includes(t)) throw new UsageError('--ort-json', `a file measured at ${t} threads; the probe ran --threads ${threadsList}`);
    for (const p of contexts.slice(1))
      for (const graph of ['split', 'split-one']) {
        const row = rows.get(p)!, pass = row[`${graph}1`] as OrtPass | undefined, base = rows.get(P0)![`${graph}1`] as OrtPass | undefined;
        if (!pass || !base) continue; // older files: no split-one
        const n = native.get(`${t}/${p}`)!, n0 = native.get(`${t}/${P0}`)!, growth = n.time.ms - n0.time.ms, projected = base.medianMs + growth;
        // The kernel's extra rows at its rate relative to its own probe, times ORT's probe rate.
        const atOrt = growth * (n.probe.ms / row.bandwidthGBps), projectedAtOrt = base.medianMs + atOrt;
        console.log(`| ${t} | ${p} | ${graph} | ${range({ ms: pass.medianMs, min: pass.minMs, max: pass.maxMs })} | ${d(pass.xFloor)} | ${d(pass.medianMs / row.floorMs)} | ${d(row.floorMs)} (${d(row.bandwidthGBps, 1)}) | ` +
          `${d(growth, 3)} | ${d(projected)} | ${d(projected / row.floorMs)} | ${d(atOrt, 3)} | ${d(projectedAtOrt)} | **${d(projectedAtOrt / row.floorMs)}** |`);
      }
  }
}
