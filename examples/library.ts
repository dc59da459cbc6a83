/**
 * The library API in one file (run: node --import tsx examples/library.ts [MODEL]).
 * Without MODEL it makes a small random checkpoint first, so it runs anywhere.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadGenerator, saveHfCheckpoint } from '../src/index.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';

let model = process.argv[2];
const scratch = model ? undefined : mkdtempSync(join(tmpdir(), 'eaglet-example-'));
if (scratch) {
  model = join(scratch, 'model');
  const cfg = makeConfig({ vocabSize: 256, dim: 64, nLayers: 2, nHeads: 4, maxSeqLen: 128 });
  saveHfCheckpoint(model, cfg, randomWeights(cfg, 1, 3));
}

// A target with a draft head ('random' = untrained: lossless but rarely accepted).
const g = await loadGenerator({ model, draft: 'random', tree: { maxDepth: 4, totalTokens: 12, topK: 3 } });

// Streaming, with an AbortSignal that stops at the next round boundary.
const controller = new AbortController();
let streamed = 0;
for await (const chunk of g.stream([1, 2, 3], { maxNewTokens: 64, temperature: 0.8, seed: 7, signal: controller.signal })) {
  streamed += chunk.ids.length; // chunk.text holds the decoded text when the model has a tokenizer
  if (streamed >= 10) controller.abort();
}

// Non-streaming: the same call collected, with stats.
const { ids, stats } = await g.generate([1, 2, 3], { maxNewTokens: 16 });
console.log(JSON.stringify({ streamed, ids, tau: stats.tau, stopReason: stats.stopReason, targetPasses: stats.targetPasses }));
await g.dispose();
if (scratch) rmSync(scratch, { recursive: true, force: true });
