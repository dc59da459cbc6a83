/**
 * The library entry: load a target (and optionally a draft head), then stream or generate.
 *
 * ```ts
 * import { loadGenerator } from 'eaglet';
 * const g = await loadGenerator({ model: 'path/to/hf-dir', draft: 'random' });
 * for await (const chunk of g.stream('Once upon a time', { maxNewTokens: 32 })) process.stdout.write(chunk.text);
 * const { text, stats } = await g.generate('Once upon a time', { maxNewTokens: 32 });
 * await g.dispose();
 * ```
 */
import { StateError, UsageError } from './errors.ts';
import { blockMatMulUnsupported } from './runtime/native-build.ts';
import { parameterCount } from './model/config.ts';
import { DRAFT_QUANT, quantizedModel, quantOf, linearNames, type QuantName } from './model/quantize.ts';
import type { Tensor } from './model/weights.ts';
import { loadDraftHead, type DraftHead } from './io/draft-head-io.ts';
import { loadModel, type LoadedModel } from './load-model.ts';
import { headConfigFor, randomHeadWeights } from './model/draft-head.ts';
import { StaticPolicy, type LengthPolicy } from './policies/policy.ts';
import { LdlpPolicy } from './policies/ldlp.ts';
import { loadPredictor } from './io/predictor-io.ts';
import { join } from 'node:path';
import { DEFAULT_MODEL_TREE, DEFAULT_PATHS, defaultParts } from './default-model.ts';
import { createPolicy } from './policies/registry.ts';
import { defaultThreadsFor } from './runtime/ort.ts';
import { readTuning, tunedWeights, tuningMismatch, TUNING_FILE, type TunedWeights, type TuningFile } from './tune/tuning.ts';
import { ThresholdPolicy } from './policies/threshold.ts';
import { DraftSession } from './runtime/draft.ts';
import { TargetSession } from './runtime/target.ts';
import { RoundSession } from './runtime/round.ts';
import { RoundDrafter } from './generate/round-drafter.ts';
import type { TreeShape } from '../trees/index.ts';
import { checkTree } from './option-schema.ts';
import { EagleDrafter } from './generate/eagle-drafter.ts';
import type { Drafter } from './generate/drafter.ts';
import { checkExitLayer, SelfDrafter } from './generate/self-drafter.ts';
import { DelPolicy, ExitPolicy } from './policies/del.ts';
import { Generator, type GenerationChunk, type StreamOptions } from './generate/generator.ts';
import type { GenerationStats } from './generate/stats.ts';
import { loadTokenizer } from './tokenizer/load.ts';
import { TextStreamer } from './tokenizer/streamer.ts';
import type { Tokenizer } from './tokenizer/tokenizer.ts';

/**
 * CPU default tree, chosen by `eaglet tune` on the 100M-parameter cost-scaled default pair (docs/performance.md,
 * "Sized by measurement"): one thread, a draft depth costs 0.12 of a plain step and verifying
 * 5 tokens 1.31 steps, so a 4-deep chain (predicted 1.65x) beats the old 4x5x16 tree (1.27x).
 * Run `eaglet tune` for your model and machine: the tuning file overrides this.
 */
export const DEFAULT_TREE: TreeShape = { topK: 1, maxDepth: 4, totalTokens: 4 };

