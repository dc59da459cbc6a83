/**
 * The load test's clients (scripts/load-test.ts), in a worker thread: the server's event loop
 * then spends nothing on building requests or parsing replies, as with clients in another
 * process. Each message is one level: `c` closed-loop clients over keep-alive connections
 * send the prompts in order (greedy completions of `maxTokens`); the reply lists each
 * request's ids and latency, and the level's wall time (first send to last reply).
 */
import { parentPort } from 'node:worker_threads';
import { Connection } from './http-client.ts';

export interface LevelJob {
  url: string;
  prompts: number[][];
  concurrency: number;
  maxTokens: number;
}

export interface LevelResult {
  /** Per prompt, in the job's order: the reply's token ids and its latency (ms). */
  replies: { ids: number[]; ms: number }[];
  wallMs: number;
}

async function complete(conn: Connection, prompt: number[], maxTokens: number): Promise<{ ids: number[]; ms: number }> {
  const start = performance.now();
  const r = await conn.send('POST', '/v1/completions', JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0 }));
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.body}`);
  return { ids: JSON.parse(r.body).choices[0].token_ids, ms: performance.now() - start };
}

async function open(url: string): Promise<Connection> {
  const u = new URL(url), conn = new Connection(u.hostname, Number(u.port));
  await conn.ready;
  const r = await conn.send('GET', '/health');
  if (r.status !== 200) throw new Error(`GET /health: HTTP ${r.status}`);
  return conn;
}

async function run(job: LevelJob): Promise<LevelResult> {
  const replies: LevelResult['replies'] = new Array(job.prompts.length);
  let next = 0;
  // Connections are kept alive within a level only: a server closes idle ones (after 5 s), and a
  // request racing that close would fail. The level's c connections open before its clock
  // starts (one GET /health each, at once): a kept-alive client does not connect per request,
  // and connecting made the first requests reach the server one engine step apart.
  const conns = await Promise.all(Array.from({ length: job.concurrency }, () => open(job.url)));
  // While the level runs, the clients' thread polls instead of sleeping between replies: on this
  // machine (a VM) a thread that sleeps through a 10 ms reply takes ~0.6 ms to wake (a bare
  // node:http server answering after 10 ms of work: 1.3 ms per request over its work, 0.7 ms
  // with the client polling), which is the client's latency, not the server's.
  let polling = true;
  const poll = () => {
    if (polling) setImmediate(poll);
  };
  setImmediate(poll);
  const start = performance.now();
  try {
    await Promise.all(conns.map(async (conn) => {
      while (next < job.prompts.length) {
        const i = next++;
        replies[i] = await complete(conn, job.prompts[i], job.maxTokens);
      }
    }));
    return { replies, wallMs: performance.now() - start };
  } finally {
    polling = false;
    for (const c of conns) c.close();
  }
}

// 'spin' / 'rest': poll as during a level, with no requests, until told to rest: the load test's
// single-request yardstick runs beside the same busy client thread as the servers do (one of this
// machine's two cores), so their ratio does not credit the yardstick with a core the servers lacked.
let spinning = false;
const spin = () => {
  if (spinning) setImmediate(spin);
};
parentPort!.on('message', (job: LevelJob | 'close' | 'spin' | 'rest') => {
  if (job === 'close') {
    parentPort!.close();
    return;
  }
  if (job === 'spin' || job === 'rest') {
    if (job === 'spin' && !spinning) setImmediate(spin);
    spinning = job === 'spin';
    parentPort!.postMessage({ ok: true });
    return;
  }
  run(job).then((r) => parentPort!.postMessage({ ok: r }), (e: Error) => parentPort!.postMessage({ error: e.message }));
});
