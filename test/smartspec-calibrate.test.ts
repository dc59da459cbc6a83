/**
 * SmartSpec's start-up calibration: real batch steps at forced lengths seed the planner's pass
 * scales and overhead, so a new server prices drafted batch steps from its first plan; and
 * Engine.start()'s lifecycle: a second start(), requests, drain/dispose and failures during it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { getEventListeners } from 'node:events';
import fc from 'fast-check';
import { SmartSpecPlanner, StepCost } from '../src/policies/smartspec.ts';
import type { RoundState } from '../src/policies/policy.ts';
import { DrainingError, Engine, QueueFullError, type EngineOptions } from '../src/serve/engine.ts';
import type { Drafter } from '../src/generate/drafter.ts';
import { serve } from '../src/serve/server.ts';
import { tinyConfig, tinyPair } from './support/models.ts';

const flat = (ms: number) => new StepCost([1, 64], [ms, ms], [ms, ms], 16);
const state = (position: number): RoundState => ({ position, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 });

/**
 * A planner whose start-up model says verify passes cost 1 ms and draft passes 0.8 ms, on a
 * host where draft passes take 1.2 ms and a step's JS beside its passes 0.02 ms a pass and 0.01
 * ms a request-pass (a fake clock and lane timers). `alone`: a lone request's fused round model.
 */
function setup(alone?: number[]) {
  let step = 0, clock = 0;
  const lanes: [{ ms: number }, { ms: number }] = [{ ms: 0 }, { ms: 0 }];
  const planner = new SmartSpecPlanner(flat(1), flat(0.8), 3, 3, () => step, alone, 0.9, () => clock);
  planner.laneTimes = lanes;
  /** One step of `members` (each plans, its passes and JS take their real time, each observes `accepted`); their depths. */
  const run = (members: ReturnType<SmartSpecPlanner['policy']>[], accepted: number, extraMs = 0, draftMs = 1.2) => {
    step++;
    const ks = members.map((p) => p.plan(state(10 + step)).depth);
    const levels = Math.max(...ks);
    lanes[0].ms += 1;
    lanes[1].ms += draftMs * levels + extraMs;
    clock += 1 + draftMs * levels + 0.02 * (1 + levels) + 0.01 * ks.reduce((t, k) => t + 1 + k, 0) + extraMs;
    members.forEach((p, i) => p.observe({ depth: ks[i], treeSize: ks[i], accepted: Math.min(accepted, ks[i]), draftMs: 0, verifyMs: 0 }));
    return ks;
  };
  return { planner, run };
}

test('a calibration of forced drafted steps sets the draft scale from them, and the next plan prices drafts at it', async () => {
  // Every draft accepted: at the start-up prices two requests drafting 3 gain 18% (8 tokens in
  // 3.4 ms against 2 in 1); at the real ones they lose (8 in 4.76 against 2 in 1.04).
  const fresh = setup();
  const a = fresh.planner.policy(), b = fresh.planner.policy();
  assert.deepEqual(fresh.run([a, b], 3), [3, 3], 'uncalibrated, the first plan drafts');

  const { planner, run } = setup();
  const seen: number[][] = [];
  const samples = await planner.calibrate(async () => {
    planner.forced = 3;
    const ps = [planner.policy(), planner.policy()];
    for (let i = 0; i < 12; i++) seen.push(run(ps, 0, i === 5 ? 40 : 0)); // one step 40 ms slow (a busy host)
    planner.forced = 0;
    for (let i = 0; i < 6; i++) seen.push(run(ps, 0));
    for (const p of ps) p.leave();
  });
  assert.deepEqual(seen, [...new Array(12).fill([3, 3]), ...new Array(6).fill([0, 0])], 'the forced lengths, whatever the estimates say');
  // Timed: every step but the first (its plan starts the timing) and the last (the requests leave in it).
  assert.deepEqual(samples, [16, 11]);
  assert.ok(Math.abs(planner.passScale[1] - 1.5) < 1e-9, `draft scale ${planner.passScale[1]}: the median, not moved by the slow step`);
  assert.ok(Math.abs(planner.passScale[0] - 1) < 1e-9, `verify scale ${planner.passScale[0]}`);
  // The overhead fit prices both shapes' JS (0.16 and 0.04 ms; its weak pull toward 0 keeps it a little under).
  const drafted = planner.overhead.batchMs(4, 8), plain = planner.overhead.batchMs(1, 2);
  assert.ok(drafted > 0.14 && drafted <= 0.16 + 1e-9 && plain > 0.035 && plain <= 0.04 + 1e-9, `overhead: drafted step ${drafted}, plain ${plain}`);
  assert.equal(planner.forced, undefined);

  // The calibration's rounds (nothing accepted) are not in the pooled acceptance: a new request starts from the sure prior.
  const c = planner.policy(), d = planner.policy();
  assert.equal(c.acceptance.expectedTokens(3), 4);
  assert.deepEqual(run([c, d], 3), [0, 0], 'calibrated, the first plan prices drafts at the seeded scale and stays plain');
});

