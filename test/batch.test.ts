/**
 * Continuous batching is lossless: requests decoded together (one packed target pass per step,
 * their drafts packed too, joining and leaving between steps) give each request exactly the ids
 * it gets alone with plain decoding. Random tiny targets, random heads, random tree shapes,
 * policies and batch sizes, with and without the fused round for a request alone in the batch,
 * prefills joining a step in a pass of their own. Also: cache slots write only their own rows.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { tinyConfig, tinyConfigEitherLayout, tinyPair, treeShape } from './support/models.ts';
import { Engine } from '../src/serve/engine.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { Batcher, DraftLane } from '../src/runtime/batch.ts';
import { createSession, releaseSession, type Feeds, type Session } from '../src/runtime/ort.ts';
import { buildSlotDraftModel, names } from '../src/onnx/model-graphs.ts';
import type { EagleDrafter } from '../src/generate/eagle-drafter.ts';

/** A tiny random target and head (one seed for both), disposed after `body`. */
async function withPair(seed: number, tree: Parameters<typeof tinyPair>[2], body: (cfg: Parameters<typeof tinyPair>[0], p: Awaited<ReturnType<typeof tinyPair>>) => Promise<void>): Promise<void> {
  const cfg = fc.sample(tinyConfig(64), { numRuns: 1, seed })[0];
  const p = await tinyPair(cfg, seed, tree, undefined, 3, true);
  try {
    await body(cfg, p);
  } finally {
    await p.dispose();
  }
}

test('batched greedy decoding == each request decoded alone, for plain, static and smartspec serving', async () => {
  let batched = 0, fused = 0, split = 0;
  await fc.assert(
    fc.asyncProperty(
      tinyConfigEitherLayout(64), fc.integer({ min: 0, max: 1e6 }), treeShape, fc.constantFrom('plain', 'static-1', 'static-3', 'smartspec'), fc.integer({ min: 1, max: 3 }), fc.boolean(),
      fc.array(fc.record({ prompt: fc.array(fc.nat(), { minLength: 1, maxLength: 12 }), maxNewTokens: fc.integer({ min: 1, max: 30 }), delayMs: fc.integer({ min: 0, max: 3 }) }), { minLength: 1, maxLength: 5 }),
      async (cfg, seed, shape, policy, maxBatch, fusedRound, requests) => {
        // fusedRound: a request alone in the batch runs the fused round (chains only).
        const tree = { ...shape, topK: fusedRound ? 1 : shape.topK, totalTokens: Math.max(shape.totalTokens, shape.maxDepth) };
        const p = await tinyPair(cfg, seed, tree, undefined, 3, true);
        try {
          const e = new Engine(p.spec, { maxBatch, fusedRound, policy: policy.startsWith('static') ? `static-${Math.min(Number(policy.slice(7)), tree.maxDepth)}` : policy });
          await e.start(1);
          const reqs = requests.map((r) => ({ ...r, prompt: r.prompt.map((t) => t % cfg.vocabSize) }));
          const got = await Promise.all(reqs.map(async (r) => {
            await new Promise((res) => setTimeout(res, r.delayMs)); // arrivals spread over steps
            const ids: number[] = [];
            for await (const c of e.submit(r.prompt, { maxNewTokens: r.maxNewTokens, temperature: 0, stopAtEos: false })) ids.push(...c.ids);
            return ids;
          }));
          for (let i = 0; i < reqs.length; i++) {
            const want = await p.ar.generate(reqs[i].prompt, { maxNewTokens: reqs[i].maxNewTokens, stopAtEos: false });
            assert.deepEqual(got[i], want.ids, `request ${i} of ${reqs.length} (${policy}, max batch ${maxBatch})`);
          }
          const lane = e.targetStats;
          if (lane.calls > lane.passes) batched++;
          if (lane.passes > lane.steps) split++; // a prefill ran in a pass of its own beside a step's decodes
          if (fusedRound && policy !== 'plain' && e.fusedRounds > 0) fused++;
          assert.equal(e.batcher.size, 0);
          assert.equal(e.activeRequests, 0);
          await e.dispose();
        } finally {
          await p.dispose();
        }
      },
    ),
    { numRuns: 25, seed: 15 },
  );
  assert.ok(batched >= 5, `only ${batched} runs packed several requests into one pass`);
  assert.ok(fused >= 3, `only ${fused} runs ran a lone request's fused round`);
  assert.ok(split >= 3, `only ${split} runs split a prefill off a decoding step`);
});

