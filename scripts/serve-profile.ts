// diagnostic (temporary): where a c=1 request's time goes, paired per prompt
import { readFileSync } from 'node:fs';
import { request, Agent } from 'node:http';
import { join } from 'node:path';
import { loadGenerator } from '../src/api.ts';
import { DEFAULT_DIR } from '../src/default-model.ts';
import { Generator } from '../src/generate/generator.ts';
import { serve } from '../src/serve/server.ts';

const N = 48, R = 16;
const prompts = readFileSync(join(DEFAULT_DIR, 'heldout-prompts.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as number[]);
const g = await loadGenerator({ threads: 1, keepWeights: true });
const gd = await loadGenerator({ threads: 1, fusedRound: 'auto' });
const policyArg = process.argv[2] ?? 'smartspec';
const s = await serve(g, { port: 0, maxBatch: 16, policy: policyArg, maxQueue: 1024, threads: 1, fusedRound: policyArg !== 'plain' });
const keep = new Agent({ keepAlive: true });
const G = () => ({ toServer: 0, serverToFinish: 0, finishToResponse: 0, responseToEnd: 0, n: 0 });
const gapsBy = { keep: G(), none: G() };
let arrive = 0, finish = 0;
s.server.on('request', (req, res) => { arrive = performance.now(); res.once('finish', () => (finish = performance.now())); });
function complete(prompt: number[], agent: Agent | false): Promise<number> {
  const t0 = performance.now();
  const body = JSON.stringify({ prompt, max_tokens: N, temperature: 0 });
  const gaps = agent ? gapsBy.keep : gapsBy.none;
  return new Promise((resolve, reject) => {
    const req = request(s.url + '/v1/completions', { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      const tr = performance.now();
      let t = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (t += c));
      res.on('end', () => { const n = JSON.parse(t).choices[0].token_ids.length; const te = performance.now(); gaps.toServer += arrive - t0; gaps.serverToFinish += finish - arrive; gaps.finishToResponse += tr - finish; gaps.responseToEnd += te - tr; gaps.n++; resolve(n); });
    });
    req.on('error', reject);
    req.end(body);
  });
}
const m = s.handler.engine.metrics;
const tot: Record<string, number> = {}, pre: Record<string, number> = {}, rounds: Record<string, number> = {};
const add = (k: string, ms: number, p = 0, r = 0) => { tot[k] = (tot[k] ?? 0) + ms; pre[k] = (pre[k] ?? 0) + p; rounds[k] = (rounds[k] ?? 0) + r; };
const genFused = new Generator({ target: gd.generator.parts.target, drafter: gd.generator.parts.drafter, policy: gd.newPolicy() });
let before = { ...m.phaseMs }, n0 = m.phased, toks = 0;
for (let rep = 0; rep < 4; rep++) {
  if (rep === 1) { before = { ...m.phaseMs }; n0 = m.phased; for (const k in tot) (tot[k] = 0), (pre[k] = 0), (rounds[k] = 0); toks = 0; }
  for (let i = 0; i < R; i++) {
    let t = performance.now();
    const r = await genFused.generate(prompts[i], { maxNewTokens: N, temperature: 0 });
    add('generate', performance.now() - t, r.stats.ms.prefill, r.stats.rounds ?? 0);
    toks += r.ids.length;
    t = performance.now();
    const it = s.handler.engine.submit(prompts[i], { maxNewTokens: N, temperature: 0 });
    let x; while (!(x = await it.next()).done);
    add('engine', performance.now() - t, x.value.ms.prefill, x.value.rounds ?? 0);
    t = performance.now();
    await complete(prompts[i], keep);
    add('http-keepalive', performance.now() - t);
    t = performance.now();
    await complete(prompts[i], false);
    add('http-noagent', performance.now() - t);
  }
}
const n = 3 * R;
console.log(policyArg, 'ms/request', Object.fromEntries(Object.entries(tot).map(([k, v]) => [k, +(v / n).toFixed(3)])), 'prefill', Object.fromEntries(Object.entries(pre).map(([k, v]) => [k, +(v / n).toFixed(3)])), 'rounds', Object.fromEntries(Object.entries(rounds).map(([k, v]) => [k, +(v / n).toFixed(2)])), 'tok/req', toks / n);
console.log('server phases ms/request', Object.fromEntries(Object.entries(m.phaseMs).map(([k, v]) => [k, +((v - (before as any)[k]) / (m.phased - n0)).toFixed(3)])));
for (const [k, gaps] of Object.entries(gapsBy)) console.log('gaps ms/request', k, Object.fromEntries(Object.entries(gaps).map(([k, v]) => [k, +(v / gaps.n).toFixed(3)])));
keep.destroy();
await s.close();
await g.dispose(); await gd.dispose();