test('a calibration in a busy moment (draft passes 5x the model) starts the draft scale at most scaleClip from 1', async () => {
  const { planner, run } = setup();
  await planner.calibrate(async () => {
    planner.forced = 3;
    const ps = [planner.policy(), planner.policy()];
    for (let i = 0; i < 10; i++) run(ps, 3, 0, 4);
    for (const p of ps) p.leave();
  });
  assert.equal(planner.passScale[1], planner.scaleClip);
});

test("a calibration sets the margin from the draft passes' step-to-step spread, within its bounds", async () => {
  /** The margin after a calibration of 20 drafted steps whose draft level takes `draftMs(i)` at step i. */
  const margin = async (draftMs: (i: number) => number) => {
    const { planner, run } = setup();
    assert.equal(planner.margin, 0.1, 'uncalibrated: 10%');
    await planner.calibrate(async () => {
      planner.forced = 1;
      const ps = [planner.policy(), planner.policy()];
      for (let i = 0; i < 20; i++) run(ps, 1, 0, draftMs(i));
      for (const p of ps) p.leave();
    });
    return planner.margin;
  };
  assert.equal(await margin(() => 1.2), 0.03, 'steady passes: the lower bound');
  const some = await margin((i) => 1.2 * (1 + 0.06 * ((i % 5) - 2))); // within +-12%, half the steps within 6%
  assert.ok(some > 0.03 && some < 0.1, `a spread of a few per cent: ${some}`);
  assert.equal(await margin((i) => (i % 2 ? 0.8 : 2.4)), 0.1, 'a host whose passes vary 3x: the upper bound');
});

test("a calibration leaves a lone request's fused-round estimate unseen: its first lone round still runs at full length", async () => {
  // The fused round priced 1 ms; a lone step during the calibration took 60 ms.
  const { planner, run } = setup([1, 1, 1, 1]);
  await planner.calibrate(async () => {
    planner.forced = 3;
    const p = planner.policy();
    for (let i = 0; i < 4; i++) run([p], 3, 60);
    p.leave();
  });
  const p = planner.policy();
  assert.equal(run([p], 3)[0], 3, 'the lone request runs its first round at full length, as on a server without the calibration');
});

test('a batch plan that throws leaves no member behind: the next step plans its own members only', () => {
  const { planner, run } = setup();
  const ps = [planner.policy(), planner.policy()];
  for (let i = 0; i < 3; i++) run(ps, 2);
  const acceptance = ps[0].acceptance;
  acceptance.expectedTokens = () => {
    throw new Error('injected');
  };
  assert.throws(() => run(ps, 2), /injected/);
  delete (acceptance as Partial<typeof acceptance>).expectedTokens; // the prototype's again
  const sizes = new Set<number>(), goodput = planner.goodput.bind(planner);
  planner.goodput = (members, k) => (sizes.add(members.length), goodput(members, k));
  run(ps, 2);
  // Fails on the old code: the failed plan's members were still in its array, and this step planned 4.
  assert.deepEqual([...sizes], [2]);
});

