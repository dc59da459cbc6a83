/**
 * Self-drafting policies (paired with the SelfDrafter, src/generate/self-drafter.ts):
 *
 * `exit-E`: LayerSkip-style static self-speculation: exit layer E and the full tree depth
 * every round (optionally cut by a confidence threshold).
 *
 * `del`: DEL (Entezari Zarch et al. 2025, arXiv 2504.05598), per round:
 *   - acceptance per exit layer l: alpha_l, a moving average of how often exit l's "shadow
 *     token" (argmax of the LM head on the normed residual after layer l) equals the token the
 *     target emitted, over the verified rows of each round (accepted path + bonus row);
 *   - exit layer and speculation length: the (E, d) maximising DEL's tokens per layer,
 *       TPL(E, d) = (1 - alpha_E^(d+1)) / (1 - alpha_E) / (d E + L),
 *     against plain decoding's 1 / L (d = 0: no speculation this round);
 *   - dynamic draft exiting: stop drafting deeper once the best path's draft probability falls
 *     below a confidence threshold.
 * From the paper: shadow tokens, the TPL score and the confidence stop. Ours (the paper's exact
 * update rules were not available to us): the moving-average rate weighted by rows, the prior
 * alpha_l = l / L, a fixed threshold (DEL adapts it), the optional per-call cost term in layer
 * units (`call-cost`: the fixed cost of one ORT call, which dominates small models on a CPU), and
 * the probe: after `probe-every` rounds without speculation one round drafts a single token at
 * the best exit, so the estimates keep learning when speculation does not pay.
 * With trees (top-k > 1) the chain formula still scores (E, d): ours too.
 */
import type { Frontier } from '../../trees/index.ts';
import { resolveOptions, type FlagSpec } from '../option-schema.ts';
import type { LengthPolicy, RoundOutcome, RoundPlan, RoundState } from './policy.ts';

export interface DelOptions {
  /** Stop drafting deeper once the best path's draft probability is below this. Default 0.2. */
  minConfidence: number;
  /** Moving-average rate of the per-layer acceptance, per verified row. Default 0.05. */
  rate: number;
  /** Fixed cost of one ORT call, in layers. Default 0 (DEL's pure tokens-per-layer). */
  callCost: number;
  /** After this many rounds without speculation, probe one. Default 8. */
  probeEvery: number;
}

export const DEL_FLAGS: FlagSpec[] = [
  { flag: 'min-confidence', type: 'number', min: 0, max: 1, default: 0.2, meta: 'P', help: "stop drafting deeper once the best path's draft probability falls below P" },
  { flag: 'rate', type: 'number', above: 0, max: 1, default: 0.05, meta: 'R', help: 'moving-average rate of each exit layer\'s acceptance, per verified row' },
  { flag: 'call-cost', type: 'number', min: 0, default: 0, meta: 'C', help: 'cost of one model call in layers, added to the tokens-per-layer cost (0 = DEL\'s)' },
  { flag: 'probe-every', type: 'int', min: 1, default: 8, meta: 'N', help: 'after N rounds without speculation, draft one token to keep learning' },
];

export interface ExitOptions {
  /** The exit layer. */
  at: number;
  /** As DelOptions.minConfidence; default 0 = always the full depth. */
  minConfidence: number;
}

export const EXIT_FLAGS: FlagSpec[] = [
  { flag: 'at', type: 'int', min: 1, meta: 'E', help: 'exit layer: draft with layers 0..E-1 (required; `exit-E`)' },
  { flag: 'min-confidence', type: 'number', min: 0, max: 1, default: 0, meta: 'P', help: "stop drafting deeper once the best path's draft probability falls below P (0 = never)" },
];

/** DEL's tokens per layer for exit E, length d, acceptance a, L layers, plus `callCost` layers per model call (d + 2 calls; plain decoding 1). */
export function tokensPerCost(a: number, E: number, d: number, L: number, callCost = 0): number {
  if (d === 0) return 1 / (L + callCost);
  const tokens = a >= 1 ? d + 1 : (1 - a ** (d + 1)) / (1 - a);
  return tokens / (d * E + L + callCost * (d + 2));
}

export class ExitPolicy implements LengthPolicy {
  readonly name: string;
  readonly options: ExitOptions;
  private readonly logMin: number;
  constructor(readonly nLayers: number, readonly totalTokens: number, options: Partial<ExitOptions>) {
    this.options = resolveOptions<ExitOptions>(EXIT_FLAGS, options);
    if (this.options.at === undefined) throw new RangeError('exit policy needs a layer');
    this.name = `exit-${this.options.at}`;
    this.logMin = this.options.minConfidence > 0 ? Math.log(this.options.minConfidence) : -Infinity;
  }

  plan(s: RoundState): RoundPlan {
    return { depth: s.maxDepth, totalTokens: this.totalTokens, exitLayer: this.options.at };
  }

  continueDrafting(f: Frontier): boolean {
    return f.values[0] >= this.logMin;
  }
}

export class DelPolicy implements LengthPolicy {
  readonly name = 'del';
  readonly options: DelOptions;
  /** alpha[l]: estimated acceptance of exit layer l (1..L-1). */
  readonly alpha: Float64Array;
  /** Rounds planned per exit layer (0 = no speculation), for reports. */
  readonly chosen: number[];
  private readonly logMin: number;
  private plain = 0; // rounds in a row without speculation

  constructor(readonly nLayers: number, readonly totalTokens: number, options: Partial<DelOptions> = {}) {
    if (nLayers < 2) throw new RangeError(`DEL needs a target with at least 2 layers, got ${nLayers}`);
    this.options = resolveOptions<DelOptions>(DEL_FLAGS, options);
    this.logMin = this.options.minConfidence > 0 ? Math.log(this.options.minConfidence) : -Infinity;
    this.alpha = Float64Array.from({ length: nLayers + 1 }, (_, l) => l / nLayers);
    this.chosen = new Array(nLayers).fill(0);
  }

  plan(s: RoundState): RoundPlan {
    const L = this.nLayers, c = this.options.callCost;
    let best = tokensPerCost(0, 0, 0, L, c), E = 0, d = 0;
    for (let l = 1; l < L; l++) {
      for (let k = 1; k <= s.maxDepth; k++) {
        const v = tokensPerCost(this.alpha[l], l, k, L, c);
        if (v > best) (best = v), (E = l), (d = k);
      }
    }
    if (d === 0 && s.maxDepth > 0 && ++this.plain >= this.options.probeEvery) {
      this.plain = 0;
      E = 1;
      for (let l = 2; l < L; l++) if (this.alpha[l] / l > this.alpha[E] / E) E = l;
      d = 1;
    } else if (d > 0) this.plain = 0;
    this.chosen[d === 0 ? 0 : E]++;
    return d === 0 ? { depth: 0, totalTokens: 0 } : { depth: d, totalTokens: this.totalTokens, exitLayer: E, shadows: true };
  }

  continueDrafting(f: Frontier): boolean {
    return f.values[0] >= this.logMin;
  }

  observe(o: RoundOutcome): void {
    const m = o.notes?.exitMatches, rows = o.notes?.shadowRows ?? 0;
    if (!m || rows === 0) return;
    // A moving average per verified row: `rows` rows move the estimate as far as `rows` single updates would.
    const r = 1 - (1 - this.options.rate) ** rows;
    for (let l = 1; l < this.nLayers; l++) this.alpha[l] += r * (m[l] / rows - this.alpha[l]);
  }
}