test('a cache slot writes and reads only its own heads, and has ORT views of its own', () => {
  // A batch cache of 2 slots of 2 heads (hd 3): slot b's heads are the parent's heads 2, 3.
  const parent = new KVCache(2, 4, 3, 12, 4), a = parent.slot(0, 2), b = parent.slot(1, 2);
  const rows = (t: number, v: number) => [Float32Array.from({ length: t * 6 }, (_, i) => v + i), Float32Array.from({ length: t * 6 }, (_, i) => -v - i)];
  const [k1, v1] = rows(3, 100), [k2, v2] = rows(2, 500);
  a.append([k1, k1], [v1, v1], 3);
  b.append([k2, k2], [v2, v2], 2);
  assert.deepEqual(Array.from(a.pastKeys(1)), Array.from(k1));
  assert.deepEqual(Array.from(b.pastValues(0)), Array.from(v2));
  // The parent's rows hold slot a's heads then slot b's.
  parent.length = 2;
  const both = parent.pastKeys(0);
  for (let r = 0; r < 2; r++) {
    assert.deepEqual(Array.from(both.subarray(r * 12, r * 12 + 6)), Array.from(k1.subarray(r * 6, r * 6 + 6)));
    assert.deepEqual(Array.from(both.subarray(r * 12 + 6, r * 12 + 12)), Array.from(k2.subarray(r * 6, r * 6 + 6)));
  }
  // A slot's ORT view is its heads' blocks of the parent's: the second half for slot b.
  assert.equal(b.keyView(0).length, 2 * 3 * parent.stride);
  assert.equal(b.keyView(0).byteOffset, parent.keyView(0).byteOffset + b.keyView(0).byteLength);
  b.truncate(0); // its 2 rows now staged: keep the second
  b.keep([1]);
  assert.deepEqual(Array.from(b.pastKeys(0)), Array.from(k2.subarray(6, 12)));
  assert.deepEqual(Array.from(a.pastKeys(0)), Array.from(k1), 'keep in slot b left slot a alone');
  assert.throws(() => a.append([k1, k1], [v1, v1], 10), /full/);

  // The shared stride grows with the longest slot (moving every slot's rows) and shrinks back.
  const long = rows(9, 900);
  a.append([long[0], long[0]], [long[1], long[1]], 9);
  assert.ok(parent.stride >= 12);
  assert.deepEqual(Array.from(b.pastKeys(0)), Array.from(k2.subarray(6, 12)));
  assert.deepEqual(Array.from(a.pastValues(1, 3, 9)), Array.from(long[1]));
  a.truncate(3);
  parent.shrinkRows(3);
  assert.ok(parent.stride < 12, `stride ${parent.stride}`);
  assert.deepEqual(Array.from(a.pastKeys(0)), Array.from(k1));
  assert.deepEqual(Array.from(a.pastValues(0)), Array.from(v1));
  assert.deepEqual(Array.from(b.pastValues(1)), Array.from(v2.subarray(6, 12)));

  // With only slot a's heads live (slot b free), a growth keeps a's rows and leaves b's behind.
  parent.liveHeads = 2;
  b.truncate(0);
  a.append([long[0], long[0]], [long[1], long[1]], 9);
  assert.ok(parent.stride >= 12);
  assert.deepEqual(Array.from(a.pastKeys(1, 0, 3)), Array.from(k1));
  assert.deepEqual(Array.from(a.pastValues(0, 3, 9)), Array.from(long[1]));
});

