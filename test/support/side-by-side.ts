/** Two target sessions decoding the same tokens step by step, each over its own cache. */
import type { ModelConfig } from '../../src/model/config.ts';
import { KVCache } from '../../src/runtime/kv-cache.ts';
import type { TargetOutput, TargetSession } from '../../src/runtime/target.ts';

/**
 * Prefills a prompt of `prompt` tokens (drawn from `seed`) in both, then decodes `steps` greedy
 * tokens one a step (the first session's choices), calling `check` with both outputs at each.
 */
export async function decodeSideBySide(cfg: ModelConfig, a: TargetSession, b: TargetSession, seed: number, prompt: number, steps: number, check: (x: TargetOutput, y: TargetOutput, position: number) => void): Promise<void> {
  const caches = [a, b].map((s) => new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen).useValueLayout(s.valueLayout));
  const ids = Array.from({ length: prompt }, (_, i) => (seed + 5 * i) % cfg.vocabSize);
  for (const [s, cache] of [[a, caches[0]], [b, caches[1]]] as const) {
    const pre = await s.forward(cache, ids, ids.map((_, i) => i));
    cache.append(pre.newKeys, pre.newValues, prompt);
  }
  let next = ids[prompt - 1];
  for (let p = prompt; p < prompt + steps; p++) {
    const x = await a.forward(caches[0], [next], [p]);
    const y = await b.forward(caches[1], [next], [p]);
    check(x, y, p);
    caches[0].append(x.newKeys, x.newValues, 1);
    caches[1].append(y.newKeys, y.newValues, 1);
    next = x.argmax[0];
  }
}