test('a smartspec engine calibrates at start-up with drafted batch steps through its lanes, counted in no metric; other policies do not', async () => {
  const cfg = fc.sample(tinyConfig(64), { numRuns: 1, seed: 3 })[0];
  const p = await tinyPair(cfg, 3, { topK: 1, maxDepth: 2, totalTokens: 2 }, undefined, 3, true);
  try {
    for (const policy of ['smartspec', 'static-2']) {
      const e = new Engine(p.spec, { maxBatch: 4, policy, fusedRound: true });
      await e.start(1);
      const draft = e.draftStats!;
      if (policy === 'smartspec') {
        assert.ok(draft.passes > 0 && draft.calls > draft.passes, `batched draft passes at start-up: ${draft.passes} passes, ${draft.calls} calls`);
        // The first levels after a target pass (timed apart for their own scale) are some of the draft lane's time, not all.
        assert.ok(draft.coldMs > 0 && draft.coldMs < draft.ms, `first levels ${draft.coldMs} of ${draft.ms} ms`);
        const c = e.calibration!;
        assert.ok(c.samples[0] > 0 && c.samples[1] > 0, `samples ${c.samples}`);
        assert.deepEqual(c.passScale, [...e.planner!.passScale], 'the planner starts from the calibrated scales');
        assert.notDeepEqual(c.passScale, [1, 1, 1], 'measured scales, not the bare model');
        assert.ok(c.passScale.every((s) => s > 0 && Number.isFinite(s)));
        assert.equal(e.metrics.completed, 0);
        assert.deepEqual(e.metrics.depthCounts, [0, 0, 0]);
        const q = e.planner!.policy();
        assert.equal(q.acceptance.expectedTokens(2), 3, 'the calibration\'s rounds are not pooled');
        q.leave();
      } else {
        assert.equal(draft.passes, 0);
        assert.equal(e.calibration, undefined);
      }
      // Served afterwards: lossless, on caches the calibration left empty.
      const prompt = [1, 2, 3].map((t) => t % cfg.vocabSize), opts = { maxNewTokens: 8, temperature: 0, stopAtEos: false };
      const got = await Promise.all([0, 1].map(() => idsOf(e.submit(prompt, opts))));
      const want = (await p.ar.generate(prompt, opts)).ids;
      assert.deepEqual(got, [want, want]);
      await e.drain();
      await e.dispose();
    }
  } finally {
    await p.dispose();
  }
});

/** A tiny smartspec pair for the engine tests below (weights kept: serving builds its batch graphs from them). */
async function tiny() {
  const cfg = fc.sample(tinyConfig(64), { numRuns: 1, seed: 3 })[0];
  const p = await tinyPair(cfg, 3, { topK: 1, maxDepth: 2, totalTokens: 2 }, undefined, 3, true);
  const prompt = [1, 2, 3].map((t) => t % cfg.vocabSize), opts = { maxNewTokens: 8, temperature: 0, stopAtEos: false };
  return { p, prompt, opts, want: (await p.ar.generate(prompt, opts)).ids };
}

/** Resolves once the engine's start-up calibration is running. */
async function calibrating(e: Engine): Promise<void> {
  while (!e.planner?.calibrating) await new Promise((r) => setImmediate(r));
}

test("/metrics after start-up counts none of the calibration's passes", async () => {
  const { p } = await tiny();
  try {
    const s = await serve(p.spec, { port: 0, maxBatch: 4, log: () => {} });
    try {
      assert.ok(s.handler.engine.targetStats.passes > 0, 'the calibration ran batch passes');
      const m = await (await fetch(s.url + '/metrics')).text();
      assert.match(m, /^eaglet_target_passes_total 0$/m);
      assert.match(m, /^eaglet_mean_batch_size 0$/m);
      assert.match(m, /^eaglet_requests_total 0$/m);
    } finally {
      await s.close();
    }
  } finally {
    await p.dispose();
  }
});

/** Runs `body` on a new engine (smartspec; 4 batch slots unless `opts` say otherwise) over a tiny pair, and releases the pair after. */
async function onEngine(body: (e: Engine, t: Awaited<ReturnType<typeof tiny>>) => Promise<void>, opts: EngineOptions = {}): Promise<void> {
  const t = await tiny();
  try {
    await body(new Engine(t.p.spec, { maxBatch: 4, ...opts }), t);
  } finally {
    await t.p.dispose();
  }
}

/** A request's ids, read to its end. */
async function idsOf(g: AsyncGenerator<{ ids: number[] }, unknown>): Promise<number[]> {
  const out: number[] = [];
  for await (const c of g) out.push(...c.ids);
  return out;
}

test('a second start() during the calibration resolves after it', () =>
  onEngine(async (e) => {
    const first = e.start(1);
    await calibrating(e);
    await e.start(1);
    assert.ok(e.calibration && !e.planner!.calibrating, 'the second start() resolved after the calibration');
    await first;
    await e.drain();
    await e.dispose();
  }));

test('a request submitted during the calibration runs after it (no forced plan), counted in the metrics', () =>
  onEngine(async (e, { prompt, opts, want }) => {
    const started = e.start(1);
    await calibrating(e);
    const ids: number[] = [];
    let afterCalibration: boolean | undefined;
    for await (const chunk of e.submit(prompt, opts)) {
      afterCalibration ??= !e.planner!.calibrating && e.planner!.forced === undefined && e.calibration !== undefined;
      ids.push(...chunk.ids);
    }
    assert.equal(afterCalibration, true, "the request's first token came after the calibration");
    assert.deepEqual(ids, want);
    await started;
    assert.equal(e.metrics.requests, 1);
    assert.equal(e.metrics.completed, 1);
    await e.drain();
    await e.dispose();
  }));

