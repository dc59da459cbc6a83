/** The main job's code path on the committed default model: lossless against plain decoding. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadGenerator } from '../src/api.ts';
import { defaultParts } from '../src/default-model.ts';
import { DEFAULT_THREADS, defaultThreadsFor, ONE_THREAD_BELOW_PARAMS } from '../src/runtime/ort.ts';

const has = defaultParts();

test('the embedded default generates text, and its speculative output equals plain decoding', { skip: !has.target && 'no data/default/target' }, async () => {
  const main = await loadGenerator(); // what `eaglet generate` without --model loads
  const plain = await loadGenerator({ draft: null });
  try {
    assert.equal(main.generator.parts.drafter !== undefined, has.draft, 'the default head is used when present');
    assert.equal(main.threads, 1, 'the 1.6M-parameter default runs on one thread unless told otherwise');
    for (const prompt of ['export declare function', 'interface Array<T> {', '/**']) {
      for (const temperature of [0, 0.8]) {
        const a = await plain.generate(prompt, { maxNewTokens: 48, temperature, seed: 3 });
        const s = await main.generate(prompt, { maxNewTokens: 48, temperature, seed: 3 });
        assert.deepEqual(s.ids, a.ids, `${prompt} at temperature ${temperature}`);
        assert.ok(a.text && a.text.length > 20, 'decodes to text');
      }
    }
  } finally {
    await main.dispose();
    await plain.dispose();
  }
});

test('the embedded default policy: the whole chain on one fused round graph (what `eaglet generate` runs), ldlp+threshold pass by pass or across several graphs', { skip: !(has.target && has.draft && has.ldlp) && 'no data/default target, head and ldlp' }, async () => {
  for (const [opts, policy] of [
    [{ fusedRound: 'auto' }, 'static-3'], // the graph drafts all 3 levels whatever the plan: verifying fewer only drops accepted drafts
    [{ fusedRound: false }, 'ldlp+threshold'],
    [{ fusedRound: 'auto', roundDepths: [1] }, 'ldlp+threshold'], // LDLP picks the graph
  ] as const) {
    const g = await loadGenerator({ ...opts, roundDepths: 'roundDepths' in opts ? [...opts.roundDepths] : undefined });
    try {
      assert.equal(g.generator.policy.name, policy, JSON.stringify(opts));
      assert.equal(g.newPolicy().name, policy, 'a fresh policy (bench) is the same');
    } finally {
      await g.dispose();
    }
  }
});

test('default threads: one below ONE_THREAD_BELOW_PARAMS parameters, every core (at most 8) from there; an explicit count wins', async () => {
  assert.equal(defaultThreadsFor(ONE_THREAD_BELOW_PARAMS - 1), 1);
  assert.equal(defaultThreadsFor(ONE_THREAD_BELOW_PARAMS), DEFAULT_THREADS);
  if (!has.target) return;
  const g = await loadGenerator({ draft: null, threads: 2 });
  try {
    assert.equal(g.threads, 2);
  } finally {
    await g.dispose();
  }
});
