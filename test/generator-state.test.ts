/** One generation at a time per generator, and clear errors after dispose(). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { loadGenerator } from '../src/api.ts';
import { StateError } from '../src/errors.ts';
import { tinyConfig, tinyPair } from './support/models.ts';

test('an overlapping generation fails at once with a clear error; the running one is unharmed', async () => {
  const cfg = fc.sample(tinyConfig(), { seed: 31, numRuns: 1 })[0];
  const p = await tinyPair(cfg, 31, { topK: 2, maxDepth: 3, totalTokens: 6 });
  try {
    for (const g of [p.ar, p.spec]) {
      const opts = { maxNewTokens: 20, stopAtEos: false };
      const alone = await g.generate([1, 2, 3], opts);
      const first = g.generate([1, 2, 3], opts);
      await assert.rejects(g.generate([4, 5], opts), (e: Error) => e instanceof StateError && /already generating: one generation at a time/.test(e.message));
      assert.deepEqual((await first).ids, alone.ids);
      // A stream left half-read blocks others until it is returned.
      const it = g.stream([1, 2, 3], opts);
      await it.next();
      await assert.rejects(g.generate([1], opts), StateError);
      await it.return(undefined as never);
      assert.deepEqual((await g.generate([1, 2, 3], opts)).ids, alone.ids);
    }
  } finally {
    await p.dispose();
  }
  await assert.rejects(p.spec.generate([1, 2], {}), (e: Error) => e instanceof StateError && /disposed/.test(e.message));
  await assert.rejects(p.ar.stream([1, 2]).next(), StateError);
  await p.ar.dispose(); // twice is harmless
});

test("only a stream's last chunk carries `end`, the reason generation stops (the stats' stopReason)", async () => {
  const cfg = fc.sample(tinyConfig(), { seed: 32, numRuns: 1 })[0];
  const p = await tinyPair(cfg, 32, { topK: 2, maxDepth: 3, totalTokens: 6 });
  try {
    for (const g of [p.ar, p.spec])
      for (const [prompt, opts] of [[[1, 2, 3], { maxNewTokens: 17, stopAtEos: false }], [[4, 5], { maxNewTokens: 1 }], [[6, 7, 8], { maxNewTokens: 60, temperature: 1, seed: 3 }]] as const) {
        const it = g.stream([...prompt], opts), ends: (string | undefined)[] = [];
        let r = await it.next();
        for (; !r.done; r = await it.next()) ends.push(r.value.end);
        assert.ok(ends.length > 0);
        assert.deepEqual(ends.slice(0, -1), new Array(ends.length - 1).fill(undefined));
        assert.equal(ends[ends.length - 1], r.value.stopReason);
        assert.ok(r.value.stopReason === 'eos' || r.value.stopReason === 'max-new-tokens', r.value.stopReason);
      }
  } finally {
    await p.dispose();
  }
});

test("the text stream's last chunk carries `end` and the rest of the text: no chunk follows it (byte-level tails)", async () => {
  const g = await loadGenerator({ threads: 1 });
  try {
    // At temperature 20 some seeds end on an unfinished UTF-8 sequence (seeds 6 and 32 did), whose text only flush gives.
    for (let seed = 0; seed < 40; seed++) {
      const it = g.stream('Hello', { maxNewTokens: 3, temperature: 20, seed }), chunks: { ids: number[]; text: string; end?: string }[] = [];
      for (let r = await it.next(); !r.done; r = await it.next()) chunks.push(r.value);
      assert.deepEqual(chunks.map((c) => c.end !== undefined), chunks.map((_, i) => i === chunks.length - 1), `seed ${seed}`);
      const ids = chunks.flatMap((c) => c.ids);
      assert.equal(chunks.map((c) => c.text).join(''), g.tokenizer!.decode(ids), `seed ${seed}`);
    }
  } finally {
    await g.dispose();
  }
});
