/**
 * Where a target's load time goes, phase by phase, each repeat in a fresh process (so the
 * checkpoint's pages are in the page cache, but nothing else is warm):
 *
 *   read     loadModel: config + safetensors header; F32 weights stay in the file (file-backed),
 *            small tensors (norms) are read
 *   graph    buildTargetModel: the ONNX protobuf, weights as external data
 *   session  ORT session creation (graph optimisation, mapping the file, kernels pre-packing
 *            their weights)
 *   warm-up  the first plain generation of 2 tokens (what loadGenerator runs at load)
 *
 * and, in its own process, the session created with pre-packing off: the difference is what
 * pre-packing the Linear weights costs. Also the RSS after each phase and the process's peak.
 *
 *   node --import tsx scripts/load-phases.ts --dir runs/sizes/100M [--threads 2 --repeats 5]
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { median } from '../src/util/stats.ts';
import { UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'dir', type: 'string', help: 'checkpoint directory (e.g. one written by scripts/load-sizes.ts)' },
  { flag: 'threads', type: 'int', min: 1, default: 2, help: 'ORT intra-op threads' },
  { flag: 'repeats', type: 'int', min: 1, default: 5, help: 'fresh processes per mode, interleaved' },
  { flag: 'child', type: 'string', help: '(internal) prepack | no-prepack' },
];
const f = scriptFlags(import.meta.url, FLAGS);
if (!f.dir) throw new UsageError('--dir', 'is required');

if (f.child) {
  const { loadModel } = await import('../src/load-model.ts');
  const { buildTargetModel, targetAttention } = await import('../src/onnx/model-graphs.ts');
  const { createSession, releaseSession } = await import('../src/runtime/ort.ts');
  const { TargetSession } = await import('../src/runtime/target.ts');
  const { Generator } = await import('../src/generate/generator.ts');
  const out: Record<string, number> = {};
  const rss = () => process.memoryUsage().rss / 1e6;
  let t = performance.now();
  const lap = (name: string) => {
    const now = performance.now();
    out[`${name}Ms`] = now - t;
    out[`${name}RssMB`] = rss();
    t = now;
  };
  const m = await loadModel(String(f.dir));
  lap('read');
  const cfg = m.config, threads = f.threads as number;
  // The graph TargetSession builds: 'split' attention for a quantized target, whatever its size.
  const model = buildTargetModel(cfg, m.weights, targetAttention(cfg, m.weights));
  lap('graph');
  if (f.child === 'no-prepack') {
    const s = await createSession(model, { threads, prepack: false });
    lap('session');
    await releaseSession(s);
  } else {
    // TargetSession.create renders the graph again (measured above) and opens the session.
    const g0 = performance.now();
    buildTargetModel(cfg, m.weights, targetAttention(cfg, m.weights));
    const graphAgain = performance.now() - g0;
    t = performance.now();
    const target = await TargetSession.create(cfg, m.weights, { threads });
    lap('session');
    out.sessionMs -= graphAgain;
    const g = new Generator({ target });
    await g.generate([0], { maxNewTokens: 2, stopAtEos: false });
    lap('warmup');
    await target.dispose();
  }
  out.peakRssMB = process.resourceUsage().maxRSS / 1e3;
  console.log(JSON.stringify(out));
  process.exit(0);
}

const runs: Record<string, Record<string, number>[]> = { prepack: [], 'no-prepack': [] };
for (let r = 0; r < (f.repeats as number); r++) {
  for (const mode of Object.keys(runs)) {
    const c = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--dir', String(f.dir), '--threads', String(f.threads), '--child', mode], { encoding: 'utf8' });
    if (c.status !== 0) throw new Error(`${mode}: ${c.stderr}`);
    runs[mode].push(JSON.parse(c.stdout.trim().split('\n').pop()!));
  }
}
const stat = (xs: number[]) => `${median(xs).toFixed(0)} [${Math.min(...xs).toFixed(0)}, ${Math.max(...xs).toFixed(0)}]`;
console.log(`${f.dir}, ${f.threads} threads, ${f.repeats} fresh processes per mode; ms median [min, max]; RSS MB after the phase`);
console.log('| phase | ms | RSS after |\n| --- | ---: | ---: |');
for (const p of ['read', 'graph', 'session', 'warmup']) {
  const xs = runs.prepack.map((x) => x[`${p}Ms`]);
  console.log(`| ${p} | ${stat(xs)} | ${stat(runs.prepack.map((x) => x[`${p}RssMB`]))} |`);
}
const total = runs.prepack.map((x) => x.readMs + x.graphMs + x.sessionMs + x.warmupMs);
console.log(`| total | ${stat(total)} | peak ${stat(runs.prepack.map((x) => x.peakRssMB))} |`);
console.log(`| session, pre-packing off | ${stat(runs['no-prepack'].map((x) => x.sessionMs))} | ${stat(runs['no-prepack'].map((x) => x.sessionRssMB))} |`);