test("the lanes' counters split their steps: ORT call and feeds inside the passes' time, the requests' work between steps, no idle gap", async () => {
  await withPair(14, { topK: 1, maxDepth: 2, totalTokens: 2 }, async (cfg, p) => {
    const e = new Engine(p.spec, { maxBatch: 3, policy: 'static-1' });
    await e.start(1);
    const level = () => Promise.all([1, 2, 3].map(async (j) => {
      for await (const _ of e.submit([j, j + 1, j + 2], { maxNewTokens: 8, temperature: 0, stopAtEos: false }));
    }));
    await level();
    const t = { ...e.targetStats }, d = { ...e.draftStats! };
    for (const [name, s] of [['target', t], ['draft', d]] as const) {
      assert.ok(s.steps > 0 && s.passes >= s.steps && s.calls > s.passes, `${name}: every step ran its passes, packed (${s.steps} steps, ${s.passes} passes, ${s.calls} calls)`);
      assert.ok(s.runMs > 0 && s.feedsMs > 0 && s.afterMs > 0, `${name}: every part counted`);
      assert.ok(s.runMs + s.feedsMs <= s.ms, `${name}: ORT call and feeds are parts of the passes' time`);
    }
    // The batch empties: the time until the next request arrives is no request's work.
    await new Promise((r) => setTimeout(r, 300));
    await level();
    const idle = e.targetStats.afterMs - t.afterMs + e.draftStats!.afterMs - d.afterMs;
    assert.ok(idle < 300, `between-step time grew ${idle.toFixed(1)} ms over an idle 300 ms`);
    await e.dispose();
  });
});

test("a batched draft pass returns a catch-up call's last row alone (lastRow), equal to the head's own pass; other calls every row", async () => {
  await withPair(7, { topK: 2, maxDepth: 2, totalTokens: 3 }, async (cfg, p) => {
    const session = (p.spec.generator.parts.drafter as EagleDrafter).session, h = session.head, d = h.dim, k = session.topK;
    const batcher = new Batcher(), cache = new KVCache(1, 2 * h.nKvHeads, h.headDim, 32);
    const lane = new DraftLane(batcher, session, cache, cfg.maxSeqLen);
    const slotSession = await createSession(buildSlotDraftModel(h, session.weights.head, cfg, p.spec.model.weights, k, { quantize: session.weights.quantize, valueLayout: lane.valueLayout }), { threads: 1 });
    lane.open(slotSession);
    const slots = [cache.slot(0, h.nKvHeads), cache.slot(1, h.nKvHeads)], rs = h.nKvHeads * h.headDim;
    cache.liveHeads = cache.nKvHeads;
    slots.forEach((s, i) => {
      const rows = 4 + i, kv = () => Float32Array.from({ length: rows * rs }, (_, j) => Math.sin(j * (i + 2)));
      s.append([kv()], [kv()], rows);
    });
    const calls = [{ t: 3, lastRow: true }, { t: 2, lastRow: false }].map(({ t, lastRow }, i) => ({
      t, lastRow, tokens: Array.from({ length: t }, (_, j) => (j * 5 + i) % cfg.vocabSize), features: Float32Array.from({ length: t * d }, (_, j) => Math.cos(j + i)),
      positions: Array.from({ length: t }, (_, j) => slots[i].length + j),
    }));
    const view = lane.view();
    batcher.join();
    batcher.join();
    const got = await Promise.all(calls.map((c, i) => view.forward(slots[i], c.tokens, c.features, c.positions, undefined, { lastRow: c.lastRow })));
    batcher.leave();
    batcher.leave();
    assert.equal(lane.laneStats.passes, 1, 'both calls in one packed pass');
    for (let i = 0; i < 2; i++) {
      const want = await session.forward(slots[i], calls[i].tokens, calls[i].features, calls[i].positions);
      const t = calls[i].t, from = calls[i].lastRow ? t - 1 : 0, n = t - from;
      assert.equal(got[i].entropy.length, n, `call ${i}: ${n} output rows`);
      assert.deepEqual(Array.from(got[i].topkIds), Array.from(want.topkIds.subarray(from * k, t * k)), `call ${i}: top-k ids`);
      const close = (a: Float32Array, b: Float32Array, what: string) => a.forEach((x, j) => assert.ok(Math.abs(x - b[j]) < 1e-4, `call ${i}: ${what}[${j}] ${x} vs ${b[j]}`));
      close(got[i].hidden, want.hidden.subarray(from * d, t * d), 'hidden');
      close(got[i].topkLogProbs, want.topkLogProbs.subarray(from * k, t * k), 'top-k log-probs');
      close(got[i].newKeys[0], want.newKeys[0], 'keys'); // every row's K/V, whatever lastRow
    }
    await releaseSession(slotSession);
  });
});

