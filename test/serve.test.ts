/**
 * `eaglet serve` over real HTTP: the server listens on port 0 (node:http) and the tests speak
 * HTTP to it. Greedy outputs under concurrent load equal single-request plain decoding.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { loadGenerator, type LoadedGenerator } from '../src/api.ts';
import { DEFAULT_PATHS } from '../src/default-model.ts';
import { serve, type RunningServer } from '../src/serve/server.ts';
import { Engine } from '../src/serve/engine.ts';
import { createHandler, type HandlerOptions } from '../src/serve/http.ts';
import { UsageError } from '../src/errors.ts';
import type { EagleDrafter } from '../src/generate/eagle-drafter.ts';
import type { DraftPass } from '../src/runtime/draft.ts';
import type { SmartSpecPolicy } from '../src/policies/smartspec.ts';

const prompts = readFileSync(join(DEFAULT_PATHS.target, '..', 'heldout-prompts.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as number[]);

let g: LoadedGenerator, reference: LoadedGenerator;
const plainCache = new Map<string, number[]>();
/**
 * Single-request plain greedy decoding, as `eaglet generate --no-spec` runs it: its own
 * generator and session (a session must not be shared with a server that is decoding).
 */
let plainQueue: Promise<unknown> = Promise.resolve();
function plain(prompt: number[], maxNewTokens: number): Promise<number[]> {
  const key = `${prompt.join(',')}/${maxNewTokens}`;
  const run = plainQueue.then(async () => {
    if (!plainCache.has(key)) plainCache.set(key, (await reference.generate(prompt, { maxNewTokens, temperature: 0 })).ids);
    return plainCache.get(key)!;
  });
  plainQueue = run.catch(() => {});
  return run;
}

before(async () => {
  g = await loadGenerator({ threads: 1, keepWeights: true });
  reference = await loadGenerator({ threads: 1, draft: null });
});
after(async () => {
  await g.dispose();
  await reference.dispose();
});

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function http(url: string, method: string, body?: string | object, opts: { timeoutMs?: number } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const req = request(url, { method, headers: data ? { 'content-type': 'application/json' } : {}, timeout: opts.timeoutMs ?? 60_000 }, (res) => {
      let s = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (s += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: s }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('client timeout')));
    req.end(data);
  });
}

const post = (s: RunningServer, path: string, body: string | object) => http(s.url + path, 'POST', body);

/** The `data:` events of an SSE body, parsed (the final [DONE] as the string). */
function events(body: string): unknown[] {
  assert.ok(body.endsWith('data: [DONE]\n\n'), `stream must end with data: [DONE], got ...${body.slice(-80)}`);
  return body.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => (e === 'data: [DONE]' ? '[DONE]' : JSON.parse(e.slice(6))));
}

test('greedy completions under concurrent load equal single-request plain decoding (smartspec, static, plain; streamed and not)', async () => {
  for (const policy of ['smartspec', 'static-2', 'plain']) {
    const s = await serve(g, { port: 0, maxBatch: 3, policy });
    try {
      const jobs = prompts.slice(0, 7).map(async (p, i) => {
        const maxTokens = 12 + 5 * i;
        const stream = i % 2 === 1;
        const r = await post(s, '/v1/completions', { prompt: p, max_tokens: maxTokens, temperature: 0, stream });
        assert.equal(r.status, 200, r.body);
        let ids: number[];
        if (stream) {
          const ev = events(r.body) as { choices: { token_ids: number[]; finish_reason: string | null }[] }[];
          ids = ev.slice(0, -1).flatMap((e) => e.choices[0].token_ids);
          assert.equal(ev[ev.length - 2].choices[0].finish_reason !== null, true);
        } else ids = JSON.parse(r.body).choices[0].token_ids;
        assert.deepEqual(ids, await plain(p, maxTokens), `${policy}: request ${i} differs from plain decoding`);
      });
      await Promise.all(jobs);
      const m = (await http(s.url + '/metrics', 'GET')).body;
      const passes = Number(/eaglet_target_passes_total (\d+)/.exec(m)![1]);
      const mean = Number(/eaglet_mean_batch_size ([\d.]+)/.exec(m)![1]);
      assert.ok(mean > 1.3, `${policy}: requests were not batched (mean batch ${mean} over ${passes} passes)`);
      assert.match(m, /eaglet_speculation_length_bucket\{le="\+Inf"\} \d+/);
      // Every answered request's phases are counted, and they account for its time.
      assert.match(m, /eaglet_request_phase_requests_total 7\n/);
      for (const phase of ['read', 'parse', 'prefill', 'decode', 'text', 'reply']) assert.match(m, new RegExp(`eaglet_request_phase_seconds_total\\{phase="${phase}"\\} [\\d.]+\n`));
      assert.ok(Number(/phase="decode"\} ([\d.]+)/.exec(m)![1]) > 0, 'decoding took no time');
      if (policy === 'plain') assert.match(m, /eaglet_speculation_length_sum 0\n/);
      else assert.doesNotMatch(m, /eaglet_speculation_length_sum 0\n/);
    } finally {
      await s.close();
    }
  }
});

