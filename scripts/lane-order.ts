/**
 * What a batch lane's pass costs after the other lane's pass, against after its own (issue 15):
 * SmartSpec's start-up cost model times each lane's passes back to back, while a served step runs
 * its draft passes after the target's pass. On one started serving engine (embedded pair),
 * for each context and batch size: `pairs` rounds of draft, draft, target, target, draft passes
 * (one row a call for the draft head, depth + 1 tokens a call for the target), each pass timed
 * as the cost model's probe times it (Lane.probe).
 *
 *   node --import tsx scripts/lane-order.ts [--calls 2,4,16] [--contexts 40,128] [--pairs 40]
 *     [--max-batch 16] [--threads 1]
 *
 * Prints per shape the medians of a draft pass after a draft pass and after a target pass, their
 * paired ratio (median), the target pass after a target pass and after a draft pass, and the
 * start-up model's price of both passes.
 */
import { loadGenerator } from '../src/api.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import type { TargetLane, DraftLane } from '../src/runtime/batch.ts';
import type { KVCache } from '../src/runtime/kv-cache.ts';
import { Engine } from '../src/serve/engine.ts';
import { spread } from '../src/util/stats.ts';
import { scriptFlags } from './script-flags.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'calls', type: 'ints', default: [2, 4, 16], meta: 'LIST', help: 'calls a pass (requests in the batch)' },
  { flag: 'contexts', type: 'ints', default: [40, 128], meta: 'LIST', help: 'rows each call\'s slot holds' },
  { flag: 'pairs', type: 'int', min: 1, default: 40, meta: 'N', help: 'rounds per shape (medians over them)' },
  { flag: 'max-batch', type: 'int', min: 1, default: 16, meta: 'B', help: 'batch slots' },
  { flag: 'threads', type: 'int', min: 1, default: 1, meta: 'N', help: 'ORT intra-op threads' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const g = await loadGenerator({ threads: f.threads as number, keepWeights: true });
const engine = new Engine(g, { maxBatch: f.maxBatch as number, policy: 'smartspec', threads: f.threads as number });
await engine.start(3);
// The lanes and slots are the engine's own (not public API): a diagnostic reaches in.
const inner = engine as unknown as { targetLane: TargetLane; draftLane: DraftLane; slots: { cache: KVCache; head?: { cache: KVCache } }[] };
const depth = engine.tree.maxDepth, planner = engine.planner!;
const m = (xs: number[]) => spread(xs).median.toFixed(3);
for (const ctx of f.contexts as number[]) {
  for (const n of (f.calls as number[]).filter((c) => c <= engine.maxBatch)) {
    const target = inner.slots.slice(0, n).map((s) => s.cache), draft = inner.slots.slice(0, n).map((s) => s.head!.cache);
    for (const s of [...target, ...draft]) {
      s.ensureRows(ctx);
      s.length = ctx;
    }
    const ones = new Array<number>(n).fill(1), tree = new Array<number>(n).fill(depth + 1);
    const afterDraft: number[] = [], afterTarget: number[] = [], targetAfterTarget: number[] = [], targetAfterDraft: number[] = [];
    for (let r = 0; r < (f.pairs as number); r++) {
      await inner.draftLane.probe(draft, ones);
      afterDraft.push(await inner.draftLane.probe(draft, ones));
      targetAfterDraft.push(await inner.targetLane.probe(target, tree));
      targetAfterTarget.push(await inner.targetLane.probe(target, tree));
      afterTarget.push(await inner.draftLane.probe(draft, ones));
      await new Promise((res) => setImmediate(res)); // the event loop turns between steps, as in serving
    }
    const ratio = afterTarget.map((x, i) => x / afterDraft[i]);
    console.log(`context ${ctx}, ${n} calls: draft pass after a draft pass ${m(afterDraft)} ms, after a target pass ${m(afterTarget)} ms (paired ratio ${m(ratio)}); target pass after a target pass ${m(targetAfterTarget)} ms, after a draft pass ${m(targetAfterDraft)} ms; start-up model: draft ${planner.draft.ms(n, n, 1).toFixed(3)} ms, target ${planner.verify.ms(n * (depth + 1), n, depth + 1).toFixed(3)} ms`);
    for (const s of [...target, ...draft]) s.truncate(0);
  }
}
await engine.dispose();
await g.dispose();
