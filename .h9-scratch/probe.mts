import { readFileSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { FeatureLogWriter, readFeatureLog } from '/work/main/training/feature-log.ts';
import { EagletError } from '/work/main/src/errors.ts';
import { makeConfig } from '/work/main/src/model/random.ts';
const META = { model: { source: 'random', sha256: 'ab'.repeat(32), config: makeConfig({ vocabSize: 32, dim: 8, nLayers: 1, nHeads: 2 }) }, corpus: { paths: ['c.txt'], mode: 'teacher' as const, seqLen: 16, maxTokens: 100 } };
const p = '/tmp/rb/v.arrow';
const w = new FeatureLogWriter(p, 4, 2, 5);
for (let s = 0; s < 3; s++) await w.append({ seqId: s, startPosition: 0, tokens: [1,2,3,4], nextTokens: [2,3,4,-1], features: new Float32Array(16).fill(s), topIds: new Int32Array(8), topProbs: new Float32Array(8) });
await w.finish(META);
const valid = readFileSync(p);
console.log('size', valid.length);
const errs = new Map<string, number>();
const bad = '/tmp/rb/b.arrow';
const samples = fc.sample(fc.oneof(
  fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({min:0,max:255})), {minLength:1,maxLength:8}).map(e => { const b = Buffer.from(valid); for (const [i,v] of e) b[i]=v; return b; }),
  fc.nat(valid.length).map(n => valid.subarray(0, n)),
  fc.uint8Array({maxLength: 200}),
), { numRuns: 5000, seed: 1 });
let i = 0;
for (const s of samples) {
  writeFileSync(bad, s);
  const t0 = performance.now();
  try { let rows = 0; for await (const b of readFeatureLog(bad)) { rows += b.rows; } }
  catch (e) { const k = e instanceof EagletError ? "clean" : `${(e as Error).stack!.slice(0,600)}`; errs.set(k, (errs.get(k) ?? 0) + 1); }
  const dt = performance.now() - t0; if (dt > 500) console.log('slow', i, dt);
  i++;
}
console.log(errs);
console.log(process.memoryUsage());