/** Every head call through the engine's draft lane from now on (one view serves every slot): its slot, first position and rows. */
function headCalls(e: Engine): { slot: number; from: number; rows: number }[] {
  const slots = (e as unknown as { slots: { head: EagleDrafter<DraftPass> }[] }).slots;
  const view = slots[0].head.session, forward = view.forward.bind(view);
  const calls: { slot: number; from: number; rows: number }[] = [];
  view.forward = (cache, tokens, features, positions, tree, opts) => {
    calls.push({ slot: slots.findIndex((s) => s.head.cache === cache), from: positions[0], rows: tokens.length });
    return forward(cache, tokens, features, positions, tree, opts);
  };
  return calls;
}

/** A stream's ids; `onFirst` runs at its first chunk. */
async function ids(it: AsyncGenerator<{ ids: number[] }, unknown>, onFirst?: () => void): Promise<number[]> {
  const out: number[] = [];
  for await (const c of it) {
    if (!out.length) onFirst?.();
    out.push(...c.ids);
  }
  return out;
}

/** Request `a` (slot 0) and, once `a` has its first token, `b` (slot 1); both must equal plain decoding. */
async function pair(e: Engine, a: number[], b: number[], what: string): Promise<void> {
  const opts = { temperature: 0, stopAtEos: false };
  let second!: Promise<number[]>;
  const first = await ids(e.submit(a, { ...opts, maxNewTokens: 40 }), () => (second = ids(e.submit(b, { ...opts, maxNewTokens: 16 }))));
  assert.deepEqual(first, await plain(a, 40), `${what}: the first request differs from plain decoding`);
  assert.deepEqual(await second, await plain(b, 16), `${what}: the second request differs from plain decoding`);
}

test("the engine alone decides whether a request's head reads its prompt at the prefill: beside another request (static; smartspec where the batch could draft), not alone, not where no round could draft; outputs equal plain decoding", async () => {
  // No fused round: every request drafts with the batched head, alone too.
  const e = new Engine(g, { maxBatch: 2, policy: 'smartspec' });
  await e.start(1);
  const calls = headCalls(e), planner = e.planner!;
  // The read at the prefill is one call of the prompt's rows but the last, from position 0; a
  // first draft catching up lazily reads from 0 to at least the root's row (P rows or more).
  const readAtPrefill = (slot: number, P: number) => calls.some((c) => c.slot === slot && c.from === 0 && c.rows === P - 1);
  const [a, b] = [prompts[2], prompts[3]];
  const { jointMax } = planner, draftScales = planner.passScale.slice(1);
  try {
    for (const policy of ['static-3', 'smartspec']) {
      e.setPolicy(policy);
      calls.length = 0;
      assert.deepEqual(await ids(e.submit(a, { temperature: 0, stopAtEos: false, maxNewTokens: 12 })), await plain(a, 12), `${policy}: alone, the reply differs from plain decoding`);
      // Alone: its first round's catch-up reads the prompt (one head call, not two; fails on the old code at static-3).
      assert.equal(readAtPrefill(0, a.length), false, `${policy}: a request alone read its prompt at the prefill`);
      calls.length = 0;
      await pair(e, a, b, policy);
      assert.deepEqual([readAtPrefill(0, a.length), readAtPrefill(1, b.length)], [false, true], `${policy}: the prompt reads at the prefill (alone, beside one)`);
    }
    // A batch of 2 where no round could draft: past the joint search, and draft passes priced far
    // above what any accepted draft gains (the all-zero bound); the joining head then reads nothing.
    planner.jointMax = 1;
    planner.passScale.fill(1e6, 1); // every draft level, the first and the later ones
    assert.equal(planner.mayDraft(2), false);
    calls.length = 0;
    await pair(e, a, b, 'smartspec, no round could draft');
    assert.deepEqual(calls, [], 'smartspec, no round could draft: a head call');
  } finally {
    planner.jointMax = jointMax;
    planner.passScale.set(draftScales, 1);
    await e.drain();
    await e.dispose();
  }
});

test("a request joining a running one: its head reads the prompt at the prefill, so its first drafted round reads 1 row and SmartSpec prices 1; outputs equal plain decoding", async () => {
  // Two slots: the first request (slot 0, alone at its prefill: its fused round reads its prompt
  // lazily, as `eaglet generate` does) is decoding when the second (slot 1) arrives.
  const e = new Engine(g, { maxBatch: 2, policy: 'smartspec', fusedRound: true });
  await e.start(1);
  const calls = headCalls(e);
  // SmartSpec's catch-up rows for each request's first plan (what it prices that step's first draft level at).
  const planner = e.planner!, depthFor = planner.depthFor.bind(planner), firstCatchUp = new Map<SmartSpecPolicy, number>();
  planner.depthFor = (p, max) => {
    if (!firstCatchUp.has(p)) firstCatchUp.set(p, p.catchUpRows);
    return depthFor(p, max);
  };
  try {
    for (const policy of ['static-3', 'smartspec']) {
      e.setPolicy(policy);
      calls.length = 0;
      firstCatchUp.clear();
      const [a, b] = [prompts[0], prompts[1]];
      await pair(e, a, b, policy);
      const mine = calls.filter((c) => c.slot === 1);
      // Its first head call: the prompt's rows but the last, from position 0 (lazily: all 32, at its first draft).
      assert.deepEqual(mine[0], { slot: 1, from: 0, rows: b.length - 1 }, `${policy}: the head's first call on the second request's slot`);
      if (policy === 'static-3') assert.ok(mine[1].rows <= 2, `static-3: the first drafted round's first level read ${mine[1].rows} rows`);
      else assert.deepEqual([...firstCatchUp.values()].slice(1), [1], 'smartspec: the second request\'s first plan prices a 1-row catch-up');
    }
  } finally {
    await e.drain();
    await e.dispose();
  }
});

