/**
 * Policies by name, so the CLI and the benchmark can build any of them from a string:
 *
 *   NAME                       defaults, e.g. `adaedl`
 *   NAME-N                     the policy's numeric shorthand, e.g. `static-3` (depth 3)
 *   NAME:flag=value[:...]      options inline, e.g. `threshold:min-confidence=0.2`
 *
 * Each policy documents its options in a FlagSpec table. On the command line they appear
 * prefixed by the policy name (`--threshold-min-confidence 0.2`) and apply to every instance
 * of that policy; inline options override them. Trained predictors (LDLP, SpecDec++) plug in
 * with `registerPolicy`.
 */
import { TREE_LIMITS, type TreeShape } from '../../trees/index.ts';
import { UsageError } from '../errors.ts';
import { camel, parseFlags, resolveOptions, type FlagSpec, type Parsed } from '../option-schema.ts';
import { AdaEdlPolicy, ADAEDL_FLAGS } from './adaedl.ts';
import { GoodputPolicy, GOODPUT_FLAGS } from './goodput.ts';
import { HeuristicPolicy, HEURISTIC_FLAGS } from './heuristic.ts';
import { LDLP_FLAGS, LdlpPolicy, predictorFromOptions, type PredictorTarget } from './ldlp.ts';
import { StaticPolicy, type LengthPolicy } from './policy.ts';
import { SPECDEC_FLAGS, SpecDecPolicy } from './specdecpp.ts';
import { ThresholdPolicy, THRESHOLD_FLAGS } from './threshold.ts';
import { DelPolicy, DEL_FLAGS, ExitPolicy, EXIT_FLAGS } from './del.ts';

function needLayers(nLayers: number | undefined): number {
  if (nLayers === undefined) throw new Error('self-drafting policies need the target\'s layer count (PolicyContext.nLayers)');
  return nLayers;
}

/** What a policy is built for: the drafter's tree shape. */
export interface PolicyContext {
  tree: TreeShape;
  /** The target's layer count (self-drafting policies choose exit layers below it). */
  nLayers?: number;
  /** The loaded target: trained predictors (ldlp, specdec++) read its embeddings and check their width against it. */
  target?: PredictorTarget;
}

export interface PolicyEntry {
  summary: string;
  /** Options table; flags without the policy-name prefix. */
  flags: FlagSpec[];
  /** Option set by the `NAME-N` shorthand, if any. */
  shorthand?: string;
  /** 'self': the policy drives the target's own early layers (SelfDrafter), not an EAGLE head. */
  drafter?: 'self';
  /** Builds an instance; `options` are resolved against `flags` (defaults filled, validated). */
  create(options: Record<string, unknown>, ctx: PolicyContext): LengthPolicy;
}

const STATIC_FLAGS: FlagSpec[] = [
  { flag: 'depth', type: 'int', min: 0, max: TREE_LIMITS.maxDepth, meta: 'D', help: 'tree depth every round, 0 = plain decoding (default: the tree depth)' },
];