test("dispose releases the fused round's session (its own copy of the target's weights) with the batch sessions", async () => {
  await withPair(3, { topK: 1, maxDepth: 2, totalTokens: 2 }, async (cfg, p) => {
    const e = new Engine(p.spec, { maxBatch: 2, policy: 'static-2', fusedRound: true });
    await e.start(1);
    for await (const _ of e.submit([1, 2, 3], { maxNewTokens: 6, temperature: 0, stopAtEos: false }));
    assert.ok(e.fusedRounds > 0, 'the lone request ran fused rounds');
    // The real ORT session under the round, its release counted on the way through.
    const inner = (e as unknown as { round: { session: Session } }).round.session.inner;
    let released = 0;
    const release = inner.release.bind(inner);
    inner.release = () => (released++, release());
    await e.dispose();
    assert.equal(released, 1, "the fused round's session was released");
    await e.dispose();
    assert.equal(released, 1, 'once');
  });
});

test('dispose refuses while a request is in flight; a start that fails releases what it built and can be retried', async () => {
  await withPair(5, { topK: 1, maxDepth: 2, totalTokens: 2 }, async (cfg, p) => {
    const e = new Engine(p.spec, { maxBatch: 2, policy: 'smartspec', fusedRound: true });
    // The fused round fails to build after the batch sessions are open.
    const engine = e as unknown as { createRound?: () => Promise<never>; owned: unknown[] };
    engine.createRound = async () => { throw new Error('no round today'); };
    await assert.rejects(e.start(1), /no round today/);
    assert.equal(engine.owned.length, 0, 'the sessions a failed start opened are released');
    delete engine.createRound;
    await e.start(1); // builds again: the early return is only for a started engine
    // Neither the head nor the fused round settles: a request's drafter has no settle to await
    // every round (a depth-0 SmartSpec round then costs what a plain one does).
    const slots = (e as unknown as { slots: { drafter?: { settle?: unknown } }[] }).slots;
    assert.ok(slots.every((s) => s.drafter && s.drafter.settle === undefined), 'no per-round settle');
    const prompt = [1, 2, 3], opts = { maxNewTokens: 6, temperature: 0, stopAtEos: false };
    const it = e.submit(prompt, opts), ids: number[] = [];
    const first = await it.next();
    if (!first.done) ids.push(...first.value.ids);
    await assert.rejects(e.dispose(), /1 request\(s\) still in flight; await drain\(\) first/);
    for (let r = await it.next(); !r.done; r = await it.next()) ids.push(...r.value.ids);
    assert.deepEqual(ids, (await p.ar.generate(prompt, opts)).ids, 'the request finished on live sessions');
    await e.drain();
    await e.dispose();
    assert.equal(engine.owned.length, 0);
  });
});

/** Busy-waits `ms` (the JS work of a request between passes); returns the ms it took. */
function spin(ms: number): number {
  const t0 = performance.now();
  while (performance.now() - t0 < ms);
  return performance.now() - t0;
}