/** Requests `ps` submitted together (greedy, `n` tokens each): their ids and the generators' stats. */
async function together(e: Engine, ps: number[][], n: number): Promise<{ ids: number[][]; draftPasses: number[] }> {
  const runs = ps.map(async (p) => {
    const it = e.submit(p, { temperature: 0, stopAtEos: false, maxNewTokens: n }), out: number[] = [];
    for (let r = await it.next(); ; r = await it.next()) {
      if (r.done) return { ids: out, draftPasses: r.value.draftPasses };
      out.push(...r.value.ids);
    }
  });
  const all = await Promise.all(runs);
  return { ids: all.map((r) => r.ids), draftPasses: all.map((r) => r.draftPasses) };
}

test('a SmartSpec batch planned 0 for every request runs what a plain batch runs: the same target calls and tokens, the same outputs fetched, no head or fused-round pass; outputs equal plain decoding', async () => {
  const e = new Engine(g, { maxBatch: 4, policy: 'smartspec', fusedRound: true });
  await e.start(1);
  const planner = e.planner!, { jointMax } = planner, draftScales = planner.passScale.slice(1);
  // Where no raise can pay at any batch size above 1 (c = 16 on this pair, served): the all-zero bound.
  planner.jointMax = 1;
  planner.passScale.fill(1e6, 1);
  // What each packed target pass fetched, and the lone (single-request session) calls' fetch.
  const lane = (e as unknown as { targetLane: { slotSession: { inner: { run: (...a: unknown[]) => Promise<unknown> } }; session: { forward: (...a: unknown[]) => Promise<unknown> } } }).targetLane;
  const fetched = new Set<string>(), inner = lane.slotSession.inner, run = inner.run.bind(inner), forward = lane.session.forward.bind(lane.session);
  inner.run = (feeds: unknown, fetches?: unknown) => (fetched.add(`packed ${(fetches as string[]).join(',')}`), run(feeds, fetches));
  lane.session.forward = (...a: unknown[]) => (fetched.add(`lone logits=${(a[4] as { logits: boolean }).logits}`), forward(...a));
  const ps = [prompts[4], prompts[5], prompts[6], prompts[7]], n = 14;
  const measure = async (policy: string) => {
    e.setPolicy(policy);
    fetched.clear();
    const t0 = { ...e.targetStats }, d0 = e.draftStats!.passes, f0 = e.fusedRounds, r0 = e.metrics.depthCounts.slice();
    const out = await together(e, ps, n);
    for (const [i, p] of ps.entries()) assert.deepEqual(out.ids[i], await plain(p, n), `${policy}: request ${i} differs from plain decoding`);
    const t = e.targetStats;
    return { calls: t.calls - t0.calls, tokens: t.tokens - t0.tokens, draftPasses: e.draftStats!.passes - d0, fusedRounds: e.fusedRounds - f0, requestDraftPasses: out.draftPasses, drafted: e.metrics.depthCounts.slice(1).reduce((a, x, d) => a + x - r0[d + 1], 0), fetched: [...fetched].sort() };
  };
  try {
    const p = await measure('plain'), s = await measure('smartspec');
    assert.deepEqual(s, p, 'a SmartSpec batch planned all-zero against a plain batch');
    assert.deepEqual([p.draftPasses, p.fusedRounds, p.drafted], [0, 0, 0]);
    assert.equal(p.calls, ps.length * n); // a prefill and n - 1 rounds each
    assert.ok(p.fetched.some((x) => x.startsWith('packed')), 'no packed target pass ran');
  } finally {
    planner.jointMax = jointMax;
    planner.passScale.set(draftScales, 1);
    await e.drain();
    await e.dispose();
  }
});

