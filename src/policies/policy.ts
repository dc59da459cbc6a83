/**
 * Draft-length policies: one small interface, so static depths, confidence thresholds,
 * AdaEDL, LDLP, SpecDec++ and cost-aware choices are swappable and comparable in one run.
 * The decoding loop never branches on which policy it holds.
 */
import type { Frontier } from '../../trees/index.ts';

/** What a policy may look at before a round. */
export interface RoundState {
  /** Committed context length (the root token sits at this position). */
  position: number;
  /** Target feature of the last committed token [d] (a view; copy to keep). */
  lastFeature: Float32Array;
  /** The root token: the last emitted token, not yet verified. */
  rootToken: number;
  /** Largest depth the context and the drafter allow this round. */
  maxDepth: number;
}

/** A policy's answer before a round: how deep and how wide to draft. */
export interface RoundPlan {
  /** Tree depth to draft: 0 = plain autoregressive step (no speculation). */
  depth: number;
  /** Drafted tokens to verify at most (the tree size). */
  totalTokens: number;
  /** Self-drafting: the exit layer E that drafts (layers 0..E-1); other drafters ignore it. */
  exitLayer?: number;
  /** Self-drafting: report every exit layer's agreement with the target this round (DEL's shadow tokens; costs one small pass). */
  shadows?: boolean;
}

/** What a drafter learned from a round (Drafter.settle), passed to the policy with the outcome. */
export interface RoundNotes {
  /** The exit layer that drafted this round (self-drafting). */
  exitLayer?: number;
  /**
   * DEL's shadow tokens: over the `shadowRows` verified rows whose target token is known (the
   * accepted path and the bonus row), exitMatches[l] = rows where exit layer l (1..L-1) would
   * have proposed the target's token. Index 0 and L are unused.
   */
  exitMatches?: Int32Array;
  shadowRows?: number;
  /** Ms of this round's draft time spent building sessions on first use (not a cost of drafting). */
  setupMs?: number;
}

/** What a round did, told to the policy after verification (`observe`). */
export interface RoundOutcome {
  /** Depth drafted (0 if the round did not speculate). */
  depth: number;
  /** Drafted tokens verified. */
  treeSize: number;
  /** Drafted tokens the target accepted (bonus not counted). */
  accepted: number;
  /** Wall ms of the draft and of the verification pass. */
  draftMs: number;
  verifyMs: number;
  /** The drafter's notes (self-drafting: exit layer, shadow-token agreement). */
  notes?: RoundNotes;
}

/** Chooses each round's draft depth and size; may stop drafting early and learn from outcomes. */
export interface LengthPolicy {
  readonly name: string;
  /** Before drafting: how deep, how wide. */
  plan(state: RoundState): RoundPlan;
  /**
   * After each drafted depth: draft one more level? Absent = always (up to plan.depth).
   * `hidden` [F_prev, d]: the draft head's output rows that proposed the frontier (row
   * frontier.parentSlots[i] proposed node i), for policies that read the draft's state (SpecDec++).
   */
  continueDrafting?(frontier: Frontier, hidden?: Float32Array): boolean;
  /**
   * After a draft pass scored the children of `frontier` (the root at depth 0), before they join
   * the tree: keep that level? `rowEntropies[i]` is the full-vocabulary entropy of the
   * distribution frontier node i proposes its children from. Absent = always. Stopping here
   * spends the pass but saves verifying its level (AdaEDL's check, made before each token).
   */
  keepLevel?(frontier: Frontier, rowEntropies: ArrayLike<number>): boolean;
  /** After verification. */
  observe?(outcome: RoundOutcome): void;
  /** After the prefill: the drafter's head has read the first `rows` history rows (Drafter.prefilled). */
  prefilled?(rows: number): void;
}

/** A fixed EAGLE-2 tree every round: `depth` levels, `totalTokens` verified. depth 0 = plain AR. */
export class StaticPolicy implements LengthPolicy {
  readonly name: string;
  constructor(readonly depth: number, readonly totalTokens: number) {
    this.name = depth === 0 ? 'ar' : `static-${depth}`;
  }

  plan(s: RoundState): RoundPlan {
    return { depth: Math.min(this.depth, s.maxDepth), totalTokens: this.totalTokens };
  }
}
