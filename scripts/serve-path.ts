/**
 * Where a served request's time goes beyond the engine's, at concurrency 1 (issue 15): the
 * SmartSpec server as the load test starts it, a client in a worker thread, and timestamps
 * along the path (process.hrtime, comparable across threads). Per request and client:
 *
 *   send>req    client builds and writes the request -> the server's 'request' event
 *   req>submit  body read, JSON parse, validation, request set-up -> Engine.submit
 *   engine      Engine.submit -> its stream ends (prefill and decoding)
 *   end>write   the generator's end -> the reply handed to the socket ('finish')
 *   write>head  'finish' -> the client holds the reply's first bytes
 *   head>parsed the client reads and parses the reply
 *   http        the request's client latency less `engine`
 *
 * and, interleaved request by request (order rotated), the same engine called in-process
 * (Engine.submit, no HTTP). Median (q1-q3) over the requests.
 *
 *   node --import tsx scripts/serve-path.ts [--requests 30] [--max-new-tokens 48]
 *     [--clients net,node-http] [--max-batch 16] [--threads 1]
 */
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { loadGenerator } from '../src/api.ts';
import { DEFAULT_DIR } from '../src/default-model.ts';
import { parseFlags, type FlagSpec } from '../src/option-schema.ts';
import { serve } from '../src/serve/server.ts';
import { spread } from '../src/util/stats.ts';
import type { PathJob, PathStamps } from './serve-path-client.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'requests', type: 'int', min: 1, default: 30, meta: 'N', help: 'timed requests per client (after 3 warm-up ones)' },
  { flag: 'max-new-tokens', type: 'int', min: 1, default: 48, meta: 'N', help: 'max_tokens of each request' },
  { flag: 'clients', type: 'string', default: 'net,node-http', meta: 'LIST', help: 'net (the load test\'s) and/or node-http' },
  { flag: 'max-batch', type: 'int', min: 1, default: 16, meta: 'B', help: 'batch slots (as the load test: its highest concurrency)' },
  { flag: 'threads', type: 'int', min: 1, default: 1, meta: 'N', help: 'ORT intra-op threads' },
];
const f = parseFlags(process.argv.slice(2), FLAGS);
const R = f.requests as number, N = f.maxNewTokens as number, clients = String(f.clients).split(',') as PathJob['client'][];
for (const c of clients) if (c !== 'net' && c !== 'node-http') throw new Error(`--clients: net or node-http, got ${c}`);
const now = () => Number(process.hrtime.bigint()) / 1e6;
const prompts = readFileSync(join(DEFAULT_DIR, 'heldout-prompts.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as number[]);
const g = await loadGenerator({ threads: f.threads as number, keepWeights: true });
const s = await serve(g, { port: 0, maxBatch: f.maxBatch as number, policy: 'smartspec', maxQueue: 1024, threads: f.threads as number, fusedRound: true });
const engine = s.handler.engine;

// Server-side stamps of the request in flight (one at a time).
let at: Record<string, number> = {};
s.server.prependListener('request', (_req, res) => {
  at.req = now();
  res.once('finish', () => (at.write = now()));
});
const submit = engine.submit.bind(engine);
engine.submit = (prompt, opts, signal) => {
  at.submit = now();
  const it = submit(prompt, opts, signal), next = it.next.bind(it);
  it.next = async (...a: [] | [unknown]) => {
    const r = await next(...a);
    if (r.done) at.end = now();
    return r;
  };
  return it;
};

const worker = new Worker(`import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => m.tsImport(${JSON.stringify(new URL('./serve-path-client.ts', import.meta.url).href)}, ${JSON.stringify(import.meta.url)}))`, { eval: true });
const ask = <T>(m: PathJob | 'poll'): Promise<T> =>
  new Promise((resolve, reject) => {
    worker.once('message', (r: T & { error?: string }) => (r.error ? reject(new Error(r.error)) : resolve(r)));
    worker.postMessage(m);
  });
await ask('poll');

async function inProcess(prompt: number[]): Promise<number> {
  const t0 = now(), it = submit(prompt, { maxNewTokens: N, temperature: 0 });
  for (let r = await it.next(); !r.done; r = await it.next());
  return now() - t0;
}

const COLS = ['total', 'send>req', 'req>submit', 'engine', 'end>write', 'write>head', 'head>parsed', 'http'] as const;
const rows = new Map<string, number[][]>([...clients.map((c): [string, number[][]] => [c, []]), ['in-process', []]]);
const methods = [...rows.keys()];
for (let j = -3; j < R; j++) {
  const prompt = prompts[(j + 3) % prompts.length];
  for (let k = 0; k < methods.length; k++) {
    const m = methods[(k + j + 3) % methods.length];
    if (m === 'in-process') {
      const ms = await inProcess(prompt);
      if (j >= 0) rows.get(m)!.push([ms]);
      continue;
    }
    at = {};
    const c = await ask<PathStamps>({ client: m as PathJob['client'], url: s.url, prompt, maxTokens: N });
    const total = c.end - c.send, gen = at.end - at.submit;
    if (j >= 0) rows.get(m)!.push([total, at.req - c.send, at.submit - at.req, gen, at.write - at.end, c.head - at.write, c.end - c.head, total - gen]);
  }
}
const show = (xs: number[]) => {
  const q = spread(xs);
  return `${q.median.toFixed(3)} (${q.q1.toFixed(3)}-${q.q3.toFixed(3)})`;
};
console.log(`ms per request, median (q1-q3) of ${R}; ${N}-token greedy completions, SmartSpec server (max batch ${f.maxBatch}, ${f.threads} thread(s))`);
for (const [m, r] of rows) console.log(`${m}: ${r[0].map((_, i) => `${m === 'in-process' ? 'total' : COLS[i]} ${show(r.map((x) => x[i]))}`).join(', ')}`);
console.log(`load average at the end: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
worker.postMessage('close');
await worker.terminate();
await s.close({ cancelAfterMs: 0 });
await g.dispose();
