/** What a generation did and where its time went; returned with every result. */
export type StopReason = 'eos' | 'max-new-tokens' | 'context' | 'aborted';

/** Counters and the time split of one generation (tau, passes, accepted-length histogram). */
export class GenerationStats {
  promptTokens = 0;
  /** Tokens emitted (the first one comes from the prefill pass). */
  newTokens = 0;
  /** Decoding rounds: one target verification pass each. */
  rounds = 0;
  /** Tokens emitted by rounds (accepted drafts + bonus); tau = roundTokens / rounds. */
  roundTokens = 0;
  targetPasses = 0;
  draftPasses = 0;
  /** acceptedHistogram[a] = rounds that accepted a drafted tokens (bonus not counted). */
  acceptedHistogram: number[] = [];
  /** Sum of the depth drafted each round (0 for rounds that did not speculate). */
  depthSum = 0;
  /** Self-drafting: exitLayerHistogram[E] = rounds drafted by exit layer E. */
  exitLayerHistogram: number[] = [];
  /** Wall time split, ms. bookkeeping = total - prefill - draft - verify - policy. */
  ms = { total: 0, prefill: 0, draft: 0, verify: 0, policy: 0 };
  stopReason: StopReason = 'max-new-tokens';

  /** Tokens appended per target verification pass, bonus included (plain AR = 1). */
  get tau(): number {
    return this.rounds ? this.roundTokens / this.rounds : 0;
  }

  get tokensPerSecond(): number {
    return this.ms.total > 0 ? (this.newTokens * 1000) / this.ms.total : 0;
  }

  recordRound(accepted: number, emitted: number, depth: number): void {
    this.rounds++;
    this.roundTokens += emitted;
    this.depthSum += depth;
    while (this.acceptedHistogram.length <= accepted) this.acceptedHistogram.push(0);
    this.acceptedHistogram[accepted]++;
  }

  recordExit(exitLayer: number): void {
    while (this.exitLayerHistogram.length <= exitLayer) this.exitLayerHistogram.push(0);
    this.exitLayerHistogram[exitLayer]++;
  }

  /** Adds another generation's counters and times to these (for totals over many runs). */
  add(o: GenerationStats): this {
    this.promptTokens += o.promptTokens;
    this.newTokens += o.newTokens;
    this.rounds += o.rounds;
    this.roundTokens += o.roundTokens;
    this.targetPasses += o.targetPasses;
    this.draftPasses += o.draftPasses;
    this.depthSum += o.depthSum;
    o.acceptedHistogram.forEach((c, i) => (this.acceptedHistogram[i] = (this.acceptedHistogram[i] ?? 0) + c));
    o.exitLayerHistogram.forEach((c, i) => (this.exitLayerHistogram[i] = (this.exitLayerHistogram[i] ?? 0) + c));
    for (const k of Object.keys(this.ms) as (keyof GenerationStats['ms'])[]) this.ms[k] += o.ms[k];
    return this;
  }

  toJSON() {
    const { total, prefill, draft, verify, policy } = this.ms;
    const r = (x: number) => Math.round(x * 1000) / 1000;
    return {
      promptTokens: this.promptTokens,
      newTokens: this.newTokens,
      wallMs: r(total),
      tokensPerSecond: r(this.tokensPerSecond),
      targetPasses: this.targetPasses,
      draftPasses: this.draftPasses,
      rounds: this.rounds,
      tau: r(this.tau),
      meanDepth: this.rounds ? r(this.depthSum / this.rounds) : 0,
      acceptedHistogram: this.acceptedHistogram,
      ...(this.exitLayerHistogram.length ? { exitLayerHistogram: Array.from(this.exitLayerHistogram, (c) => c ?? 0) } : {}),
      timeMs: { prefill: r(prefill), draft: r(draft), verify: r(verify), policy: r(policy), bookkeeping: r(total - prefill - draft - verify - policy) },
      stopReason: this.stopReason,
    };
  }
}
