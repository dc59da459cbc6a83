/**
 * A serving request's drafter. While the request is alone in the batch it drafts and verifies
 * with the fused round (RoundDrafter: one ORT call per round, what `eaglet generate` runs on a
 * chain), so a lone request costs what a single generation costs; with company it drafts with
 * the EAGLE head through the batch lanes and is verified in the batched target pass. Both keep
 * the head's committed rows in the request's one cache slot (cache.length = history rows the
 * head has read; each catches up from there), so a request switches between them at any round.
 */
import type { Acceptance, TreeShape, VerifyTree } from '../../trees/index.ts';
import type { Drafter, Verified, VerifyFetch } from '../generate/drafter.ts';
import type { EagleDrafter } from '../generate/eagle-drafter.ts';
import type { History } from '../generate/history.ts';
import type { RoundDrafter } from '../generate/round-drafter.ts';
import type { LengthPolicy, RoundNotes, RoundPlan } from '../policies/policy.ts';
import type { DraftPass } from '../runtime/draft.ts';
import type { KVCache } from '../runtime/kv-cache.ts';
import type { TargetPass } from '../runtime/target.ts';

export class SlotDrafter implements Drafter {
  readonly shape: TreeShape;
  private current: Drafter;

  /** @param alone whether the request is the only one in the batch (asked at each round's draft). */
  constructor(readonly batched: EagleDrafter<DraftPass>, readonly round: RoundDrafter, private alone: () => boolean) {
    if (round.cache !== batched.cache) throw new RangeError('the fused round and the batched head must share the head cache slot');
    this.shape = batched.shape;
    this.current = batched;
    if ((batched as Drafter).settle || (round as Drafter).settle) this.settle = (acc, tree) => this.current.settle?.(acc, tree) ?? Promise.resolve(undefined);
  }

  get passes(): number {
    return this.batched.passes + this.round.passes;
  }

  reset(): void {
    this.batched.reset(); // the one shared cache
  }

  draft(history: History, root: number, plan: RoundPlan, policy: LengthPolicy, cache: KVCache): Promise<VerifyTree> {
    this.current = this.alone() ? this.round : this.batched;
    return this.current.draft(history, root, plan, policy, cache);
  }

  /** A root-only tree (a round planned at 0): both drafters run the target pass a plain request runs (verifyWithTarget). */
  verify(target: TargetPass, cache: KVCache, tree: VerifyTree, positions: Int32Array, fetch?: VerifyFetch): Promise<Verified> {
    return this.current.verify(target, cache, tree, positions, fetch);
  }

  /** The batched head reads the prompt where the engine says so (EagleDrafter.readsPrompt); else the first round does. */
  prefilled(history: History): Promise<number> {
    return this.batched.prefilled(history);
  }

  /**
   * The current drafter's settle; absent when neither drafter has one (the EAGLE head and the
   * fused round learn nothing after a round): the loop then skips it, as it does for plain
   * decoding, instead of awaiting a resolved promise every round.
   */
  readonly settle?: (acc: Acceptance, tree: VerifyTree) => Promise<RoundNotes | undefined>;
}
