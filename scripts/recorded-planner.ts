/**
 * SmartSpec's batch planner rebuilt from a cost model a load test recorded (scripts/load-test.ts's
 * JSON, `costModels`: a smartspec server's start-up measurements, calibration margin, and the pass
 * scales and learned overhead it ended with), with started members of given acceptance histories:
 * what scripts/replay-plans.ts replays and test/smartspec-joint.test.ts pins plans on.
 */
import { SmartSpecPlanner, StepCost, type SmartSpecPolicy } from '../src/policies/smartspec.ts';

/** A StepCost as recorded (StepCost.toJSON). */
export interface RecordedCurve {
  tokens: number[];
  msOneRequest: number[];
  msFullBatch: number[];
  slots: number;
  msPerPackedToken: number;
}

/** One server's recorded cost model. */
export interface RecordedCostModel {
  verify: RecordedCurve;
  draft: RecordedCurve;
  alone?: number[];
  calibration?: { margin: number };
  learnedOverhead: { msPerPass: number; msPerRequestPass: number; aloneMs?: number };
  /** SmartSpecPlanner.passScale: [verify, later draft levels, first draft level], or [verify, draft] recorded before the first level had its own. */
  passScale: number[];
}

/** The recorded tree depth (the embedded pair's chain of 3). */
export const DEPTH = 3;

/** Accepted drafts of rounds at depth 3, as static-3 realised them at c = 2 (mean 2.2 of 3). */
export const TYPICAL = [3, 3, 2, 3, 1, 3, 2, 0, 3, 2];

export const stepCost = (c: RecordedCurve): StepCost => new StepCost(c.tokens, c.msOneRequest, c.msFullBatch, c.slots, c.msPerPackedToken);

/**
 * A server's planner as it ended (pass scales, overhead, margin; draft calls of more than
 * DEPTH + 1 rows in a pass of their own, as the engine sets it; `jointMax` if given), its pool
 * having seen 60 typical rounds, and `histories.length` started members, each having observed its
 * rounds (accepted drafts at depth 3) and now at `positions[i]`, its head having read nothing yet
 * (catch-up rows = position). `plan()` runs one step: every member plans at its position.
 */
export function recordedPlanner(c: RecordedCostModel, histories: number[][], positions: number[], jointMax?: number): { planner: SmartSpecPlanner; members: SmartSpecPolicy[]; plan(): number[] } {
  let step = 0;
  const planner = new SmartSpecPlanner(stepCost(c.verify), stepCost(c.draft), DEPTH, DEPTH, () => step, c.alone, 0.9, () => 0);
  planner.setPassScale(c.passScale);
  planner.overhead.a = c.learnedOverhead.msPerPass;
  planner.overhead.b = c.learnedOverhead.msPerRequestPass;
  planner.margin = c.calibration?.margin ?? planner.margin;
  planner.splitRows = DEPTH + 1;
  if (jointMax !== undefined) planner.jointMax = jointMax;
  for (let r = 0; r < 60; r++) planner.pooled.observe(DEPTH, TYPICAL[r % TYPICAL.length]);
  const members = histories.map((h) => {
    const p = planner.policy();
    for (const accepted of h) p.observe({ depth: DEPTH, treeSize: DEPTH, accepted, draftMs: 0, verifyMs: 0 });
    p.started = true; // past its prefill: the first to plan plans every member
    return p;
  });
  // Where plan() puts them, so that goodput prices the step before it is planned (a drafted plan moves the head).
  members.forEach((p, i) => ((p as unknown as { position: number }).position = positions[i]));
  const plan = () => {
    step++;
    return members.map((p, i) => p.plan({ position: positions[i], lastFeature: new Float32Array(1), rootToken: 0, maxDepth: DEPTH }).depth);
  };
  return { planner, members, plan };
}