test('requests switching between steps planned 0 and drafted steps, their heads catching up on the plain rounds at their next draft: outputs equal plain decoding', async () => {
  const e = new Engine(g, { maxBatch: 3, policy: 'smartspec', fusedRound: true });
  await e.start(1);
  const planner = e.planner!, { jointMax } = planner, draftScales = planner.passScale.slice(1), calls = headCalls(e);
  // Every 4 target steps the batch turns: all-zero (draft passes priced so that no raise pays),
  // then every request drafted 3 deep (as the start-up calibration forces lengths).
  planner.jointMax = 1;
  planner.passScale.fill(1e6, 1);
  const depthFor = planner.depthFor.bind(planner);
  planner.depthFor = (p, max) => ((planner.forced = Math.floor(e.targetStats.steps / 4) % 2 ? 3 : undefined), depthFor(p, max));
  const ps = [prompts[8], prompts[9], prompts[10]], n = 40;
  try {
    const r0 = e.metrics.depthCounts.slice();
    const out = await together(e, ps, n);
    for (const [i, p] of ps.entries()) assert.deepEqual(out.ids[i], await plain(p, n), `request ${i} differs from plain decoding`);
    const rounds = e.metrics.depthCounts.map((x, d) => x - r0[d]);
    assert.ok(rounds[0] > 10 && rounds.slice(1).reduce((a, x) => a + x, 0) > 10, `rounds by depth ${rounds}: both kinds of step must run`);
    // A draft after plain rounds reads their rows in its first level (not the prompt read at 0).
    assert.ok(calls.some((c) => c.from > 0 && c.rows >= 3), 'no head catch-up over plain rounds');
  } finally {
    planner.depthFor = depthFor;
    planner.forced = undefined;
    planner.jointMax = jointMax;
    planner.passScale.set(draftScales, 1);
    await e.drain();
    await e.dispose();
  }
});

test('text prompts, SSE text equals the non-streamed text, chat with the fallback and with a model template, stop strings', async () => {
  const s = await serve(g, { port: 0, maxBatch: 2 });
  try {
    const full = JSON.parse((await post(s, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 24, temperature: 0 })).body);
    const text: string = full.choices[0].text;
    assert.equal(full.usage.completion_tokens, 24);
    assert.equal(full.usage.prompt_tokens, g.encode('Once upon a time').length);
    assert.equal(text, g.tokenizer!.decode(full.choices[0].token_ids));
    const sse = events((await post(s, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 24, temperature: 0, stream: true })).body) as { choices: { text: string }[] }[];
    assert.equal(sse.slice(0, -1).map((e) => e.choices[0].text).join(''), text);

    // A stop string from the middle of the greedy text cuts it there, streamed or not.
    const at = Math.floor(text.length / 2), stop = text.slice(at, at + 3);
    const cut = text.slice(0, text.indexOf(stop));
    const r = JSON.parse((await post(s, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 24, temperature: 0, stop: [stop, 'never-there'] })).body);
    assert.equal(r.choices[0].text, cut);
    assert.equal(r.choices[0].finish_reason, 'stop');
    const rs = events((await post(s, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 24, temperature: 0, stop, stream: true })).body) as { choices: { text: string; finish_reason: string | null }[] }[];
    assert.equal(rs.slice(0, -1).map((e) => e.choices[0].text).join(''), cut);
    assert.equal(rs[rs.length - 2].choices[0].finish_reason, 'stop');

    // Chat without a model template: the fallback, "role: content" lines then "assistant:".
    const messages = [{ role: 'user', content: 'Write a loop' }];
    const chat = JSON.parse((await post(s, '/v1/chat/completions', { messages, max_tokens: 10, temperature: 0 })).body);
    assert.equal(chat.object, 'chat.completion');
    assert.equal(chat.choices[0].message.role, 'assistant');
    assert.deepEqual(chat.choices[0].token_ids, await plain(g.encode('user: Write a loop\nassistant:'), 10));
    const cs = events((await post(s, '/v1/chat/completions', { messages, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true } })).body) as { choices: { delta: { role?: string; content?: string }; finish_reason: string | null }[]; usage?: { completion_tokens: number } }[];
    assert.equal(cs[0].choices[0].delta.role, 'assistant');
    assert.equal(cs.slice(1, -1).map((e) => e.choices[0].delta.content ?? '').join(''), chat.choices[0].message.content);
    assert.equal(cs[cs.length - 2].usage?.completion_tokens, 10);
  } finally {
    await s.close();
  }
  // The model's own chat_template (tokenizer_config.json), rendered with Jinja.
  const dir = mkdtempSync(join(tmpdir(), 'eaglet-chat-'));
  try {
    cpSync(DEFAULT_PATHS.target, dir, { recursive: true });
    const cfgFile = join(dir, 'tokenizer_config.json');
    const cfg = JSON.parse(readFileSync(cfgFile, 'utf8'));
    cfg.chat_template = "{{ bos_token }}{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[ASSISTANT]{% endif %}";
    writeFileSync(cfgFile, JSON.stringify(cfg));
    const t = await serve(g, { port: 0, modelDir: dir });
    try {
      const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }];
      const r = JSON.parse((await post(t, '/v1/chat/completions', { messages, max_tokens: 6, temperature: 0 })).body);
      const want = g.tokenizer!.encode('<|endoftext|>[SYSTEM] Be brief.\n[USER] Hi\n[ASSISTANT]', { addBos: false });
      assert.equal(r.usage.prompt_tokens, want.length);
      assert.deepEqual(r.choices[0].token_ids, await plain(want, 6));
    } finally {
      await t.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad requests get one clear 400/404/405/413 JSON error naming the field; sampling with a seed repeats', async () => {
  const s = await serve(g, { port: 0, maxBodyBytes: 4096 });
  try {
    const long = Array.from({ length: 256 }, () => 5);
    const cases: [string, string | object, number, string | null][] = [
      ['/v1/completions', '{not json', 400, null],
      ['/v1/completions', '', 400, null],
      ['/v1/completions', '[1,2]', 400, null],
      ['/v1/completions', {}, 400, 'prompt'],
      ['/v1/completions', { prompt: 5 }, 400, 'prompt'],
      ['/v1/completions', { prompt: [] }, 400, 'prompt'],
      ['/v1/completions', { prompt: [1, 99999] }, 400, 'prompt'],
      ['/v1/completions', { prompt: [1, 2.5] }, 400, 'prompt'],
      ['/v1/completions', { prompt: long }, 400, 'prompt'],
      ['/v1/completions', { prompt: 'hi', max_tokens: 'ten' }, 400, 'max_tokens'],
      ['/v1/completions', { prompt: 'hi', max_tokens: 0 }, 400, 'max_tokens'],
      ['/v1/completions', { prompt: 'hi', temperature: '0' }, 400, 'temperature'],
      ['/v1/completions', { prompt: 'hi', temperature: 3 }, 400, 'temperature'],
      ['/v1/completions', { prompt: 'hi', top_p: 0 }, 400, 'top_p'],
      ['/v1/completions', { prompt: 'hi', seed: -1 }, 400, 'seed'],
      ['/v1/completions', { prompt: 'hi', seed: 1.5 }, 400, 'seed'],
      ['/v1/completions', { prompt: 'hi', stop: 7 }, 400, 'stop'],
      ['/v1/completions', { prompt: 'hi', stop: ['a', 'b', 'c', 'd', 'e'] }, 400, 'stop'],
      ['/v1/completions', { prompt: 'hi', stream: 'yes' }, 400, 'stream'],
      ['/v1/completions', { prompt: 'hi', n: 2 }, 400, 'n'],
      ['/v1/completions', { prompt: 'hi', model: 3 }, 400, 'model'],
      ['/v1/chat/completions', { messages: 'hi' }, 400, 'messages'],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 3 }] }, 400, 'messages[0].content'],
      ['/v1/chat/completions', { prompt: 'hi' }, 400, 'messages'],
      ['/v1/completions', { prompt: 'x'.repeat(5000) }, 413, null],
      ['/v1/nothing', { prompt: 'hi' }, 404, null],
    ];
    for (const [path, body, status, param] of cases) {
      const r = await post(s, path, body);
      assert.equal(r.status, status, `${path} ${JSON.stringify(body).slice(0, 60)}: ${r.body}`);
      const e = JSON.parse(r.body).error;
      assert.equal(typeof e.message, 'string');
      assert.ok(!e.message.includes('\n'));
      assert.equal(e.param, param, e.message);
    }
    const tooLong = JSON.parse((await post(s, '/v1/completions', { prompt: long })).body).error;
    assert.equal(tooLong.code, 'context_length_exceeded');
    const m = await http(s.url + '/v1/completions', 'GET');
    assert.equal(m.status, 405);
    assert.equal(m.headers.allow, 'POST');
    // Sampling: the same seed gives the same text; the server still answers after all the errors.
    const body = { prompt: prompts[0], max_tokens: 20, temperature: 0.9, top_p: 0.95, seed: 7 };
    const [a, b] = [await post(s, '/v1/completions', body), await post(s, '/v1/completions', body)];
    assert.equal(a.status, 200);
    assert.deepEqual(JSON.parse(a.body).choices[0].token_ids, JSON.parse(b.body).choices[0].token_ids);
  } finally {
    await s.close();
  }
});

