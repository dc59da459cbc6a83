/**
 * Load test of `eaglet serve` over loopback HTTP: throughput and p50/p99 request latency against
 * concurrency, for plain decoding, static speculation and SmartSpec, side by side in one run.
 *
 *   node --import tsx scripts/load-test.ts [--model DIR --draft DIR] [--concurrency 1,2,4,8,16]
 *     [--policies plain,static-3,smartspec] [--requests 32] [--max-new-tokens 48] [--repeats 2]
 *     [--time-limit 200] [--threads N] [--[no-]fused-round] [--out runs/load-test]
 *
 * One server per policy (all over the same loaded sessions; only one is driven at a time), each
 * with --max-batch = the highest concurrency. For each repeat, each concurrency level, each
 * policy (interleaved, the policy order rotated each repeat): `requests` greedy completions over the held-out prompts by `c` closed-loop
 * clients (in a worker thread, scripts/load-client.ts, over keep-alive connections: the
 * servers' event loop does only the server's work). A warm-up (every server at the lowest and
 * highest concurrency, every single-request method once) runs first and is not reported.
 * Throughput = generated tokens / wall time of the level; latency = each request's
 * time to its full reply. Every reply's ids are checked against single-request plain decoding
 * (a separate generator, as `eaglet generate --no-spec`); a mismatch fails the run (exit 1).
 * Also measured: the single-request library speed (Generator.generate, no server) of each policy
 * and of what `eaglet generate` runs (its fused round on the embedded pair, its default policy),
 * with the client thread polling beside it as during a level (the servers share the machine with it):
 * the best of them is the "best single-request speed" the server at c=1 is held to. Bounded: stops starting new
 * levels after --time-limit seconds (the levels not run are listed as skipped).
 * Writes load-test.json, load-test.md and load-test.svg under --out.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { loadGenerator } from '../src/api.ts';
import { DEFAULT_DIR } from '../src/default-model.ts';
import { parseFlags, type FlagSpec } from '../src/option-schema.ts';
import { Generator } from '../src/generate/generator.ts';
import { StaticPolicy } from '../src/policies/policy.ts';
import { serve, type RunningServer } from '../src/serve/server.ts';
import { PHASES, type RequestPhases } from '../src/serve/metrics.ts';
import { linePlot } from '../training/svg-plot.ts';
import { spread } from '../src/util/stats.ts';
import type { LevelJob, LevelResult } from './load-client.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'model', type: 'string', meta: 'DIR', help: 'target (default: the embedded pair)' },
  { flag: 'draft', type: 'string', meta: 'DIR', help: 'draft head' },
  { flag: 'prompts', type: 'string', default: join(DEFAULT_DIR, 'heldout-prompts.jsonl'), meta: 'FILE', help: 'JSONL of token-id prompts' },
  { flag: 'concurrency', type: 'ints', default: [1, 2, 4, 8, 16], meta: 'LIST', help: 'client concurrency levels' },
  { flag: 'policies', type: 'string', default: 'plain,static-3,smartspec', meta: 'LIST', help: 'serving policies' },
  { flag: 'requests', type: 'int', min: 1, default: 32, meta: 'N', help: 'requests per level' },
  { flag: 'max-new-tokens', type: 'int', min: 1, default: 48, meta: 'N', help: 'max_tokens of each request' },
  { flag: 'repeats', type: 'int', min: 1, default: 2, meta: 'R', help: 'repeats of the whole sweep (median reported, min-max as spread)' },
  { flag: 'time-limit', type: 'number', above: 0, default: 200, meta: 'S', help: 'no new level starts after this many seconds' },
  { flag: 'threads', type: 'int', min: 1, default: 1, meta: 'N', help: 'ORT intra-op threads' },
  { flag: 'fused-round', type: 'bool', help: 'a request alone in the batch runs the fused round, and the single-request yardstick includes `eaglet generate`\'s fused round (default: on for the embedded pair, as generate and serve)' },
  { flag: 'out', type: 'string', default: 'runs/load-test', meta: 'DIR', help: 'output directory' },
];

const f = parseFlags(process.argv.slice(2), FLAGS);
const t0 = performance.now();
const levels = f.concurrency as number[], policies = String(f.policies).split(','), R = f.requests as number, N = f.maxNewTokens as number;
const prompts = readFileSync(f.prompts as string, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as number[]);
const load = { model: f.model as string | undefined, draft: f.draft as string | undefined, threads: f.threads as number };
const g = await loadGenerator({ ...load, keepWeights: true });
const fused = (f.fusedRound as boolean | undefined) ?? (load.model === undefined && load.draft === undefined);
// What `eaglet generate` runs (its fused round where it would use one, its default policy): a single-request yardstick.
const generateDefault = fused ? await loadGenerator({ ...load, fusedRound: 'auto' }) : undefined;
const reference = await loadGenerator({ ...load, draft: null });
const maxBatch = Math.max(...levels);

// Single-request plain decoding of every prompt: what every reply must equal.
const want = new Map<number, number[]>();
for (let i = 0; i < prompts.length; i++) want.set(i, (await reference.generate(prompts[i], { maxNewTokens: N, temperature: 0 })).ids);

// The clients run in a worker thread (scripts/load-client.ts), off the servers' event loop.
// (Workers do not inherit `--import tsx`: the worker loads the client through tsx's API.)
const clients = new Worker(`import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => m.tsImport(${JSON.stringify(new URL('./load-client.ts', import.meta.url).href)}, ${JSON.stringify(import.meta.url)}))`, { eval: true });
function clientThread(state: 'spin' | 'rest'): Promise<void> {
  return new Promise((resolve) => {
    clients.once('message', () => resolve());
    clients.postMessage(state);
  });
}
function drive(job: LevelJob): Promise<LevelResult> {
  return new Promise((resolve, reject) => {
    clients.once('message', (m: { ok?: LevelResult; error?: string }) => (m.ok ? resolve(m.ok) : reject(new Error(m.error))));
    clients.postMessage(job);
  });
}

interface Level {
  policy: string;
  concurrency: number;
  repeat: number;
  tokens: number;
  wallMs: number;
  tokensPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  mismatches: number;
  meanBatch: number;
  /** Rounds run as a lone request's fused round (not counted in meanBatch's passes). */
  fusedRounds: number;
  /** depths[d]: request rounds at speculation length d. */
  depths: number[];
  /** Mean server-side ms per request by phase (ServeMetrics): where a request's latency went. */
  phaseMs: RequestPhases;
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
};