const REGISTRY = new Map<string, PolicyEntry>([
  ['static', {
    summary: 'the same tree every round (`static-D` for depth D)',
    flags: STATIC_FLAGS,
    shorthand: 'depth',
    create: (o, { tree }) => new StaticPolicy((o.depth as number | undefined) ?? tree.maxDepth, tree.totalTokens),
  }],
  ['eagle2', {
    summary: 'EAGLE-2: the fixed-size dynamic tree of the configured shape (--depth, --total-tokens)',
    flags: [],
    create: (_, { tree }) => Object.assign(new StaticPolicy(tree.maxDepth, tree.totalTokens), { name: 'eagle2' }),
  }],
  ['threshold', {
    summary: "full depth, stopping when the best path's draft probability is too low",
    flags: THRESHOLD_FLAGS,
    create: (o, { tree }) => new ThresholdPolicy(tree.totalTokens, o),
  }],
  ['adaedl', {
    summary: 'AdaEDL: stop when the entropy bound on acceptance falls below an adaptive threshold',
    flags: ADAEDL_FLAGS,
    create: (o, { tree }) => new AdaEdlPolicy(tree.totalTokens, o),
  }],
  ['heuristic', {
    summary: "HF transformers' schedule: +2 after a fully accepted round, -1 otherwise",
    flags: HEURISTIC_FLAGS,
    create: (o, { tree }) => new HeuristicPolicy(tree.totalTokens, o),
  }],
  ['goodput', {
    summary: 'cost-aware: the depth (0 = plain decoding) with the most expected tokens per ms',
    flags: GOODPUT_FLAGS,
    create: (o, { tree }) => new GoodputPolicy(tree.totalTokens, tree.maxDepth, o),
  }],
  ['del', {
    summary: 'DEL self-drafting: exit layer and length per round from shadow-token acceptance (tokens per layer)',
    flags: DEL_FLAGS,
    drafter: 'self',
    create: (o, { tree, nLayers }) => new DelPolicy(needLayers(nLayers), tree.totalTokens, o),
  }],
  ['exit', {
    summary: 'static self-drafting from the target\'s first E layers (`exit-E`), full depth',
    flags: EXIT_FLAGS,
    shorthand: 'at',
    drafter: 'self',
    create: (o, { tree, nLayers }) => {
      const L = needLayers(nLayers);
      if (o.at === undefined) throw new UsageError('policy exit', 'needs a layer: exit-E or exit:at=E');
      if ((o.at as number) > L - 1) throw new UsageError('policy exit', `layer ${o.at as number} outside 1..${L - 1} (the target has ${L} layers)`);
      return new ExitPolicy(L, tree.totalTokens, o);
    },
  }],
  ['ldlp', {
    summary: "AdaEAGLE's LDLP: a trained MLP predicts each round's accepted length, which sets depth and tree size",
    flags: LDLP_FLAGS,
    create: (o, { tree, target }) => new LdlpPolicy(predictorFromOptions('ldlp', 'ldlp', o.path, target, tree), target!, tree, o),
  }],
  ['ldlp+threshold', {
    summary: 'LDLP depth as a cap, with the confidence threshold stopping earlier inside it',
    flags: [...LDLP_FLAGS, ...THRESHOLD_FLAGS],
    create: ({ minConfidence, ...o }, { tree, target }) =>
      new LdlpPolicy(predictorFromOptions('ldlp', 'ldlp+threshold', o.path, target, tree), target!, tree, o, new ThresholdPolicy(tree.totalTokens, { minConfidence: minConfidence as number })),
  }],
  ['specdec++', {
    summary: 'SpecDec++: a trained acceptance head stops drafting once P(a rejection on the best path) exceeds h',
    flags: SPECDEC_FLAGS,
    create: (o, { tree, target }) => new SpecDecPolicy(predictorFromOptions('specdec++', 'specdec++', o.path, target, tree), target!, tree, o),
  }],
]);

/** Adds (or replaces) a policy under `name`. */
export function registerPolicy(name: string, entry: PolicyEntry): void {
  if (!/^[a-z][a-z0-9+]*$/.test(name)) throw new UsageError('policy', `name '${name}' must be lowercase letters, digits and '+'`);
  REGISTRY.set(name, entry);
}

/** Registered policy names, in registration order. */
export function policyNames(): string[] {
  return [...REGISTRY.keys()];
}

export function policyEntry(name: string): PolicyEntry {
  const e = REGISTRY.get(name);
  if (!e) throw new UsageError('policy', `unknown policy '${name}' (have ${policyNames().join(', ')})`);
  return e;
}

/** Every policy's options as CLI flags (`--NAME-FLAG`), without defaults so that only given flags show. */
export function policyFlags(): FlagSpec[] {
  return [...REGISTRY].flatMap(([name, e]) => e.flags.map((s) => ({ ...s, flag: `${name}-${s.flag}`, default: undefined, help: `${name}: ${s.help}${s.default !== undefined ? ` (default ${s.default})` : ''}` })));
}

/**
 * Builds the policy a spec string names (see the module comment). `cli` is the parsed command
 * line holding `policyFlags()`; its values apply unless the spec overrides them.
 */
export function createPolicy(spec: string, ctx: PolicyContext, cli: Record<string, unknown> = {}): LengthPolicy {
  const [head, ...inline] = spec.split(':');
  const short = /^([a-z][a-z0-9]*)-(\d+)$/.exec(head);
  const name = short && REGISTRY.get(short[1])?.shorthand ? short[1] : head;
  const entry = policyEntry(name);
  const given: Record<string, unknown> = {};
  for (const s of entry.flags) {
    const v = cli[camel(`${name}-${s.flag}`)];
    if (v !== undefined) given[camel(s.flag)] = v;
  }
  if (short && name === short[1]) given[camel(entry.shorthand!)] = Number(short[2]);
  const bare = entry.flags.map((s) => ({ ...s, default: undefined }));
  let parsed: Parsed;
  try {
    parsed = parseFlags(inline.map((kv) => `--${kv}`), bare);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    // Inside a spec a value is written key=VALUE (the command line's --key=VALUE hint would mislead).
    const key = e.flag.replace(/^--/, '');
    throw new UsageError(`policy '${spec}'`, /^needs a value/.test(e.problem) ? `${key}: needs a value (write ${key}=VALUE)` : e.message);
  }
  for (const [k, v] of Object.entries(parsed)) if (k !== '_' && v !== undefined) given[k] = v;
  let options: Record<string, unknown>;
  try {
    options = resolveOptions<Record<string, unknown>>(entry.flags, given);
  } catch (e) {
    throw e instanceof UsageError ? new UsageError(`policy '${spec}'`, e.message) : e;
  }
  return entry.create(options, ctx);
}