test('bodies with a content-length, whole in one write or split across writes, on one kept-alive connection', async () => {
  const s = await serve(g, { port: 0, maxBatch: 1, maxBodyBytes: 4096 });
  const sock = connect(Number(new URL(s.url).port), '127.0.0.1');
  try {
    await new Promise<void>((resolve, reject) => sock.once('connect', () => resolve()).once('error', reject));
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (c: string) => (buf += c));
    /** The next reply on the connection: status and body, read by its content-length. */
    const reply = async (): Promise<{ status: number; body: string }> => {
      for (let i = 0; i < 3000; i++) {
        const h = buf.indexOf('\r\n\r\n'), len = /\r\ncontent-length: *(\d+)/i.exec(buf.slice(0, h));
        if (h >= 0 && len && Buffer.byteLength(buf.slice(h + 4)) >= Number(len[1])) {
          const body = buf.slice(h + 4, h + 4 + Number(len[1])); // ASCII replies: chars = bytes
          const status = Number(buf.slice(9, 12));
          buf = buf.slice(h + 4 + Number(len[1]));
          return { status, body };
        }
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error(`no whole reply: ${buf.slice(0, 200)}`);
    };
    const pause = () => new Promise((r) => setTimeout(r, 30));
    const head = (body: string) => `POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n`;
    // [how the request is written: pieces with a pause between them]
    const ways: ((b: string) => string[])[] = [(b) => [head(b) + b], (b) => [head(b), b], (b) => [head(b) + b.slice(0, 9), b.slice(9)]];
    for (const [i, split] of ways.entries()) {
      const body = JSON.stringify({ prompt: prompts[i], max_tokens: 10, temperature: 0 });
      for (const [j, piece] of split(body).entries()) {
        if (j > 0) await pause();
        sock.write(piece);
      }
      const r = await reply();
      assert.equal(r.status, 200, r.body);
      assert.deepEqual(JSON.parse(r.body).choices[0].token_ids, await plain(prompts[i], 10), `way ${i}`);
    }
    // The same connection still gives the errors: bad JSON of a declared length, too large, empty.
    for (const [body, status] of [['{not json', 400], ['', 400], [JSON.stringify({ prompt: 'x'.repeat(5000) }), 413]] as const) {
      sock.write(head(body) + body);
      const r = await reply();
      assert.equal(r.status, status, r.body);
    }
  } finally {
    sock.destroy();
    await s.close();
  }
});