test('drain() and dispose() during the calibration wait for start(), which resolves', () =>
  onEngine(async (e, { prompt, opts }) => {
    const started = e.start(1);
    await calibrating(e);
    await e.drain();
    assert.throws(() => e.submit(prompt, opts), DrainingError);
    await e.dispose();
    await started; // dispose() waits for start(), so start() resolves
    assert.ok(e.calibration, 'the calibration finished before the sessions were released');
    assert.equal(e.activeRequests, 0);
  }));

test('a calibration request failing mid-wave: start() rejects after every sibling has ended, and no pass runs after', () =>
  onEngine(async (e) => {
    // The lowest slots are taken first: slot 3 first decodes in the second wave (4 requests), and fails at its first draft.
    const slot = (e as unknown as { slots: { drafter: Drafter }[] }).slots[3];
    slot.drafter.draft = () => Promise.reject(new Error('injected draft failure'));
    await assert.rejects(e.start(1), /injected draft failure/);
    assert.equal(e.activeRequests, 0, 'no calibration request still running when start() rejects');
    const passes = () => e.targetStats.passes + e.draftStats!.passes;
    const before = passes();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(passes(), before, 'no pass ran after the sessions were released');
  }));

test('requests submitted during start-up are admitted up to the slots plus the queue, whatever the calibration holds', () =>
  onEngine(
    async (e, t) => {
      const started = e.start(1);
      await calibrating(e); // its wave of 2 holds both slots now
      const a = e.submit(t.prompt, t.opts), b = e.submit(t.prompt, t.opts);
      assert.throws(() => e.submit(t.prompt, t.opts), QueueFullError, 'a third is past 2 slots and a queue of 0');
      assert.equal(e.metrics.rejected, 1);
      assert.deepEqual(await Promise.all([idsOf(a), idsOf(b)]), [t.want, t.want]);
      await started;
      await e.drain();
      await e.dispose();
    },
    { maxBatch: 2, maxQueue: 0 },
  ));

test('streams submitted before any is read hold their places: past the slots plus the queue a submit is refused at once, and one returned unread gives its place back', () =>
  onEngine(
    async (e, t) => {
      await e.start(1);
      const a = e.submit(t.prompt, t.opts), b = e.submit(t.prompt, t.opts);
      // Fails on the old code: unread streams held nothing, so a third was admitted and queued past the queue's 1.
      assert.throws(() => e.submit(t.prompt, t.opts), QueueFullError, 'a third is past 1 slot and a queue of 1');
      assert.equal(e.metrics.rejected, 1);
      assert.deepEqual(await b.return(undefined as never), { done: true, value: undefined });
      const c = e.submit(t.prompt, t.opts);
      assert.throws(() => e.submit(t.prompt, t.opts), QueueFullError, 'a and c hold the slot and the queue place');
      assert.deepEqual(await Promise.all([idsOf(a), idsOf(c)]), [t.want, t.want]);
      // Both ended: their places are free again.
      const d = e.submit(t.prompt, t.opts), f = e.submit(t.prompt, t.opts);
      assert.throws(() => e.submit(t.prompt, t.opts), QueueFullError);
      assert.equal(e.metrics.rejected, 3);
      assert.deepEqual(await Promise.all([idsOf(d), idsOf(f)]), [t.want, t.want]);
      await e.drain();
      await e.dispose();
    },
    { maxBatch: 1, maxQueue: 1 },
  ));

test('a stream submitted before drain() and read after it throws DrainingError: drain() and dispose() resolve without it, and it runs no pass on the released sessions', () =>
  onEngine(
    async (e, t) => {
      await e.start(1);
      const unread = e.submit(t.prompt, t.opts);
      await e.drain();
      await e.dispose();
      const passes = e.targetStats.passes;
      // Fails on the old code: the stream then decoded all its tokens, on released sessions.
      await assert.rejects(unread.next(), DrainingError);
      assert.equal(e.targetStats.passes, passes, 'no pass ran after dispose()');
      assert.equal(e.activeRequests, 0);
    },
    { maxBatch: 2, policy: 'static-2' },
  ));

