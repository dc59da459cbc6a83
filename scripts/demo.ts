/**
 * The main job until the embedded default model lands: makes a small random-weight Llama
 * checkpoint (HF layout) under runs/demo if it is not there, then generates from it plainly and
 * speculatively with an untrained (random) draft head, and shows that both give the same tokens.
 * Random weights make meaningless ids and a near-zero acceptance rate: this demonstrates the
 * machinery and its losslessness, not a speedup. Point `eaglet generate --model` at a real
 * checkpoint (HF directory or llama2.c .bin) for text.
 */
import { existsSync } from 'node:fs';
import { loadGenerator } from '../src/api.ts';
import { saveHfCheckpoint } from '../src/io/hf.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';

const dir = 'runs/demo/model';
if (!existsSync(`${dir}/config.json`)) {
  const cfg = makeConfig({ vocabSize: 512, dim: 128, nLayers: 4, nHeads: 4, nKvHeads: 2, maxSeqLen: 256 });
  console.error(`writing a random 1M-parameter checkpoint to ${dir} ...`);
  saveHfCheckpoint(dir, cfg, randomWeights(cfg, 1, 3));
}
const prompt = [1, 2, 3, 4, 5, 6, 7, 8];
for (const draft of [undefined, 'random']) {
  const g = await loadGenerator({ model: dir, draft });
  const r = await g.generate(prompt, { maxNewTokens: 48 });
  const s = r.stats.toJSON();
  console.log(`${draft ? 'speculative (random head)' : 'plain'}: ${r.ids.slice(0, 16).join(' ')} ...`);
  console.log(`  ${s.newTokens} tokens, ${s.tokensPerSecond.toFixed(1)} tok/s, ${s.targetPasses} target passes, tau ${s.tau.toFixed(2)}`);
  await g.dispose();
}