/** What `loadGenerator` loads; every field is optional (no model: the embedded default pair). */
export interface LoadOptions {
  /**
   * HF checkpoint directory or llama2.c `.bin`, or an already loaded model. Omitted: the
   * embedded default (data/default), with its draft head and LDLP unless `draft` / `ldlp` say otherwise.
   */
  model?: string | LoadedModel;
  /** Tokenizer file (tokenizer.json / tokenizer.bin); default: the one found with the model. */
  tokenizer?: string;
  /**
   * EAGLE head directory, 'random' (an untrained head, for correctness checks and cost benchmarks; 'random:N' gives it a reduced draft vocabulary of the first N token ids), a loaded head, or
   * 'self': self-speculative drafting from the target's own early layers (DEL: exit layer and
   * length chosen per round, unless `exitLayer` fixes the exit). Omit for plain decoding (or,
   * with the embedded default, for its head); null = plain decoding always.
   */
  draft?: string | DraftHead | null;
  /** Self-drafting from the target's first E layers, every round (static exit, 1..L-1). Implies draft 'self'. */
  exitLayer?: number;
  /** Tree shape; default DEFAULT_TREE. */
  tree?: Partial<TreeShape>;
  /** Trained LDLP directory: sets each round's depth (the `ldlp` policy). Ignored when `policy` is given. */
  ldlp?: string;
  /**
   * Draft-length policy, or a factory given the loaded model and tree shape; default: LDLP when
   * `ldlp` is set, else static trees of tree.maxDepth. The embedded pair (no `model`) defaults to
   * ldlp+threshold with its own LDLP, except on one fused round graph, where it verifies the
   * graph's whole chain (static).
   */
  policy?: LengthPolicy | ((ctx: { model: LoadedModel; tree: TreeShape }) => LengthPolicy);
  /** ORT intra-op threads. Default `defaultThreadsFor` the target: 1 below 4M parameters, else every core (at most 8). */
  threads?: number;
  /** Seed of the random head. Default 0. */
  draftSeed?: number;
  /**
   * Run the draft head with 8- or 4-bit blockwise weights (ORT MatMulNBits): fewer bytes per
   * draft pass, slightly different proposals, the same output; 'none' keeps it fp32. Default:
   * q8 with a quantized target (`quantize`, or a quantized checkpoint), else fp32.
   */
  draftQuant?: keyof typeof DRAFT_QUANT | 'none';
  /**
   * Quantize the target's Linear weights (ORT MatMulNBits) and its token embedding table (ORT
   * GatherBlockQuantized) to 8 or 4 bits per weight (blockwise) at load; the draft head's
   * Linear weights then take 8 bits unless `draftQuant` says otherwise (see headQuant). The
   * fp32 values of the quantized weights are dropped. Speculation is lossless with respect to the quantized target.
   * A checkpoint written by `eaglet quantize` is quantized already. Default: fp32.
   */
  quantize?: QuantName;
  /**
   * Keep the target's Linear weights in `model.weights` after the sessions are built (e.g. to
   * build more sessions from them, as `eaglet bench` does for self-drafting policies). Default
   * false: they are released, ORT holds its own copy. Self-drafting always keeps them.
   */
  keepWeights?: boolean;
  /**
   * With an EAGLE head and a chain (tree top-k 1): draft the chain and verify it in ONE ORT call
   * per round (RoundDrafter) instead of one call per depth plus one to verify. Its session holds
   * a second copy of the target's weights. Per-level stopping does not apply (the plan's depth
   * does). 'auto': with a chain tree, as an applied tuning file says (`eaglet tune` prices chains
   * fused or pass by pass and records which), else on for the embedded default pair (measured
   * faster there: docs/performance.md, "One ORT call per round"; what `eaglet generate` and
   * `bench` use) and off otherwise.
   * Default: false (`eaglet serve` batches separate draft passes).
   */
  fusedRound?: boolean | 'auto';
  /**
   * Run every 4- or 8-bit Linear layer with blocks of 128 (a q4 target's; a q8 or q4 head's)
   * with eaglet's own kernel (eaglet.BlockMatMul, src/native/block-matmul.h) in place of ORT's
   * MatMulNBits: it reads each packed block once for all of a pass's rows and computes each row
   * alike in any pass, so plain steps need no padded row. Sessions open on eaglet's native addon,
   * built with g++ on first use (an x86-64 CPU with AVX-512 VNNI). Plain decoding and
   * verification both run it, so speculation stays lossless with respect to this kernel's
   * target, whose last bits differ from MatMulNBits'. Not for serving (its batch graphs render
   * MatMulNBits). Default false.
   */
  nativeMatMul?: boolean;
  /**
   * With the fused round: the depths of its round graphs (each at most the tree's depth; the
   * tree's depth is always one). A round runs the shallowest graph that reaches its plan's depth,
   * so a policy that plans shallow rounds pays for the head steps it uses (RoundDrafter). Each
   * graph is a session holding its own copy of the target's weights. Default: the tree's depth only.
   */
  roundDepths?: number[];
  /**
   * Apply the `tuning.json` beside the draft head (written by `eaglet tune`): its tree shape
   * under `tree`, its policy unless `policy` / `ldlp` is given. Only a file measured on this
   * machine with the same thread count and weight formats (`weightFormats`: fp32 / q8 / q4 and a
   * quantization's block size, and the Linear kernel: nativeMatMul) applies; any other is reported in `notes`. Default true.
   */
  tuning?: boolean;
}

