/**
 * Continuous batching is lossless: requests decoded together (one packed target pass per step,
 * their drafts packed too, joining and leaving between steps) give each request exactly the ids
 * it gets alone with plain decoding. Random tiny targets, random heads, random tree shapes,
 * policies and batch sizes. Also: cache slots write only their own rows.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { tinyConfig, tinyPair, treeShape } from './support/models.ts';
import { Engine } from '../src/serve/engine.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';

test('batched greedy decoding == each request decoded alone, for plain, static and smartspec serving', async () => {
  let batched = 0;
  await fc.assert(
    fc.asyncProperty(
      tinyConfig(64), fc.integer({ min: 0, max: 1e6 }), treeShape, fc.constantFrom('plain', 'static-1', 'static-3', 'smartspec'), fc.integer({ min: 1, max: 3 }),
      fc.array(fc.record({ prompt: fc.array(fc.nat(), { minLength: 1, maxLength: 12 }), maxNewTokens: fc.integer({ min: 1, max: 30 }), delayMs: fc.integer({ min: 0, max: 3 }) }), { minLength: 1, maxLength: 5 }),
      async (cfg, seed, tree, policy, maxBatch, requests) => {
        const p = await tinyPair(cfg, seed, { ...tree, totalTokens: Math.max(tree.totalTokens, tree.maxDepth) });
        try {
          const e = new Engine(p.spec, { maxBatch, policy: policy.startsWith('static') ? `static-${Math.min(Number(policy.slice(7)), tree.maxDepth)}` : policy });
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
          assert.equal(e.batcher.size, 0);
          assert.equal(e.activeRequests, 0);
        } finally {
          await p.dispose();
        }
      },
    ),
    { numRuns: 25, seed: 15 },
  );
  assert.ok(batched >= 5, `only ${batched} runs packed several requests into one pass`);
});

test('a cache slot writes and reads only its own rows', () => {
  const parent = new KVCache(2, 2, 3, 12, 12), a = parent.slot(0, 6), b = parent.slot(1, 6);
  const rows = (t: number, v: number) => [Float32Array.from({ length: t * 6 }, (_, i) => v + i), Float32Array.from({ length: t * 6 }, (_, i) => -v - i)];
  const [k1, v1] = rows(3, 100), [k2, v2] = rows(2, 500);
  a.append([k1, k1], [v1, v1], 3);
  b.append([k2, k2], [v2, v2], 2);
  assert.deepEqual(Array.from(a.pastKeys(1)), Array.from(k1));
  assert.deepEqual(Array.from(b.pastValues(0)), Array.from(v2));
  // The parent sees slot b's rows at 6.., slot a's at 0..
  parent.length = 8;
  assert.deepEqual(Array.from(parent.pastKeys(0, 6, 2)), Array.from(k2));
  assert.deepEqual(Array.from(parent.pastKeys(0, 0, 3)), Array.from(k1));
  b.keep([1]);
  assert.throws(() => a.keyView(0), /slot/);
  assert.throws(() => a.append([k1, k1], [v1, v1], 4), /full/);

  // A growing parent: a high slot's writes widen the stride (moving the low slot's rows), and
  // shrinking once the high slot is done keeps the low slot's rows.
  const grow = new KVCache(1, 2, 3, 40, 4), low = grow.slot(0, 10), high = grow.slot(3, 10);
  low.append([k1], [v1], 3);
  assert.ok(grow.stride < 32);
  high.append([k2], [v2], 2);
  assert.ok(grow.stride >= 32);
  assert.deepEqual(Array.from(low.pastValues(0)), Array.from(v1));
  assert.deepEqual(Array.from(high.pastKeys(0)), Array.from(k2));
  grow.shrinkRows(10);
  assert.ok(grow.stride < 32 && grow.stride >= 10, `stride ${grow.stride}`);
  assert.deepEqual(Array.from(low.pastKeys(0)), Array.from(k1));
  assert.deepEqual(Array.from(low.pastValues(0)), Array.from(v1));
});
