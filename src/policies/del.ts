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
 * the probe: after `probe-every` rounds without speculation one round drafts at the best
 * speculative (exit, length), so the estimates keep learning when speculation does not pay, and
 * each probe after which plain decoding still wins doubles that gap (up to `probe-max`); shadow tokens
 * every `shadow-every`-th speculative round; and by default the cost in measured wall ms per
 * exit layer instead of layers (`cost=layers` is DEL's tokens per layer), with the ms a round spent
 * building an exit's sessions on first use left out.
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
  /** Each probe that leaves plain decoding ahead doubles the gap to the next, up to this. Default 128. */
  probeMax: number;
  /** Shadow tokens every N-th speculative round (they cost one small pass). Default 4. */
  shadowEvery: number;
  /** 'measured' (ours): cost = wall ms measured per exit layer; 'layers': DEL's layer count. Default 'measured'. */
  cost: 'measured' | 'layers';
}

export const DEL_FLAGS: FlagSpec[] = [
  { flag: 'min-confidence', type: 'number', min: 0, max: 1, default: 0.2, meta: 'P', help: "stop drafting deeper once the best path's draft probability falls below P" },
  { flag: 'rate', type: 'number', above: 0, max: 1, default: 0.05, meta: 'R', help: 'moving-average rate of each exit layer\'s acceptance, per verified row' },
  { flag: 'call-cost', type: 'number', min: 0, default: 0, meta: 'C', help: 'cost of one model call in layers, added to the tokens-per-layer cost (0 = DEL\'s)' },
  { flag: 'probe-every', type: 'int', min: 1, default: 8, meta: 'N', help: 'after N rounds without speculation, probe one speculative round to keep learning' },
  { flag: 'probe-max', type: 'int', min: 1, default: 128, meta: 'N', help: 'each probe after which plain decoding still wins doubles the gap to the next probe, up to N rounds' },
  { flag: 'shadow-every', type: 'int', min: 1, default: 4, meta: 'N', help: 'update the per-layer acceptance (shadow tokens) every N-th speculative round' },
  { flag: 'cost', type: 'string', choices: ['measured', 'layers'], default: 'measured', meta: 'C', help: 'cost of a round: measured ms per exit layer (ours), or layers computed (DEL)' },
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
  private probeGap: number; // rounds without speculation before the next probe
  private probing = false; // the last plan was a probe
  private spec = 0; // speculative rounds planned
  // Measured costs (ms, moving averages; 0 = not measured yet): per exit layer, one draft pass and the verification; a plain step.
  private readonly passMs: Float64Array;
  private readonly verifyMs: Float64Array;
  private arMs = 0;

  constructor(readonly nLayers: number, readonly totalTokens: number, options: Partial<DelOptions> = {}) {
    if (nLayers < 2) throw new RangeError(`DEL needs a target with at least 2 layers, got ${nLayers}`);
    this.options = resolveOptions<DelOptions>(DEL_FLAGS, options);
    this.logMin = this.options.minConfidence > 0 ? Math.log(this.options.minConfidence) : -Infinity;
    this.alpha = Float64Array.from({ length: nLayers + 1 }, (_, l) => l / nLayers);
    this.chosen = new Array(nLayers).fill(0);
    this.probeGap = this.options.probeEvery;
    this.passMs = new Float64Array(nLayers);
    this.verifyMs = new Float64Array(nLayers);
  }

  /**
   * Cost of a round at exit E drafting d tokens (d = 0: a plain step). 'layers': DEL's d E + L
   * (+ call cost). 'measured': (d + 1) draft passes (the root, d - 1 deeper ones and the
   * completion) plus one verification at E, from the moving averages; exits not yet measured are
   * priced by the layer model scaled to the ms per layer seen so far. Ours.
   */
  private roundCost(E: number, d: number): number {
    const L = this.nLayers, c = this.options.callCost;
    const layers = d === 0 ? L + c : d * E + L + c * (d + 2);
    if (this.options.cost === 'layers') return layers;
    let unit = 0, n = 0; // ms per layer-equivalent over the exits measured
    for (let l = 1; l < L; l++) if (this.passMs[l] > 0) (unit += this.passMs[l] / (l + 1)), n++;
    if (d === 0) return this.arMs || (n ? (unit / n) * (L + 1) : layers);
    if (this.passMs[E] > 0 && this.verifyMs[E] > 0) return (d + 1) * this.passMs[E] + this.verifyMs[E];
    return n ? (unit / n) * ((d + 1) * (E + 1) + (L - E + 1)) : layers;
  }

  plan(s: RoundState): RoundPlan {
    const L = this.nLayers;
    // The best speculative (E, d) by tokens per cost; it runs if it beats a plain step, or as the probe.
    let best = 0, E = 0, d = 0;
    for (let l = 1; l < L; l++) {
      const a = this.alpha[l];
      for (let k = 1; k <= s.maxDepth; k++) {
        const v = this.options.cost === 'layers' ? tokensPerCost(a, l, k, L, this.options.callCost) : (a >= 1 ? k + 1 : (1 - a ** (k + 1)) / (1 - a)) / this.roundCost(l, k);
        if (v > best) (best = v), (E = l), (d = k);
      }
    }
    const plain = this.options.cost === 'layers' ? tokensPerCost(0, 0, 0, L, this.options.callCost) : 1 / this.roundCost(0, 0);
    // Probes back off while they keep confirming that plain decoding wins (ours).
    if (this.probing) this.probeGap = best <= plain ? Math.min(2 * this.probeGap, this.options.probeMax) : this.options.probeEvery;
    this.probing = false;
    if (s.maxDepth === 0 || (best <= plain && ++this.plain < this.probeGap)) d = 0;
    else (this.probing = best <= plain), (this.plain = 0);
    this.chosen[d === 0 ? 0 : E]++;
    return d === 0 ? { depth: 0, totalTokens: 0 } : { depth: d, totalTokens: this.totalTokens, exitLayer: E, shadows: this.spec++ % this.options.shadowEvery === 0 };
  }

  continueDrafting(f: Frontier): boolean {
    return f.values[0] >= this.logMin;
  }

  observe(o: RoundOutcome): void {
    const E = o.notes?.exitLayer, k = 0.2;
    if (o.depth === 0) this.arMs = this.arMs ? this.arMs + k * (o.verifyMs - this.arMs) : o.verifyMs;
    else if (E !== undefined) {
      // A session built on first use is a one-off, not the exit's cost per pass.
      const pass = Math.max(0, o.draftMs - (o.notes?.setupMs ?? 0)) / (o.depth + 1);
      this.passMs[E] = this.passMs[E] ? this.passMs[E] + k * (pass - this.passMs[E]) : pass;
      this.verifyMs[E] = this.verifyMs[E] ? this.verifyMs[E] + k * (o.verifyMs - this.verifyMs[E]) : o.verifyMs;
    }
    const m = o.notes?.exitMatches, rows = o.notes?.shadowRows ?? 0;
    if (!m || rows === 0) return;
    // A moving average per verified row: `rows` rows move the estimate as far as `rows` single updates would.
    const r = 1 - (1 - this.options.rate) ** rows;
    for (let l = 1; l < this.nLayers; l++) this.alpha[l] += r * (m[l] / rows - this.alpha[l]);
  }
}
