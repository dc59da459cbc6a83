/**
 * Where a lone request's time in the serving engine differs from single-request generation's
 * (issue 15, concurrency 1), in one process, no HTTP. Methods, interleaved request by request
 * (order rotated), each 48-token greedy completions of the held-out prompts:
 *
 *   L    `eaglet generate --policy static-3`: the fused round, a generator loaded apart (the load
 *        test's concurrency-1 yardstick)
 *   Lg   `eaglet generate` (its default policy) on L's sessions
 *   E    SmartSpec's engine (Engine.submit), as served
 *   ES   the same engine with static-3 (Engine.setPolicy)
 *   LS   the library's loop (Generator, StaticPolicy, RoundDrafter) on the engine's own fused-round
 *        session and its slot-0 caches: what differs from E is the engine's JS path alone
 *   LR   the library's loop on the engine's fused-round session with caches of its own
 *
 * LS and LR reach into the engine's private fields (its round session, slots): a diagnostic.
 * Reported per method: ms per request, median (q1-q3), its paired per-request ratio against L's
 * (L / method: > 1 = faster than L), and the medians of the generator's split: prefill, policy
 * (plan, observe, the drafter's settle), draft, verify, the loop's rest, and what lies outside
 * the generator (the engine's set-up and stream).
 *
 *   node --import tsx scripts/engine-split.ts [--requests 40] [--methods L,E,ES,LS,LR]
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadGenerator } from '../src/api.ts';
import { DEFAULT_DIR } from '../src/default-model.ts';
import { Generator } from '../src/generate/generator.ts';
import { RoundDrafter } from '../src/generate/round-drafter.ts';
import type { GenerationStats } from '../src/generate/stats.ts';
import type { KVCache } from '../src/runtime/kv-cache.ts';
import type { RoundSession } from '../src/runtime/round.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { StaticPolicy } from '../src/policies/policy.ts';
import { Engine } from '../src/serve/engine.ts';
import { spread } from '../src/util/stats.ts';
import { UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'requests', type: 'int', min: 1, default: 40, meta: 'N', help: 'timed requests per method (after 2 warm-up ones)' },
  { flag: 'methods', type: 'string', default: 'L,E,ES,LS,LR', meta: 'LIST', help: 'L, Lg, E, ES, LS, LR (see the file comment); the first is the reference; rotated, so each follows the one before it' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const R = f.requests as number, N = 48, names = String(f.methods).split(',');
const prompts = readFileSync(join(DEFAULT_DIR, 'heldout-prompts.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as number[]);
const g = await loadGenerator({ threads: 1, keepWeights: true });
const lib = await loadGenerator({ threads: 1, fusedRound: 'auto' });
const e = new Engine(g, { maxBatch: 16, maxQueue: 1024, policy: 'smartspec', fusedRound: true });
await e.start();
const S = g.model.config.maxSeqLen, opts = { maxNewTokens: N, temperature: 0 };
type Slot = { cache: KVCache; head: { cache: KVCache } };
const inner = e as unknown as { round: RoundSession; free: Slot[]; markLive(): void; release(s: Slot): void };
const st3 = () => new StaticPolicy(3, 3);
const drain = async (it: AsyncGenerator<unknown, GenerationStats>) => {
  let r = await it.next();
  while (!r.done) r = await it.next();
  return r.value;
};
const ownCaches = new RoundDrafter(inner.round, S);
const run: Record<string, (p: number[]) => Promise<GenerationStats>> = {
  L: async (p) => (await new Generator({ ...lib.generator.parts, policy: st3() }).generate(p, opts)).stats,
  Lg: async (p) => (await new Generator({ ...lib.generator.parts, policy: lib.newPolicy() }).generate(p, opts)).stats,
  E: (p) => drain(e.submit(p, opts)),
  ES: async (p) => {
    e.setPolicy('static-3');
    try {
      return await drain(e.submit(p, opts));
    } finally {
      e.setPolicy('smartspec');
    }
  },
  LS: async (p) => {
    const slot = inner.free.pop()!; // held as the engine holds a request's slot
    inner.markLive();
    try {
      return (await new Generator({ target: g.generator.parts.target, drafter: new RoundDrafter(inner.round, S, slot.head.cache), policy: st3(), cache: slot.cache }).generate(p, opts)).stats;
    } finally {
      inner.release(slot);
    }
  },
  LR: async (p) => (await new Generator({ target: g.generator.parts.target, drafter: ownCaches, policy: st3() }).generate(p, opts)).stats,
};
for (const n of names) if (!run[n]) throw new UsageError('--methods', `L, Lg, E, ES, LS, LR; got ${n}`);
const ms = new Map(names.map((n) => [n, [] as number[]])), split = new Map(names.map((n) => [n, [] as number[][]]));
for (let j = -2; j < R; j++) {
  const p = prompts[(j + 2) % prompts.length];
  for (let k = 0; k < names.length; k++) {
    const m = names[(k + j + 2) % names.length];
    const t0 = performance.now(), s = await run[m](p), t = performance.now() - t0, x = s.ms;
    if (j < 0) continue;
    ms.get(m)!.push(t);
    split.get(m)!.push([x.prefill, x.policy, x.draft, x.verify, x.total - x.prefill - x.policy - x.draft - x.verify, t - x.total]);
  }
}
const show = (xs: number[], dp = 3) => {
  const q = spread(xs);
  return `${q.median.toFixed(dp)} (${q.q1.toFixed(dp)}-${q.q3.toFixed(dp)})`;
};
const ref = ms.get(names[0])!;
console.log(`ms per ${N}-token request, median (q1-q3) of ${R}; split: medians of prefill / policy / draft / verify / rest / outside the generator`);
for (const n of names) {
  const sp = split.get(n)!;
  console.log(`${n}: ${show(ms.get(n)!)}${n === names[0] ? '' : `, ${names[0]} / ${n} per request ${show(ms.get(n)!.map((x, i) => ref[i] / x))}`}; split ${sp[0].map((_, i) => spread(sp.map((x) => x[i])).median.toFixed(3)).join(' / ')}`);
}
await e.drain();
await e.dispose();
await g.dispose();
await lib.dispose();