/** One round's tokens from `LoadedGenerator.stream`, with the text they completed. */
export interface TextChunk extends GenerationChunk {
  /** Newly stable text ('' without a tokenizer or mid-character). */
  text: string;
}

/** A loaded target (and drafter) ready to generate; `dispose` releases its ORT sessions. */
export interface LoadedGenerator {
  /** The target as loaded; its Linear weights are released once sessions exist unless `keepWeights` (or self-drafting). */
  readonly model: LoadedModel;
  readonly tokenizer?: Tokenizer;
  readonly generator: Generator;
  /** A fresh instance of the generator's policy (the same instance when one was passed in as an object). */
  newPolicy(): LengthPolicy;
  /** What loading decided that a user should know (a tuning file applied, or why one was not). */
  readonly notes: string[];
  /** The ORT intra-op threads the sessions run on (given, or `defaultThreadsFor` the target). */
  readonly threads: number;
  /** Whether blockwise Linear layers run eaglet's own kernel (LoadOptions.nativeMatMul). */
  readonly nativeMatMul: boolean;
  /** The weight formats the target and head run with, as a tuning file records them (`eaglet tune`). */
  readonly weightFormats: TunedWeights;
  /**
   * The tree shape loading settled on (options over a tuning file over the embedded default's over
   * DEFAULT_TREE). The drafter's own shape can be smaller: a fused round drafts a chain of
   * min(maxDepth, totalTokens) levels.
   */
  readonly tree: TreeShape;
  /** The tuning file applied (its path), if one was: where `tree` fields no option gave came from. */
  readonly tuningFile?: string;
  /** Token ids for `prompt` (text needs a tokenizer; BOS added when the tokenizer has one). */
  encode(prompt: string | number[]): number[];
  stream(prompt: string | number[], opts?: StreamOptions): AsyncGenerator<TextChunk, GenerationStats>;
  generate(prompt: string | number[], opts?: StreamOptions): Promise<{ ids: number[]; fromDraft: boolean[]; text?: string; stats: GenerationStats }>;
  dispose(): Promise<void>;
}

/** `o` with the embedded default's target, head and LDLP filled in where present and not overridden. */
function withDefaults(o: LoadOptions): LoadOptions {
  const has = defaultParts();
  if (!has.target) throw new UsageError('model', `no model given and the embedded default is missing (${DEFAULT_PATHS.target}): pass a model path`);
  // An exit layer drafts with the target's own layers: no head to fill in.
  const draft = o.draft === undefined && o.exitLayer === undefined ? (has.draft ? DEFAULT_PATHS.draft : undefined) : o.draft;
  const ownHead = draft === DEFAULT_PATHS.draft;
  // With its own head and LDLP the default drafts with ldlp+threshold, the fastest LDLP variant in
  // its benchmark (docs/performance.md): LDLP caps the depth, the confidence threshold stops earlier
  // inside it. (On one fused round graph loadGenerator drops it: see `fullChain`.)
  const policy = o.policy ?? (ownHead && o.ldlp === undefined && has.ldlp
    ? ({ model, tree: t }: { model: LoadedModel; tree: TreeShape }) =>
        new LdlpPolicy(loadPredictor(DEFAULT_PATHS.ldlp, 'ldlp', model.config, t.maxDepth), model, t, {}, new ThresholdPolicy(t.totalTokens))
    : undefined);
  return { ...o, model: DEFAULT_PATHS.target, draft, policy };
}