test("an error in the engine's end of a request after its reply is logged, and the reply is whole", async () => {
  const lines: string[] = [];
  const s = await serve(g, { port: 0, maxBatch: 2, log: (l) => lines.push(l) });
  try {
    // The engine's end of a request (stats, slot release, leaving the batch) runs after the reply.
    const metrics = s.handler.engine.metrics;
    metrics.finished = () => {
      throw new Error('clean-up failed\non purpose');
    };
    for (const stream of [false, true]) {
      const r = await post(s, '/v1/completions', { prompt: prompts[0], max_tokens: 9, temperature: 0, stream });
      assert.equal(r.status, 200, r.body);
      const ids = stream ? (events(r.body).slice(0, -1) as { choices: { token_ids: number[] }[] }[]).flatMap((e) => e.choices[0].token_ids) : JSON.parse(r.body).choices[0].token_ids;
      assert.deepEqual(ids, await plain(prompts[0], 9), `stream ${stream}: the reply is incomplete`);
      for (let i = 0; i < 200 && lines.length < (stream ? 2 : 1); i++) await new Promise((res) => setTimeout(res, 5));
      assert.equal(lines.length, stream ? 2 : 1, `stream ${stream}: the clean-up's error was not reported once: ${JSON.stringify(lines)}`);
      assert.match(lines[lines.length - 1], /clean-up failed \| on purpose/);
      assert.doesNotMatch(lines[lines.length - 1], /\n/);
    }
  } finally {
    await s.close();
  }
  // A log sink that throws is not left to crash the server (endStream is not awaited): the
  // failure would surface as an unhandled rejection, which fails this test.
  let calls = 0;
  const sink = (): void => {
    calls++;
    throw new Error('log sink failed on purpose');
  };
  const t = await serve(g, { port: 0, maxBatch: 2, log: sink });
  try {
    t.handler.engine.metrics.finished = () => {
      throw new Error('clean-up failed on purpose');
    };
    for (let i = 0; i < 2; i++) {
      const r = await post(t, '/v1/completions', { prompt: prompts[0], max_tokens: 5, temperature: 0 });
      assert.equal(r.status, 200, r.body);
      for (let k = 0; k < 200 && calls <= i; k++) await new Promise((res) => setTimeout(res, 5));
    }
    assert.equal(calls, 2);
  } finally {
    await t.close();
  }
});