test("aborting an unread stream's signal gives its place back at once (its read then ends with the abort reason)", () =>
  onEngine(
    async (e, t) => {
      await e.start(1);
      const ac = new AbortController();
      const cancelled = e.submit(t.prompt, t.opts, ac.signal);
      ac.abort(new Error('client went away'));
      // Fails on the old code: the aborted stream still held its place until read, so the third was refused.
      const a = e.submit(t.prompt, t.opts), b = e.submit(t.prompt, t.opts);
      assert.throws(() => e.submit(t.prompt, t.opts), QueueFullError, 'a and b hold the slot and the queue place');
      await assert.rejects(cancelled.next(), /client went away/);
      assert.deepEqual(await Promise.all([idsOf(a), idsOf(b)]), [t.want, t.want]);
      const late = new AbortController(), c = e.submit(t.prompt, t.opts, late.signal);
      assert.deepEqual(await idsOf(c), t.want);
      late.abort(); // after its end: the place was given back once, not twice
      const d = e.submit(t.prompt, t.opts), f = e.submit(t.prompt, t.opts);
      assert.throws(() => e.submit(t.prompt, t.opts), QueueFullError);
      assert.deepEqual(await Promise.all([idsOf(d), idsOf(f)]), [t.want, t.want]);
      await e.drain();
      await e.dispose();
    },
    { maxBatch: 1, maxQueue: 1 },
  ));

test("a signal shared by many requests keeps no listener of a request that ended: read to its end, returned unread, queued when drain() began, or dropped unread", () =>
  onEngine(
    async (e, t) => {
      await e.start(1);
      const shared = new AbortController().signal; // say, a server-wide shutdown signal
      const listeners = () => getEventListeners(shared, 'abort').length;
      assert.deepEqual(await idsOf(e.submit(t.prompt, t.opts, shared)), t.want);
      await e.submit(t.prompt, t.opts, shared).return(undefined as never);
      assert.equal(listeners(), 0, 'read to its end, or returned unread');
      const running = idsOf(e.submit(t.prompt, t.opts, shared)); // takes the slot at once
      const queued = assert.rejects(e.submit(t.prompt, t.opts, shared).next(), DrainingError); // takes the queue place; drain() refuses it
      e.submit(t.prompt, t.opts, shared); // dropped: never read, never returned
      assert.equal(listeners(), 2, 'the queued request and the unread one each listen');
      await e.drain();
      // Fails on the old code: both listeners stayed on the signal (2).
      assert.equal(listeners(), 0, 'drain() ended both');
      await queued;
      assert.deepEqual(await running, t.want);
      await e.dispose();
    },
    { maxBatch: 1, maxQueue: 2 },
  ));

test('a request cancelled while it waits for start-up takes no slot and no queue place: it ends with its abort reason at once', () =>
  onEngine(
    async (e, t) => {
      const started = e.start(1);
      await calibrating(e);
      // Two requests take both slots once start-up ends; the cancelled third would have to queue.
      const done: boolean[] = [];
      const others = [0, 1].map(async (i) => {
        await idsOf(e.submit(t.prompt, t.opts));
        done[i] = true;
      });
      const ac = new AbortController();
      const first = e.submit(t.prompt, t.opts, ac.signal).next();
      ac.abort(new Error('client went away'));
      await assert.rejects(first, /client went away/);
      assert.deepEqual(done, [], 'it ended before either running request did (it did not wait in the queue for a slot)');
      await Promise.all(others);
      await started;
      assert.equal(e.queueLength, 0);
      assert.equal(e.activeRequests, 0);
      await e.drain();
      await e.dispose();
    },
    { maxBatch: 2, maxQueue: 4 },
  ));

test('a failed start() that nobody awaits still surfaces as an unhandled rejection', () => {
  // In a child process: node:test would count the unhandled rejection against this test itself.
  const support = new URL('./support/models.ts', import.meta.url).href, engine = new URL('../src/serve/engine.ts', import.meta.url).href;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `
    import fc from 'fast-check';
    const { tinyConfig, tinyPair } = await import(${JSON.stringify(support)});
    const { Engine } = await import(${JSON.stringify(engine)});
    const cfg = fc.sample(tinyConfig(64), { numRuns: 1, seed: 3 })[0];
    const p = await tinyPair(cfg, 3, { topK: 1, maxDepth: 2, totalTokens: 2 }, undefined, 3, true);
    const e = new Engine(p.spec, { maxBatch: 4 });
    e.slots[3].drafter.draft = () => Promise.reject(new Error('injected draft failure'));
    process.on('unhandledRejection', (err) => { console.log('unhandled: ' + err.message); process.exit(0); });
    e.start(1);
    setTimeout(() => { console.log('no unhandled rejection'); process.exit(3); }, 20000);
  `], { encoding: 'utf8', cwd: new URL('..', import.meta.url).pathname });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /unhandled: injected draft failure/);
});
