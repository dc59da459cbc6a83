/**
 * eaglet: EAGLE-style speculative decoding with adaptive draft lengths, on onnxruntime-node.
 * Start with `loadGenerator` (see src/api.ts for an example).
 */
export { loadGenerator, DEFAULT_TREE, type LoadOptions, type LoadedGenerator, type TextChunk } from './api.ts';
export type { TunedWeights } from './tune/tuning.ts';
export { Generator, type GenerationChunk, type GeneratorParts, type StreamOptions } from './generate/generator.ts';
export { GenerationStats, type StopReason } from './generate/stats.ts';
export { GENERATION_FLAGS, resolveGenerationOptions, type GenerationOptions } from './generate/options.ts';
export { Sampler, type SamplingOptions } from './generate/sampler.ts';
export { EagleDrafter } from './generate/eagle-drafter.ts';
export type { TreeShape } from '../trees/index.ts';
export { StaticPolicy, type LengthPolicy, type RoundPlan, type RoundState, type RoundOutcome } from './policies/policy.ts';
export { TargetSession } from './runtime/target.ts';
export { DraftSession } from './runtime/draft.ts';
export { KVCache } from './runtime/kv-cache.ts';
export { loadModel, type LoadedModel } from './load-model.ts';
export { loadDraftHead, saveDraftHead, type DraftHead } from './io/draft-head-io.ts';
export { loadHfCheckpoint, saveHfCheckpoint } from './io/hf.ts';
export { readLlama2c, writeLlama2c } from './io/llama2c.ts';
export { readSafetensors, writeSafetensors } from './io/safetensors.ts';
export { loadTokenizer } from './tokenizer/load.ts';
export { TextStreamer } from './tokenizer/streamer.ts';
export type { Tokenizer } from './tokenizer/tokenizer.ts';
export type { ModelConfig } from './model/config.ts';
export { EagletError, FormatError, ConfigError, UsageError } from './errors.ts';
export { serve, type ServeOptions, type RunningServer } from './serve/server.ts';
export { createHandler, type EagletHandler, type HandlerOptions } from './serve/http.ts';
export { DrainingError, Engine, QueueFullError, type EngineOptions } from './serve/engine.ts';
export { SmartSpecPlanner, SmartSpecPolicy, StepCost } from './policies/smartspec.ts';
export { Batcher, TargetLane, DraftLane } from './runtime/batch.ts';
