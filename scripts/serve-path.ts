/**
 * Where a served request's time goes beyond the engine's, at concurrency 1 (issue 15): the
 * SmartSpec server as the load test starts it, a client in a worker thread, and timestamps
 * along the path (process.hrtime, comparable across threads). Per served request:
 *
 *   send>req     client builds and writes the request -> the server's 'request' event
 *   req>submit   body read, JSON parse, validation, request set-up -> Engine.submit
 *   engine       Engine.submit -> its last chunk (prefill and decoding; the reply goes out on that
 *                chunk, and the stream's end, the slot's release, runs after it); prefill: to the first token
 *   end>write    the last chunk -> the reply handed to the socket ('finish'), split into:
 *     end>text     the last chunk -> the reply's text decode
 *     text         the tokenizer's decode of the ids
 *     json         the decode's end -> writeHead (the reply object, JSON.stringify)
 *     writeHead    writeHead -> res.end
 *     res.end      res.end's call (node:http writes head and body: the socket write)
 *     end>finish   res.end's return -> 'finish'
 *   write>head   'finish' -> the client holds the reply's first bytes (< 0: before 'finish')
 *   head>parsed  the client reads and parses the reply
 *   http         the request's client latency less `engine`
 *
 * and, interleaved request by request (order rotated; with exactly two methods, ABBA), the same
 * engine called in-process (`in-process`: Engine.submit, no HTTP) and `library`: what the load
 * test's concurrency-1 yardstick runs, `eaglet generate --policy static-3` (the fused round, a
 * generator loaded apart). With two methods, also the per-request paired ratio of their totals.
 * Median (q1-q3) over the requests.
 *
 *   node --import tsx scripts/serve-path.ts [--requests 30] [--max-new-tokens 48]
 *     [--methods net,node-http,in-process,library] [--server-poll] [--max-batch 16] [--threads 1]
 *
 * --server-poll: the server's thread polls (setImmediate) instead of sleeping in epoll between
 * requests: what its wake-up costs (an experiment, not a server option).
 */
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { loadGenerator } from '../src/api.ts';
import { DEFAULT_DIR } from '../src/default-model.ts';
import { Generator } from '../src/generate/generator.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { StaticPolicy } from '../src/policies/policy.ts';
import { serve } from '../src/serve/server.ts';
import { spread } from '../src/util/stats.ts';
import type { PathJob, PathStamps } from './serve-path-client.ts';
import { UsageError } from '../src/errors.ts';