test('--max-queue 0: no queue, a request past the busy batch slots gets 429 at once and the next free slot is taken', async () => {
  const s = await serve(g, { port: 0, maxBatch: 1, maxQueue: 0, timeoutMs: 60_000 });
  try {
    const e = s.handler.engine;
    const first = post(s, '/v1/completions', { prompt: prompts[1], max_tokens: 200, temperature: 0 });
    for (let i = 0; i < 500 && e.activeRequests === 0; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(e.activeRequests, 1);
    const second = await post(s, '/v1/completions', { prompt: prompts[2], max_tokens: 8, temperature: 0 });
    assert.equal(second.status, 429, second.body);
    assert.equal(e.queueLength, 0);
    assert.equal((await first).status, 200);
    const after = await post(s, '/v1/completions', { prompt: prompts[2], max_tokens: 8, temperature: 0 });
    assert.deepEqual(JSON.parse(after.body).choices[0].token_ids, await plain(prompts[2], 8));
  } finally {
    await s.close();
  }
});

test("library options out of range (timeoutMs, maxBodyBytes, close's cancelAfterMs) fail at once with one line naming the option, as the CLI's flags do; a refused close leaves the server serving", async () => {
  const oneLine = (re: RegExp) => (e: unknown) => e instanceof UsageError && re.test(e.message) && !e.message.includes('\n');
  const bad: [HandlerOptions, RegExp][] = [
    [{ timeoutMs: -1 }, /^timeoutMs: must be > 0, got -1$/],
    [{ timeoutMs: 0 }, /^timeoutMs: must be > 0, got 0$/],
    [{ timeoutMs: NaN }, /^timeoutMs: expected a number, got NaN$/],
    [{ timeoutMs: 1.5 }, /^timeoutMs: must be an integer, got 1.5$/],
    [{ timeoutMs: 2 ** 31 }, /^timeoutMs: must be <= 2147483647, got 2147483648$/], // setTimeout would fire at once
    [{ maxBodyBytes: 0 }, /^maxBodyBytes: must be >= 1, got 0$/],
  ];
  for (const [opts, re] of bad) {
    await assert.rejects(createHandler(g, { ...opts, policy: 'plain' }), oneLine(re), JSON.stringify(opts));
    await assert.rejects(serve(g, { ...opts, port: 0, policy: 'plain' }), oneLine(re), JSON.stringify(opts));
  }
  const s = await serve(g, { port: 0, policy: 'plain', maxBatch: 1, timeoutMs: 2 ** 31 - 1 });
  try {
    for (const [v, re] of [[-1, /must be >= 0, got -1$/], [NaN, /expected a number, got NaN$/], [0.5, /must be an integer, got 0.5$/], [2 ** 31, /must be <= 2147483647, got 2147483648$/]] as const) {
      await assert.rejects(s.close({ cancelAfterMs: v }), oneLine(new RegExp(`^cancelAfterMs: ${re.source}`)), String(v));
      await assert.rejects(s.handler.close({ cancelAfterMs: v }), oneLine(new RegExp(`^cancelAfterMs: ${re.source}`)), String(v));
    }
    const r = await post(s, '/v1/completions', { prompt: prompts[0], max_tokens: 4, temperature: 0 });
    assert.deepEqual(JSON.parse(r.body).choices[0].token_ids, await plain(prompts[0], 4));
  } finally {
    await s.close({ cancelAfterMs: 0 });
  }
});

test("the engine's options (maxBatch, maxQueue, policy, threads, fusedRound), options of the wrong type and mistyped option names fail at once with one line naming the option: in new Engine(), createHandler(), and in serve() before a model loads", async () => {
  const oneLine = (re: RegExp) => (e: unknown) => e instanceof UsageError && re.test(e.message) && !e.message.includes('\n');
  // loaded: the value needs the loaded model to be judged (the tree's depth), so serve() judges it after loading.
  const bad: [HandlerOptions, RegExp, 'loaded'?][] = [
    [{ maxBatch: 0 }, /^maxBatch: must be >= 1, got 0$/], // was named --max-batch
    [{ maxBatch: 257 }, /^maxBatch: must be <= 256, got 257$/],
    [{ maxQueue: -1 }, /^maxQueue: must be >= 0, got -1$/],
    [{ threads: 0 }, /^threads: must be >= 1, got 0$/], // was accepted
    [{ threads: 1.5 }, /^threads: must be an integer, got 1.5$/], // was ORT's RangeError inside start()
    [{ threads: -3 }, /^threads: must be >= 1, got -3$/],
    [{ policy: 'static-99' }, /^policy: static-D: D must be in \[1, \d+\] \(the tree depth\), got 99$/, 'loaded'],
    [{ maxbatch: 2 } as HandlerOptions, /^maxbatch: unknown option$/], // was ignored: 8 slots
    [{ policy: 3 as never }, /^policy: expected a string, got the number 3$/], // was 'unknown serving policy "3"'
    [{ fusedRound: 'no' as never }, /^fusedRound: expected true or false, got the string 'no'$/], // was taken as true
  ];
  for (const [opts, re, loaded] of bad) {
    const what = JSON.stringify(opts);
    if (!('maxbatch' in opts)) assert.throws(() => new Engine(g, opts), oneLine(re), what);
    await assert.rejects(createHandler(g, opts), oneLine(re), what);
    await assert.rejects(serve(g, { ...opts, port: 0 }), oneLine(re), what);
    if (!loaded) await assert.rejects(serve({ model: '/nonexistent/model' }, { ...opts, port: 0 }), oneLine(re), `${what}, before loading`);
  }
  await assert.rejects(serve({ model: '/nonexistent/model' }, { port: 65536 }), oneLine(/^port: must be <= 65535, got 65536$/));
  // A string option given another type (was: used as it came, or turned into a string).
  await assert.rejects(serve({ model: '/nonexistent/model' }, { host: 8080 as never, port: 0 }), oneLine(/^host: expected a string, got the number 8080$/));
  await assert.rejects(serve({ model: '/nonexistent/model' }, { modelName: { id: 'x' } as never, port: 0 }), oneLine(/^modelName: expected a string, got an object$/));
  await assert.rejects(createHandler(g, { policy: 'plain', modelDir: ['a'] as never }), oneLine(/^modelDir: expected a string, got an array$/));
  assert.throws(() => new Engine(g, { modelName: 'x' } as never), oneLine(/^modelName: unknown option$/), "the handler's options are not the engine's");
  const s = await serve(g, { port: 0, policy: 'plain', maxBatch: 1 });
  try {
    // Was a silent 30 s drain (cancelAfterMs's default).
    await assert.rejects(s.close({ cancelAfter: 0 } as never), oneLine(/^cancelAfter: unknown option$/));
    await assert.rejects(s.handler.close({ cancelAfter: 0 } as never), oneLine(/^cancelAfter: unknown option$/));
    const r = await post(s, '/v1/completions', { prompt: prompts[0], max_tokens: 4, temperature: 0 });
    assert.deepEqual(JSON.parse(r.body).choices[0].token_ids, await plain(prompts[0], 4), 'a refused close leaves the server serving');
  } finally {
    await s.close({ cancelAfterMs: 0 });
  }
});

test('a full queue answers 429; a disconnecting client frees its slot; a request past its timeout gets 504', async () => {
  const s = await serve(g, { port: 0, maxBatch: 1, maxQueue: 1, timeoutMs: 60_000 });
  try {
    const long = { prompt: prompts[1], max_tokens: 200, temperature: 0 };
    // One decoding, one queued, the third refused.
    const first = post(s, '/v1/completions', long), second = post(s, '/v1/completions', long);
    await new Promise((r) => setTimeout(r, 50));
    const third = await post(s, '/v1/completions', long);
    assert.equal(third.status, 429, third.body);
    assert.equal(JSON.parse(third.body).error.type, 'rate_limit_error');
    assert.equal((await first).status, 200);
    assert.equal((await second).status, 200);

    // Disconnect mid-stream: the request is cancelled at the next step and its slot freed.
    await new Promise<void>((resolve, reject) => {
      const req = request(s.url + '/v1/completions', { method: 'POST' }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => {});
      req.end(JSON.stringify({ ...long, max_tokens: 250, stream: true }));
      setTimeout(() => reject(new Error('no first chunk')), 20_000);
    });
    const e = s.handler.engine;
    for (let i = 0; i < 200 && (e.activeRequests > 0 || e.batcher.size > 0); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(e.activeRequests, 0, 'the disconnected request is still running');
    assert.equal(e.batcher.size, 0);
    const after = await post(s, '/v1/completions', { prompt: prompts[2], max_tokens: 8, temperature: 0 });
    assert.deepEqual(JSON.parse(after.body).choices[0].token_ids, await plain(prompts[2], 8));
  } finally {
    await s.close();
  }
  const t = await serve(g, { port: 0, timeoutMs: 30 });
  try {
    const r = await post(t, '/v1/completions', { prompt: prompts[3], max_tokens: 250, temperature: 0 });
    assert.equal(r.status, 504, r.body);
    assert.equal(JSON.parse(r.body).error.code, 'timeout');
    const h = await http(t.url + '/health', 'GET');
    assert.equal(JSON.parse(h.body).status, 'ok');
  } finally {
    await t.close();
  }
});

test('fuzzed HTTP bodies: every answer is 200 or a 4xx JSON error, never a crash or a hang', async () => {
  const s = await serve(g, { port: 0, maxBatch: 2, maxBodyBytes: 2048 });
  try {
    const value = fc.oneof(fc.integer({ min: -3, max: 40 }), fc.double({ noNaN: true, min: -2, max: 3 }), fc.string({ maxLength: 12 }), fc.boolean(), fc.constant(null), fc.array(fc.integer({ min: -2, max: 1600 }), { maxLength: 6 }), fc.array(fc.string({ maxLength: 4 }), { maxLength: 6 }), fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { maxKeys: 2 }));
    const field = fc.constantFrom('prompt', 'messages', 'max_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'stop', 'stream', 'n', 'model', 'stream_options', 'extra');
    const body = fc.oneof(
      fc.dictionary(field, value, { maxKeys: 6 }).map((o) => JSON.stringify({ max_tokens: 3, ...o, ...(typeof o.max_tokens === 'number' && o.max_tokens > 8 ? { max_tokens: 8 } : {}) })),
      fc.string({ maxLength: 40 }),
      fc.json({ maxDepth: 2 }),
    );
    await fc.assert(
      fc.asyncProperty(body, fc.constantFrom('/v1/completions', '/v1/chat/completions'), async (b, path) => {
        const r = await http(s.url + path, 'POST', b, { timeoutMs: 20_000 });
        assert.ok(r.status === 200 || (r.status >= 400 && r.status < 500), `${r.status} for ${b}: ${r.body}`);
        if (r.status === 200) {
          if (r.headers['content-type'] === 'text/event-stream') events(r.body);
          else assert.ok(JSON.parse(r.body).choices.length === 1);
        } else assert.equal(typeof JSON.parse(r.body).error.message, 'string');
      }),
      { numRuns: 120, seed: 15 },
    );
    assert.equal((await http(s.url + '/health', 'GET')).status, 200);
  } finally {
    await s.close();
  }
});

test('`eaglet serve` on port 0: SIGTERM lets the running request finish and exits 0', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--port', '0', '--threads', '1', '--max-batch', '2'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.setEncoding('utf8');
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (c) => {
      err += c;
      const m = /on (http:\/\/\S+)/.exec(err);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`exited ${code}: ${err}`)));
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  // Streamed, so SIGTERM goes out once the first tokens show the request is running (a fixed delay
  // raced a request that had already finished: 120 tokens take well under 100 ms here).
  const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(url + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        if (text === '') child.kill('SIGTERM');
        text += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(JSON.stringify({ prompt: prompts[4], max_tokens: 200, temperature: 0, stream: true }));
  });
  assert.equal(status, 200, body);
  const events = body.split('\n').filter((l) => l.startsWith('data: ') && l !== 'data: [DONE]');
  assert.ok(body.includes('data: [DONE]'), body);
  const ids = events.flatMap((l) => (JSON.parse(l.slice(6)).choices[0].token_ids ?? []) as number[]);
  assert.deepEqual(ids, await plain(prompts[4], 200));
  assert.equal(await exited, 0, err);
  assert.match(err, /SIGTERM: draining 1 running request/);
});