async function level(s: RunningServer, policy: string, c: number, repeat: number, requests = R): Promise<Level> {
  const engine = s.handler.engine, lane = engine.targetStats;
  const p0 = lane.passes, c0 = lane.calls, f0 = engine.fusedRounds, d0 = engine.metrics.depthCounts.slice(), ph0 = { ...engine.metrics.phaseMs }, n0 = engine.metrics.phased;
  const order = Array.from({ length: requests }, (_, j) => (j + repeat * 7) % prompts.length);
  const { replies, wallMs } = await drive({ url: s.url, prompts: order.map((i) => prompts[i]), concurrency: c, maxTokens: N });
  let tokens = 0, mismatches = 0;
  replies.forEach((r, j) => {
    tokens += r.ids.length;
    if (JSON.stringify(r.ids) !== JSON.stringify(want.get(order[j]))) mismatches++;
  });
  const latencies = replies.map((r) => r.ms);
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  return {
    policy, concurrency: c, repeat, tokens, wallMs: r3(wallMs), tokensPerSecond: r3((tokens * 1000) / wallMs), p50Ms: r3(quantile(latencies, 0.5)), p99Ms: r3(quantile(latencies, 0.99)), mismatches,
    meanBatch: r3((lane.calls - c0) / Math.max(1, lane.passes - p0)),
    fusedRounds: engine.fusedRounds - f0, depths: engine.metrics.depthCounts.map((n, d) => n - d0[d]),
    phaseMs: Object.fromEntries(PHASES.map((k) => [k, r3((engine.metrics.phaseMs[k] - ph0[k]) / Math.max(1, engine.metrics.phased - n0))])) as RequestPhases,
  };
}

// Single-request library speed per policy (no HTTP, no batcher): the c=1 yardstick.
/** Single-request library decoding of the prompts (tok/s), beside the client thread polling as it does during a level. */
async function single(policy: string): Promise<number> {
  await clientThread('spin');
  try {
    return await singleRun(policy);
  } finally {
    await clientThread('rest');
  }
}