const METHODS = ['net', 'node-http', 'in-process', 'library'];
const FLAGS: FlagSpec[] = [
  { flag: 'requests', type: 'int', min: 1, default: 30, meta: 'N', help: 'timed requests per method (after 3 warm-up ones)' },
  { flag: 'max-new-tokens', type: 'int', min: 1, default: 48, meta: 'N', help: 'max_tokens of each request' },
  { flag: 'methods', type: 'string', default: METHODS.join(','), meta: 'LIST', help: 'net (the load test\'s client), node-http (node:http\'s), in-process (the engine), library (generate --policy static-3)' },
  { flag: 'server-poll', type: 'bool', help: 'the server thread polls while idle (what its wake-up from epoll costs)' },
  { flag: 'max-batch', type: 'int', min: 1, default: 16, meta: 'B', help: 'batch slots (as the load test: its highest concurrency)' },
  { flag: 'threads', type: 'int', min: 1, default: 1, meta: 'N', help: 'ORT intra-op threads' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const R = f.requests as number, N = f.maxNewTokens as number, methods = String(f.methods).split(',');
for (const m of methods) if (!METHODS.includes(m)) throw new UsageError('--methods', `${METHODS.join(', ')}; got ${m}`);
const now = () => Number(process.hrtime.bigint()) / 1e6;
const prompts = readFileSync(join(DEFAULT_DIR, 'heldout-prompts.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as number[]);
const g = await loadGenerator({ threads: f.threads as number, keepWeights: true });
const s = await serve(g, { port: 0, maxBatch: f.maxBatch as number, policy: 'smartspec', maxQueue: 1024, threads: f.threads as number, fusedRound: true });
const engine = s.handler.engine;

// Server-side stamps of the request in flight (one at a time).
let at: Record<string, number> = {};
s.server.prependListener('request', (_req, res) => {
  at.req = now();
  const writeHead = res.writeHead.bind(res), end = res.end.bind(res);
  res.writeHead = ((...a: Parameters<typeof res.writeHead>) => ((at.head = now()), writeHead(...a))) as typeof res.writeHead;
  res.end = ((...a: Parameters<typeof res.end>) => {
    at.endCall = now();
    const r = end(...a);
    at.endReturn = now();
    return r;
  }) as typeof res.end;
  res.once('finish', () => (at.write = now()));
});
const tok = g.tokenizer!, decode = tok.decode.bind(tok);
tok.decode = (ids) => {
  at.decode0 = now();
  const t = decode(ids);
  at.decode1 = now();
  return t;
};
let serverPolling = f.serverPoll === true;
const serverPoll = () => {
  if (serverPolling) setImmediate(serverPoll);
};
setImmediate(serverPoll);
const submit = engine.submit.bind(engine);
engine.submit = (prompt, opts, signal) => {
  at.submit = now();
  const it = submit(prompt, opts, signal), next = it.next.bind(it);
  it.next = async (...a: [] | [unknown]) => {
    const r = await next(...a);
    if (r.done) at.end = now();
    else {
      at.first ??= now();
      if (r.value.end) at.last = now(); // the last chunk: the reply goes out on it, before the stream's end
    }
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

/** A stream to its end: [total, prefill (to the first token)] ms. */
async function timed(it: AsyncGenerator<unknown, unknown>): Promise<number[]> {
  const t0 = now();
  let first = 0;
  for (let r = await it.next(); !r.done; r = await it.next()) first ||= now();
  return [now() - t0, first - t0];
}
// `eaglet generate --policy static-3`: the fused round with a static length, a generator loaded apart.
const lib = methods.includes('library') ? await loadGenerator({ threads: f.threads as number, fusedRound: 'auto' }) : undefined;
const library = (prompt: number[]) => {
  const parts = lib!.generator.parts, shape = parts.drafter!.shape;
  return timed(new Generator({ ...parts, policy: new StaticPolicy(shape.maxDepth, shape.totalTokens) }).stream(prompt, { maxNewTokens: N, temperature: 0 }));
};

const COLS = ['total', 'send>req', 'req>submit', 'engine', 'prefill', 'end>write', 'end>text', 'text', 'json', 'writeHead', 'res.end', 'end>finish', 'write>head', 'head>parsed', 'http'];
const rows = new Map<string, number[][]>(methods.map((m) => [m, []]));
for (let j = -3; j < R; j++) {
  const prompt = prompts[(j + 3) % prompts.length];
  for (let k = 0; k < methods.length; k++) {
    // Two methods: ABBA (each follows the other as often as itself); more: rotated.
    const m = methods[methods.length === 2 ? (k + (j & 1)) % 2 : (k + j + 3) % methods.length];
    if (m === 'in-process' || m === 'library') {
      const ms = await (m === 'library' ? library(prompt) : timed(submit(prompt, { maxNewTokens: N, temperature: 0 })));
      if (j >= 0) rows.get(m)!.push(ms);
      continue;
    }
    at = {};
    const c = await ask<PathStamps>({ client: m as PathJob['client'], url: s.url, prompt, maxTokens: N });
    const total = c.end - c.send, gen = at.last - at.submit;
    if (j >= 0)
      rows.get(m)!.push([total, at.req - c.send, at.submit - at.req, gen, at.first - at.submit, at.write - at.last, at.decode0 - at.last, at.decode1 - at.decode0,
        at.head - at.decode1, at.endCall - at.head, at.endReturn - at.endCall, at.write - at.endReturn, c.head - at.write, c.end - c.head, total - gen]);
  }
}
const show = (xs: number[]) => {
  const q = spread(xs);
  return `${q.median.toFixed(3)} (${q.q1.toFixed(3)}-${q.q3.toFixed(3)})`;
};
console.log(`ms per request, median (q1-q3) of ${R}; ${N}-token greedy completions, SmartSpec server (max batch ${f.maxBatch}, ${f.threads} thread(s))${f.serverPoll ? ', server polling' : ''}`);
for (const [m, r] of rows) console.log(`${m}: ${r[0].map((_, i) => `${(r[0].length === 2 ? ['total', 'prefill'] : COLS)[i]} ${show(r.map((x) => x[i]))}`).join(', ')}`);
if (methods.length === 2) {
  const [a, b] = methods.map((m) => rows.get(m)!);
  console.log(`${methods[1]} / ${methods[0]}, total per request, paired: ${show(a.map((x, i) => b[i][0] / x[0]))}`);
}
console.log(`load average at the end: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
serverPolling = false;
worker.postMessage('close');
await worker.terminate();
await s.close({ cancelAfterMs: 0 });
await g.dispose();
await lib?.dispose();
