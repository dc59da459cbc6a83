/**
 * What padding costs a batched pass (issue 15): the per-slot graph pads every call to the longest
 * in attention, so one request verifying 4 tokens among 15 verifying 1 costs about what all 16
 * verifying 2 cost. Times per-slot target passes of even and uneven call lengths over 16 slots
 * at context L (--context, default 80), interleaved, and draft-head passes of one and sixteen calls; medians.
 * SmartSpec's start-up prices this (Engine.measurePerToken, StepCost.ms's `m`).
 *
 *   node --import tsx scripts/slot-padding.ts [--context L]
 */
import { loadGenerator } from '../src/api.ts';
import { Engine } from '../src/serve/engine.ts';
import { median as med } from '../src/util/stats.ts';
import { scriptFlags } from './script-flags.ts';
const f = scriptFlags(import.meta.url, [{ flag: 'context', type: 'int', min: 1, default: 80, meta: 'L', help: 'cached context of every slot' }]);
const g = await loadGenerator({ threads: 1, keepWeights: true });
const e = new Engine(g, { maxBatch: 16, maxQueue: 1024, policy: 'static-3', threads: 1 });
await e.start();
const lane = (e as any).targetLane, dlane = (e as any).draftLane;
const slots = (e as any).slots.map((s: any) => s.cache).sort((a: any, b: any) => a.headBase - b.headBase);
const L = f.context as number;
for (const s of slots) { s.ensureRows(L + 8); s.length = L; }
const shapes: Record<string, number[]> = {
  '16x1': Array(16).fill(1),
  '15x1+1x2': [...Array(15).fill(1), 2],
  '15x1+1x4': [...Array(15).fill(1), 4],
  '14x1+2x4': [...Array(14).fill(1), 4, 4],
  '8x1+8x4': [...Array(8).fill(1), ...Array(8).fill(4)],
  '16x2': Array(16).fill(2),
  '16x4': Array(16).fill(4),
};
const t: Record<string, number[]> = {};
for (const k in shapes) t[k] = [];
for (let r = 0; r < 60; r++) for (const k in shapes) { const dt = await lane.probe(slots, shapes[k]); if (r > 2) t[k].push(dt); }
for (const k in shapes) console.log(k, 'tokens', shapes[k].reduce((a, b) => a + b), 'median ms', med(t[k]).toFixed(3));
// draft lane: one call alone (runOne) of 1 row, and 16 calls of 1 row
const dslots = (e as any).slots.map((s: any) => s.head.cache).sort((a: any, b: any) => a.headBase - b.headBase);
for (const s of dslots) { s.ensureRows(L + 8); s.length = L; }
const dt: Record<string, number[]> = { '1x1': [], '1x4': [], '1x40': [], '16x1': [], '16x2': [] };
for (let r = 0; r < 60; r++) {
  const a = await dlane.probe(dslots.slice(0, 1), [1]); const b = await dlane.probe(dslots.slice(0, 1), [4]); const b2 = await dlane.probe(dslots.slice(0, 1), [40]);
  const c = await dlane.probe(dslots, Array(16).fill(1)); const d = await dlane.probe(dslots, Array(16).fill(2));
  if (r > 2) { dt['1x1'].push(a); dt['1x4'].push(b); dt['1x40'].push(b2); dt['16x1'].push(c); dt['16x2'].push(d); }
}
for (const k in dt) console.log('draft', k, med(dt[k]).toFixed(3));
await e.dispose(); await g.dispose();
await e.dispose();
await g.dispose();
