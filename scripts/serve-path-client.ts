/**
 * scripts/serve-path.ts's client, in a worker thread: one greedy completion per message, over a
 * kept-alive connection of the chosen client ('net': scripts/http-client.ts, as the load test;
 * 'node-http': node:http's client), answering with its timestamps (process.hrtime, ms). The
 * thread polls instead of sleeping while the server works, as the load test's clients do.
 */
import { Agent, request } from 'node:http';
import { parentPort } from 'node:worker_threads';
import { Connection } from './http-client.ts';

export interface PathJob {
  client: 'net' | 'node-http';
  url: string;
  prompt: number[];
  maxTokens: number;
}

/** send: before building the request; head: the reply's first bytes; end: the reply parsed. */
export interface PathStamps {
  send: number;
  head: number;
  end: number;
  ids: number[];
}

const now = () => Number(process.hrtime.bigint()) / 1e6;
let conn: Connection | undefined;
let agent: Agent | undefined;

async function viaNet(job: PathJob): Promise<PathStamps> {
  if (!conn) {
    const u = new URL(job.url);
    conn = new Connection(u.hostname, Number(u.port));
    await conn.ready;
  }
  const send = now();
  const r = await conn.send('POST', '/v1/completions', JSON.stringify({ prompt: job.prompt, max_tokens: job.maxTokens, temperature: 0 }));
  const ids = JSON.parse(r.body).choices[0].token_ids;
  return { send, head: conn.firstByteAt, end: now(), ids };
}

function viaNodeHttp(job: PathJob): Promise<PathStamps> {
  agent ??= new Agent({ keepAlive: true });
  const send = now(), body = JSON.stringify({ prompt: job.prompt, max_tokens: job.maxTokens, temperature: 0 });
  return new Promise((resolve, reject) => {
    const req = request(job.url + '/v1/completions', { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      const head = now();
      let s = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (s += c));
      res.on('end', () => resolve({ send, head, end: now(), ids: JSON.parse(s).choices[0].token_ids }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

let polling = false;
const poll = () => {
  if (polling) setImmediate(poll);
};
parentPort!.on('message', (job: PathJob | 'poll' | 'close') => {
  if (job === 'close') {
    polling = false;
    conn?.close();
    agent?.destroy();
    parentPort!.close();
    return;
  }
  if (job === 'poll') {
    if (!polling) setImmediate(poll);
    polling = true;
    parentPort!.postMessage('ok');
    return;
  }
  (job.client === 'net' ? viaNet(job) : viaNodeHttp(job)).then((r) => parentPort!.postMessage(r), (e: Error) => parentPort!.postMessage({ error: e.message }));
});