/** The tuning file beside `draftDir` if it applies here with `threads` and `weights`; otherwise a note says why not. */
function applicableTuning(draftDir: string, threads: number, weights: TunedWeights, notes: string[]): TuningFile | undefined {
  const t = readTuning(draftDir);
  if (!t) return undefined;
  const file = join(draftDir, TUNING_FILE);
  const why = tuningMismatch(t, threads, undefined, weights);
  if (why) {
    notes.push(`${file} not applied: ${why}; run \`eaglet tune\` here`);
    return undefined;
  }
  const { topK, maxDepth, totalTokens } = t.tree;
  notes.push(`using ${file}: top-k ${topK}, depth ${maxDepth}, ${totalTokens} tokens, policy ${t.policy}`);
  return t;
}

/**
 * The head's weight format: `draftQuant` ('none': fp32, undefined); else q8 when the target is
 * quantized (at load or a quantized checkpoint); else fp32 (undefined). q8, not the target's q4: on the cost-scaled 100M
 * fixture at q4 a q8 head accepts as many tokens as the fp32 head (tau 2.95 / 3.67 at chain depth
 * 3 / 5, against 2.77 / 3.32 with a q4 head) and costs about what a q4 head does inside the fused
 * round, while an fp32 head costs far more (docs/performance.md, "Quantized targets").
 */
function headQuant(o: LoadOptions, model: LoadedModel): QuantName | undefined {
  if (o.draftQuant === 'none') return undefined;
  return o.draftQuant ?? (quantOf(model.config, model.weights) ? 'q8' : undefined);
}

/** Text -> prompt ids with `tokenizer` (BOS added when it has one); a UsageError without a tokenizer. */
export function textEncoder(tokenizer: Tokenizer | undefined): (text: string) => number[] {
  return (text) => {
    if (!tokenizer) throw new UsageError('prompt', 'text needs a tokenizer: pass a tokenizer, or give token ids');
    return tokenizer.encode(text, { addBos: tokenizer.bosId !== undefined });
  };
}

/** The head of `--draft random` / `random:N` (N = draft vocabulary size). */
function randomHead(model: LoadedModel, spec: string, seed: number): DraftHead {
  const n = spec === 'random' ? undefined : Number(spec.slice('random:'.length));
  if (n !== undefined && !(Number.isInteger(n) && n >= 1 && n < model.config.vocabSize))
    throw new UsageError('--draft', `${spec}: N in random:N must be an integer in [1, ${model.config.vocabSize}) (the draft vocabulary size)`);
  // A reduced head copies rows of the target's LM head (dequantized, if it is held quantized).
  const weights = randomHeadWeights(model.config, seed, n === undefined ? undefined : { size: n, targetWeights: model.weights });
  return { config: headConfigFor(model.config, n), weights };
}

/** `m`'s weights without the target's Linear weights (the tensors ORT sessions own once built). */
function withoutLinears(m: LoadedModel): Map<string, Tensor> {
  const linear = new Set(linearNames(m.config));
  return new Map([...m.weights].filter(([n]) => !linear.has(n)));
}

/**
 * Loads the target, the drafter and the policy `options` name (see LoadOptions) and returns a
 * generator over them; the module comment has an example. Bad options or files throw an
 * EagletError naming the option or the file.
 */