async function singleRun(policy: string): Promise<number> {
  const from = policy === 'generate' ? generateDefault! : g;
  const drafter = policy === 'plain' ? undefined : from.generator.parts.drafter;
  const depth = policy.startsWith('static-') ? Number(policy.slice(7)) : undefined;
  const gen = new Generator({ target: from.generator.parts.target, drafter, policy: policy === 'plain' ? undefined : depth !== undefined ? new StaticPolicy(depth, Math.max(depth, drafter!.shape.totalTokens)) : from.newPolicy() });
  let tokens = 0, ms = 0;
  for (let i = 0; i < Math.min(R, prompts.length); i++) {
    const r = await gen.generate(prompts[i], { maxNewTokens: N, temperature: 0 });
    tokens += r.stats.newTokens;
    ms += r.stats.ms.total;
  }
  return (tokens * 1000) / ms;
}

const servers = new Map<string, RunningServer>();
for (const p of policies) servers.set(p, await serve(g, { port: 0, maxBatch, policy: p, maxQueue: 1024, threads: load.threads, fusedRound: fused && p !== 'plain' }));
const costModel = servers.get('smartspec')?.handler.engine.planner;
const singles: Record<string, number[]> = {};
const rows: Level[] = [], skipped: string[] = [];
const limitMs = (f.timeLimit as number) * 1000;
const singlePolicies = ['plain', 'library default', ...policies.filter((x) => x.startsWith('static')), ...(generateDefault ? ['generate'] : [])];
// Warm-up, not reported: every single-request method once, every server at the lowest and highest concurrency.
const warmupStart = performance.now();
for (const p of singlePolicies) await single(p === 'library default' ? 'default' : p);
for (const p of policies) for (const c of new Set([Math.min(...levels), maxBatch])) await level(servers.get(p)!, p, c, 0, Math.max(c, Math.min(R, 8)));
const warmupSeconds = (performance.now() - warmupStart) / 1000;
for (let rep = 0; rep < (f.repeats as number); rep++) {
  for (const p of singlePolicies) {
    if (performance.now() - t0 > limitMs) break;
    const key = p === 'library default' ? `single ${g.newPolicy().name}` : p === 'generate' ? `single generate (fused round, ${generateDefault!.newPolicy().name})` : `single ${p}`;
    (singles[key] ??= []).push(await single(p === 'library default' ? 'default' : p));
  }
  // Each repeat starts the policies at a different one, so none always runs first (or after the same one).
  const order = policies.map((_, i) => policies[(i + rep) % policies.length]);
  for (const c of levels)
    for (const p of order) {
      if (performance.now() - t0 > limitMs) {
        skipped.push(`${p} c=${c} repeat ${rep + 1}`);
        continue;
      }
      const r = await level(servers.get(p)!, p, c, rep);
      rows.push(r);
      process.stderr.write(`${p} c=${c} rep ${rep + 1}: ${r.tokensPerSecond.toFixed(1)} tok/s, p50 ${r.p50Ms.toFixed(0)} ms, p99 ${r.p99Ms.toFixed(0)} ms, mean batch ${r.meanBatch}, fused rounds ${r.fusedRounds}, depths ${r.depths.join('/')}, mismatches ${r.mismatches}\n`);
    }
}
for (const s of servers.values()) await s.close();
clients.postMessage('close');

// Interpolated (the mean of the middle two of an even count), as the summaries always were.
const median = (xs: number[]) => spread(xs).median;
const summary = policies.flatMap((p) => levels.map((c) => {
  const rs = rows.filter((r) => r.policy === p && r.concurrency === c);
  if (!rs.length) return undefined;
  const tps = rs.map((r) => r.tokensPerSecond);
  return { policy: p, concurrency: c, runs: rs.length, tokensPerSecond: median(tps), min: Math.min(...tps), max: Math.max(...tps), p50Ms: median(rs.map((r) => r.p50Ms)), p99Ms: median(rs.map((r) => r.p99Ms)), meanBatch: median(rs.map((r) => r.meanBatch)) };
}).filter((x) => x !== undefined));
const singleMedian = Object.fromEntries(Object.entries(singles).map(([k, v]) => [k, { median: median(v), min: Math.min(...v), max: Math.max(...v) }]));
const mismatches = rows.reduce((n, r) => n + r.mismatches, 0);
const at = (p: string, c: number) => summary.find((s) => s.policy === p && s.concurrency === c)?.tokensPerSecond;
const bestSingle = Math.max(...Object.values(singleMedian).map((s) => s.median), ...policies.map((p) => at(p, 1) ?? 0));
const cMax = Math.max(...levels);
const checks = {
  smartspecC1VsBestSingle: at('smartspec', 1) !== undefined ? Math.round((at('smartspec', 1)! / bestSingle) * 1000) / 1000 : null,
  smartspecCmaxVsPlain: at('smartspec', cMax) !== undefined && at('plain', cMax) ? Math.round((at('smartspec', cMax)! / at('plain', cMax)!) * 1000) / 1000 : null,
  smartspecCmaxVsStatic: policies.filter((p) => p.startsWith('static')).map((p) => ({ policy: p, ratio: at('smartspec', cMax) && at(p, cMax) ? Math.round((at('smartspec', cMax)! / at(p, cMax)!) * 1000) / 1000 : null })),
  plainBatchGain: Object.fromEntries(levels.filter((c) => c > 1).map((c) => [c, at('plain', c) && at('plain', 1) ? Math.round((at('plain', c)! / at('plain', 1)!) * 1000) / 1000 : null])),
};

