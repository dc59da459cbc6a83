/** The main job's code path on the committed default model: lossless against plain decoding. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadGenerator } from '../src/api.ts';
import { defaultParts } from '../src/default-model.ts';

const has = defaultParts();

test('the embedded default generates text, and its speculative output equals plain decoding', { skip: !has.target && 'no data/default/target' }, async () => {
  const main = await loadGenerator(); // what `eaglet generate` without --model loads
  const plain = await loadGenerator({ draft: null });
  try {
    assert.equal(main.generator.parts.drafter !== undefined, has.draft, 'the default head is used when present');
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
