/** One generation at a time per generator, and clear errors after dispose(). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
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