const out = f.out as string;
mkdirSync(out, { recursive: true });
const result = {
  command: `node --import tsx scripts/load-test.ts ${process.argv.slice(2).join(' ')}`.trim(),
  model: load.model ?? 'embedded default', draft: load.draft ?? (load.model ? null : 'embedded default'), threads: load.threads, maxBatch, requestsPerLevel: R, maxNewTokens: N,
  wallSeconds: Math.round((performance.now() - t0) / 100) / 10, warmupSeconds: Math.round(warmupSeconds * 10) / 10, skipped, mismatches, singleRequest: singleMedian, summary, checks, costModel: costModel ? { verify: costModel.verify.toJSON(), draft: costModel.draft.toJSON(), alone: costModel.alone, learnedOverhead: { msPerPass: costModel.overhead.a, msPerRequestPass: costModel.overhead.b, aloneMs: costModel.overhead.alone } } : undefined, runs: rows,
};
writeFileSync(join(out, 'load-test.json'), JSON.stringify(result, null, 2) + '\n');
const md = [
  `# eaglet serve load test`, '', `\`${result.command}\` (${result.wallSeconds} s; ${R} requests of ${N} tokens per level, greedy, max batch ${maxBatch}, ${load.threads} thread(s); median of ${f.repeats} repeats, min-max in brackets)`, '',
  `Greedy replies differing from single-request plain decoding: **${mismatches}**.${skipped.length ? ` Skipped (time limit): ${skipped.join(', ')}.` : ''}`, '',
  `Single-request speed without the server: ${Object.entries(singleMedian).map(([k, v]) => `${k} ${v.median.toFixed(1)} tok/s`).join(', ')}.`, '',
  '| policy | concurrency | tok/s | (min-max) | p50 ms | p99 ms | mean batch per target pass |', '| --- | ---: | ---: | --- | ---: | ---: | ---: |',
  ...summary.map((s) => `| ${s.policy} | ${s.concurrency} | ${s.tokensPerSecond.toFixed(1)} | ${s.min.toFixed(1)}-${s.max.toFixed(1)} | ${s.p50Ms.toFixed(0)} | ${s.p99Ms.toFixed(0)} | ${s.meanBatch.toFixed(2)} |`),
  '', 'Where a request\'s time went at the lowest concurrency (server-side, mean ms per request; latency p50 is the client\'s):', '',
  `| policy | ${PHASES.join(' | ')} | latency p50 |`, `| --- | ${PHASES.map(() => '---:').join(' | ')} | ---: |`,
  ...policies.map((p) => {
    const rs = rows.filter((r) => r.policy === p && r.concurrency === Math.min(...levels));
    return `| ${p} | ${PHASES.map((k) => median(rs.map((r) => r.phaseMs[k])).toFixed(2)).join(' | ')} | ${median(rs.map((r) => r.p50Ms)).toFixed(2)} |`;
  }),
  '', `Checks: ${JSON.stringify(checks)}`, '',
].join('\n');
writeFileSync(join(out, 'load-test.md'), md);
writeFileSync(join(out, 'load-test.svg'), linePlot(policies.map((p) => {
  const s = summary.filter((x) => x.policy === p);
  return { label: p, x: s.map((x) => x.concurrency), y: s.map((x) => x.tokensPerSecond) };
}), { title: 'eaglet serve: throughput vs concurrency', xLabel: 'concurrent clients', yLabel: 'tokens/s' }));
process.stdout.write(md);
await g.dispose();
await reference.dispose();
await generateDefault?.dispose();
process.exitCode = mismatches > 0 ? 1 : 0;