test("afterMs counts a client's work right after its awaited pass, and leaves out passes run outside the lanes", async () => {
  await withPair(7, { topK: 2, maxDepth: 2, totalTokens: 3 }, async (cfg, p) => {
    const session = (p.spec.generator.parts.drafter as EagleDrafter).session, h = session.head;
    const run = async (outsideMs: number) => {
      const batcher = new Batcher(), cache = new KVCache(1, h.nKvHeads, h.headDim, 32);
      const lane = new DraftLane(batcher, session, cache, cfg.maxSeqLen), view = lane.view(), slot = cache.slot(0, h.nKvHeads);
      let outside = 0;
      batcher.outside = () => outside;
      batcher.join();
      let own = 0;
      // A lone call runs the head's own session: no per-slot graph needed.
      for (let i = 0; i < 4; i++) {
        await view.forward(slot, [1, 2], new Float32Array(2 * h.dim), [0, 1]);
        if (i === 3) break;
        own += spin(20); // the work comes right after the awaited pass (as EagleDrafter.draft's next level)
        outside += spin(outsideMs); // a pass outside the lanes (a fused round), reported as the engine does
      }
      batcher.leave();
      return { after: lane.laneStats.afterMs, own };
    };
    const a = await run(0);
    assert.ok(a.after >= a.own, `afterMs ${a.after.toFixed(1)} ms < the ${a.own.toFixed(1)} ms spun after the passes`);
    const b = await run(100);
    assert.ok(b.after >= b.own, `afterMs ${b.after.toFixed(1)} ms < the ${b.own.toFixed(1)} ms spun after the passes`);
    assert.ok(b.after < b.own + 150, `afterMs ${b.after.toFixed(1)} ms counted the 300 ms outside the lanes (own work ${b.own.toFixed(1)} ms)`);
  });
});

test("the engine reports a lone request's fused rounds to the batcher as time outside the lanes", async () => {
  await withPair(5, { topK: 1, maxDepth: 2, totalTokens: 2 }, async (cfg, p) => {
    const e = new Engine(p.spec, { maxBatch: 2, policy: 'static-2', fusedRound: true });
    await e.start(1);
    assert.equal(e.batcher.outside(), 0);
    for await (const _ of e.submit([1, 2, 3], { maxNewTokens: 6, temperature: 0, stopAtEos: false }));
    assert.ok(e.fusedRounds > 0 && e.batcher.outside() >= e.fusedRoundMs && e.fusedRoundMs > 0, `outside ${e.batcher.outside()} ms, fused rounds' ORT calls ${e.fusedRoundMs} ms`);
    await e.dispose();
  });
});

test("the draft lane's cost probe runs its catch-up calls as served ones (lastRow): one output row a call", async () => {
  await withPair(7, { topK: 2, maxDepth: 2, totalTokens: 3 }, async (cfg, p) => {
    const session = (p.spec.generator.parts.drafter as EagleDrafter).session, h = session.head;
    const batcher = new Batcher(), cache = new KVCache(1, 2 * h.nKvHeads, h.headDim, 32);
    const lane = new DraftLane(batcher, session, cache, cfg.maxSeqLen);
    const slotSession = await createSession(buildSlotDraftModel(h, session.weights.head, cfg, p.spec.model.weights, session.topK, { quantize: session.weights.quantize, valueLayout: lane.valueLayout }), { threads: 1 });
    lane.open(slotSession);
    cache.liveHeads = cache.nKvHeads;
    const slots = [cache.slot(0, h.nKvHeads), cache.slot(1, h.nKvHeads)];
    // The real per-slot session, the rows it is asked to compute outputs for seen on the way through.
    const inner = slotSession.inner, run = inner.run.bind(inner) as (f: Feeds, o: string[]) => Promise<unknown>;
    const outRows: number[] = [];
    inner.run = ((f: Feeds, o: string[]) => (outRows.push(f[names.outRows].dims[0]), run(f, o))) as typeof inner.run;
    // Two requests' catch-ups of 3 and 2 rows, as EagleDrafter.draft submits them, then the probe of that shape.
    const view = lane.view();
    batcher.join();
    batcher.join();
    await Promise.all([3, 2].map((t, i) => view.forward(slots[i], new Array<number>(t).fill(1), new Float32Array(t * h.dim), Array.from({ length: t }, (_, j) => j), undefined, { lastRow: true })));
    batcher.leave();
    batcher.leave();
    await lane.probe(slots, [3, 2]);
    assert.deepEqual(outRows, [2, 2], 'served catch-ups and the probe: one output row per call');
    await releaseSession(slotSession);
  });
});