export async function loadGenerator(options: LoadOptions = {}): Promise<LoadedGenerator> {
  const o = options.model === undefined ? withDefaults(options) : options;
  const unsupported = o.nativeMatMul ? blockMatMulUnsupported() : null;
  if (unsupported) throw new UsageError('nativeMatMul', unsupported);
  let model = quantizedModel(typeof o.model === 'string' ? await loadModel(o.model) : o.model!, o.quantize);
  const tokenizer = o.tokenizer ? loadTokenizer(o.tokenizer, { vocabSize: model.config.vocabSize }) : model.tokenizer;
  const threads = o.threads ?? defaultThreadsFor(parameterCount(model.config));
  const sessionOpts = { threads, nativeLinear: o.nativeMatMul === true };
  const target = await TargetSession.create(model.config, model.weights, sessionOpts);
  const notes: string[] = [];
  const weightFormats = tunedWeights(model.config, model.weights, headQuant(o, model), sessionOpts.nativeLinear);
  const tuning = o.tuning !== false && typeof o.draft === 'string' && o.draft !== 'random' && o.draft !== 'self' ? applicableTuning(o.draft, threads, weightFormats, notes) : undefined;
  // The embedded target with its own head: its tree by default, and (fusedRound 'auto') the fused round.
  const embeddedPair = options.model === undefined && o.draft === DEFAULT_PATHS.draft;
  const tree = { ...DEFAULT_TREE, ...(embeddedPair ? DEFAULT_MODEL_TREE : {}), ...tuning?.tree, ...options.tree };
  checkTree(tree);
  let drafter: Drafter | undefined, draftSession: DraftSession | undefined, selfDrafter: SelfDrafter | undefined;
  const roundSessions: RoundSession[] = [];
  let selfPolicy: LengthPolicy | undefined;
  if (o.draft === 'self' || o.exitLayer !== undefined) {
    if (o.draft !== undefined && o.draft !== 'self') throw new UsageError('--exit-layer', 'drafts with the target\'s own layers: do not combine it with an EAGLE head (--draft PATH)');
    if (o.ldlp !== undefined) throw new UsageError('--ldlp', 'predicts depths for an EAGLE head; self-drafting (--draft self, --exit-layer) chooses its own');
    const L = model.config.nLayers;
    if (o.exitLayer !== undefined) checkExitLayer(model.config, o.exitLayer);
    else if (L < 2) throw new UsageError('--draft', `self needs a target with at least 2 layers, this one has ${L}`);
    drafter = selfDrafter = new SelfDrafter(target, model.weights, tree, { exitLayer: o.exitLayer, session: sessionOpts });
    selfPolicy = o.exitLayer !== undefined ? new ExitPolicy(L, tree.totalTokens, { at: o.exitLayer }) : new DelPolicy(L, tree.totalTokens);
  } else if (o.draft !== undefined && o.draft !== null) {
    const head: DraftHead =
      typeof o.draft === 'string' && /^random(:|$)/.test(o.draft)
        ? randomHead(model, o.draft, o.draftSeed ?? 0)
        : typeof o.draft === 'string'
          ? loadDraftHead(o.draft, model.config)
          : o.draft;
    const hq = headQuant(o, model), quantize = hq ? DRAFT_QUANT[hq] : undefined;
    // 'auto': a chain in one call per round as the tuning file priced it, else on for the embedded pair.
    const fusedRound = o.fusedRound === 'auto' ? tree.topK === 1 && (tuning?.fusedRound ?? embeddedPair) : o.fusedRound === true;
    if (fusedRound) {
      if (tree.topK !== 1) throw new UsageError('--fused-round', `drafts a chain: it needs tree top-k 1, got ${tree.topK}`);
      const deepest = Math.min(tree.maxDepth, tree.totalTokens);
      for (const depth of o.roundDepths ?? []) if (!(Number.isInteger(depth) && depth >= 1 && depth <= deepest)) throw new UsageError('roundDepths', `round graph depth ${depth} is not an integer in [1, ${deepest}] (the tree's depth)`);
      for (const depth of new Set([...(o.roundDepths ?? []), deepest])) roundSessions.push(await RoundSession.create(model.config, model.weights, head.config, head.weights, depth, { ...sessionOpts, quantize }));
      drafter = new RoundDrafter(roundSessions, model.config.maxSeqLen);
    } else {
      draftSession = await DraftSession.create(head.config, head.weights, model.config, model.weights, { ...sessionOpts, topK: tree.topK, quantize });
      drafter = new EagleDrafter(draftSession, tree, model.config.maxSeqLen);
      // Trees wider than a chain: a quantized target verifies them in a graph of their own (TargetSession.prepareTrees), opened now rather than in a timed round.
      if (tree.topK > 1) await target.prepareTrees();
    }
  }
  // ORT holds its own copy of every weight once the sessions exist; without this a 100M fp32
  // target kept 400 MB twice. What policies read (the embedding table, norms) stays; a
  // self-drafter builds sessions later and keeps everything.
  if (!selfDrafter && !o.keepWeights) model = { ...model, weights: withoutLinears(model) };
  // One round graph drafts its whole depth whatever the plan, so a plan of fewer levels saves only
  // verify rows and drops drafts the target would accept: measured on the embedded pair, 1.80x
  // for static-3 against 1.62-1.64x for its ldlp+threshold, tau 3.22 against 3.07
  // (docs/performance.md, "Round fixed costs (session 16)"). So on one graph the embedded
  // default verifies the whole chain; with several graphs (roundDepths) LDLP picks the graph.
  const fullChain = embeddedPair && roundSessions.length === 1 && options.policy === undefined && options.ldlp === undefined;
  // Given options first, then the tuning file's policy, then the embedded default's.
  // A function, so `newPolicy` can make a fresh one (benchmarks time each run from a fresh state).
  const makePolicy = (): LengthPolicy | undefined => {
    const tunedPolicy = tuning && options.policy === undefined && options.ldlp === undefined && drafter ? createPolicy(tuning.policy, { tree, target: model }) : undefined;
    const policy = tunedPolicy ?? (fullChain ? undefined : typeof o.policy === 'function' ? o.policy({ model, tree }) : o.policy ?? (drafter && o.ldlp ? new LdlpPolicy(loadPredictor(o.ldlp, 'ldlp', model.config, tree.maxDepth), model, tree) : undefined));
    return policy ?? selfPolicy ?? (drafter ? new StaticPolicy(tree.maxDepth, tree.totalTokens) : undefined);
  };
  const generator = new Generator({ target, drafter, policy: makePolicy() });
  // One throwaway round at load: ORT's first runs of a session are slow (allocations, kernel
  // set-up), and a user's first generation should not pay for them.
  await generator.generate([0], { maxNewTokens: 2, stopAtEos: false });

  const encodeText = textEncoder(tokenizer);
  const encode = (prompt: string | number[]): number[] => (typeof prompt === 'string' ? encodeText(prompt) : prompt);

  let disposed = false;
  const live = () => {
    if (disposed) throw new StateError('this generator was disposed: load a new one with loadGenerator()');
  };

  async function* stream(prompt: string | number[], opts: StreamOptions = {}): AsyncGenerator<TextChunk, GenerationStats> {
    live();
    const streamer = tokenizer ? new TextStreamer(tokenizer) : undefined;
    const it = generator.stream(encode(prompt), opts);
    try {
      for (;;) {
        const r = await it.next();
        if (r.done) {
          const tail = streamer?.flush() ?? '';
          if (tail) yield { ids: [], fromDraft: [], text: tail };
          return r.value;
        }
        // The last chunk (`end`) carries the rest of the text too, so no chunk follows it.
        const text = (streamer?.push(r.value.ids) ?? '') + (r.value.end ? streamer?.flush() ?? '' : '');
        yield { ...r.value, text };
      }
    } finally {
      await it.return(undefined as never); // a consumer that stops early frees the generator
    }
  }

  return {
    model,
    tokenizer,
    generator,
    notes,
    threads,
    nativeMatMul: sessionOpts.nativeLinear,
    weightFormats,
    tree,
    tuningFile: tuning && join(o.draft as string, TUNING_FILE),
    encode,
    stream,
    newPolicy: () => makePolicy() ?? generator.policy,
    async generate(prompt, opts = {}) {
      live();
      const r = await generator.generate(encode(prompt), opts);
      return { ...r, text: tokenizer?.decode(r.ids) };
    },
    async dispose() {
      if (disposed) return;
      disposed = true;
      await target.dispose();
      await draftSession?.dispose();
      for (const r of roundSessions) await r.dispose();
      await selfDrafter?.dispose();
    },
  };
}
