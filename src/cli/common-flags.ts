/** Flags several commands share: the target, the draft head, the tree shape, threads. */
import { DEFAULT_TREE } from '../api.ts';
import { DEFAULT_MODEL_TREE } from '../default-model.ts';
import { TREE_LIMITS, type TreeShape } from '../../trees/index.ts';
import { UsageError } from '../errors.ts';
import type { QuantName } from '../model/quantize.ts';
import { camel, checkTree, type FlagSpec, type Parsed } from '../option-schema.ts';
import { policyEntry } from '../policies/registry.ts';

export const MODEL_FLAGS: FlagSpec[] = [
  { flag: 'model', type: 'string', meta: 'PATH', help: 'target: HF checkpoint directory or llama2.c .bin' },
  { flag: 'tokenizer', type: 'string', meta: 'PATH', help: 'tokenizer.json or llama2.c tokenizer.bin (default: found with the model)' },
];

// No flag defaults here: an unset flag keeps the model's tree (DEFAULT_TREE, or the embedded default's own).
export const TREE_FLAGS: FlagSpec[] = [
  { flag: 'depth', type: 'int', min: 1, max: TREE_LIMITS.maxDepth, meta: 'D', help: `deepest draft tree (default ${DEFAULT_TREE.maxDepth}; ${DEFAULT_MODEL_TREE.maxDepth} with the embedded default)` },
  { flag: 'total-tokens', type: 'int', min: 1, max: TREE_LIMITS.totalTokens, meta: 'N', help: `drafted tokens verified per round (default ${DEFAULT_TREE.totalTokens}; ${DEFAULT_MODEL_TREE.totalTokens} with the embedded default)` },
  { flag: 'tree-top-k', type: 'int', min: 1, max: TREE_LIMITS.topK, meta: 'K', help: `children per expanded node and nodes expanded per depth (default ${DEFAULT_TREE.topK})` },
];

export const QUANTIZE_FLAG: FlagSpec = { flag: 'quantize', type: 'string', choices: ['q8', 'q4'], meta: 'q8|q4', help: 'quantize the target to 8- or 4-bit blockwise weights at load (a quantized target\'s draft head gets 8 bits unless --draft-quant; none keeps it fp32); a checkpoint from `eaglet quantize` is quantized already' };

export const DRAFT_QUANT_FLAG: FlagSpec = { flag: 'draft-quant', type: 'string', choices: ['q8', 'q4', 'none'], meta: 'q8|q4|none', help: 'run the draft head with 8- or 4-bit weights (fewer bytes per draft pass; output unchanged), or none: fp32 weights (default q8 with a quantized target, else fp32)' };

export const NATIVE_MATMUL_FLAG: FlagSpec = { flag: 'native-matmul', type: 'bool', help: 'run 4- and 8-bit Linear layers with blocks of 128 (a q4 target, a q8 or q4 head) with eaglet\'s own kernel instead of ORT\'s MatMulNBits: each block read once for all rows of a pass, no padded rows; sessions open on the native addon, built with g++ on first use (needs AVX-512 VNNI)' };

/** The weight formats QUANTIZE_FLAG, DRAFT_QUANT_FLAG and NATIVE_MATMUL_FLAG set (LoadOptions `quantize`, `draftQuant`, `nativeMatMul`). */
export function quantFromFlags(f: Parsed): { quantize?: QuantName; draftQuant?: QuantName | 'none'; nativeMatMul?: boolean } {
  return { quantize: f.quantize as QuantName | undefined, draftQuant: f.draftQuant as QuantName | 'none' | undefined, nativeMatMul: f.nativeMatmul === true };
}

export { THREADS_FLAG } from '../runtime/ort.ts';

/** The tree-shape fields the TREE_FLAGS set (unset ones are left out). */
export function treeFromFlags(f: Parsed): Partial<TreeShape> {
  const t: Partial<TreeShape> = {};
  if (f.depth !== undefined) t.maxDepth = f.depth as number;
  if (f.totalTokens !== undefined) t.totalTokens = f.totalTokens as number;
  if (f.treeTopK !== undefined) t.topK = f.treeTopK as number;
  return t;
}

/** The tree options' flags, for errors about a tree shape (checkTree). */
export const TREE_FLAG_NAMES: Record<keyof TreeShape, string> = { topK: '--tree-top-k', maxDepth: '--depth', totalTokens: '--total-tokens' };

/**
 * Runs `load` (which builds a generator), renaming a library tree-shape error (`tree.totalTokens`)
 * to the flag that set it, then checks that the tree it drafts with can reach its depth: the tree
 * loading settled on (`tree`), not the drafter's, since a fused round would quietly draft a shorter
 * chain than --depth asked for. That error names where each value came from: its flag in `f`, the
 * tuning file loading applied, or the default.
 */
export async function withTreeFlags<T extends { tree: TreeShape; tuningFile?: string; generator: { parts: { drafter?: unknown } }; dispose(): Promise<void> }>(f: Parsed, load: () => Promise<T>): Promise<T> {
  let g: T;
  try {
    g = await load();
  } catch (e) {
    if (!(e instanceof UsageError) || !e.flag.startsWith('tree.') || !(e.flag.slice(5) in TREE_FLAG_NAMES)) throw e;
    const key = e.flag.slice(5) as keyof TreeShape;
    const names = Object.entries(TREE_FLAG_NAMES).reduce((m, [k, flag]) => m.replaceAll(`tree.${k}`, flag), e.problem);
    throw new UsageError(TREE_FLAG_NAMES[key], names);
  }
  const shape = g.generator.parts.drafter ? g.tree : undefined;
  try {
    if (shape && shape.maxDepth > 0) {
      const from = (k: keyof TreeShape) => (f[camel(TREE_FLAG_NAMES[k].slice(2))] !== undefined ? undefined : g.tuningFile ?? 'the default');
      const depthFrom = from('maxDepth'), tokensFrom = from('totalTokens');
      checkTree(shape, { ...TREE_FLAG_NAMES, maxDepth: depthFrom ?? TREE_FLAG_NAMES.maxDepth, totalTokens: tokensFrom ? `${TREE_FLAG_NAMES.totalTokens} (${tokensFrom})` : TREE_FLAG_NAMES.totalTokens }, true);
    }
  } catch (e) {
    await g.dispose();
    throw e;
  }
  return g;
}

/** The files of a list flag: comma-separated in its value, plus the positional arguments after it (shell globs). */
export function fileList(f: Parsed, key: string, flag: string): string[] {
  const files = [...String(f[key] ?? '').split(','), ...f._].filter((p) => p.length > 0);
  if (files.length === 0) throw new UsageError(flag, 'is required');
  return files;
}

/** A comma-separated list of policy specs: an empty item is a typo (as in an id list), not nothing to run. */
export function policyList(raw: string, flag: string): string[] {
  const items = raw.split(',').map((s) => s.trim());
  const empty = items.indexOf('');
  if (empty >= 0) throw new UsageError(flag, `item ${empty + 1} of '${raw}' is empty`);
  return items;
}

/** Throws a UsageError for the first of `flags` (camelCase key, flag) that was not given. */
export function requireFlags(f: Parsed, flags: string[]): void {
  for (const flag of flags) {
    const key = camel(flag);
    if (f[key] === undefined || f[key] === '') throw new UsageError(`--${flag}`, 'is required');
  }
}

/**
 * Self-drafting (--draft self, --exit-layer) against the flags of an EAGLE head: one clear
 * UsageError for a combination that cannot mean anything. `--policy` / `--policies` specs of
 * self-drafting policies (del, exit-E) need self-drafting, and head-only policies need a head.
 */
export function checkSelfDraftFlags(f: Parsed): void {
  const self = f.draft === 'self' || f.exitLayer !== undefined;
  if (f.exitLayer !== undefined && f.draft !== undefined && f.draft !== 'self') throw new UsageError('--exit-layer', 'drafts with the target\'s own layers: do not combine it with an EAGLE head (--draft PATH)');
  if (!self) {
    if (f.policy !== undefined && policyEntry(policyName(String(f.policy))).drafter === 'self') throw new UsageError('--policy', `${String(f.policy)} drafts with the target's own layers: add --draft self`);
    return;
  }
  for (const flag of ['ldlp', 'draft-seed']) if (f[camel(flag)] !== undefined && f[camel(flag)] !== 0) throw new UsageError(`--${flag}`, 'belongs to an EAGLE head: --draft self / --exit-layer draft with the target\'s own layers');
  if (f.exitLayer !== undefined && f.policy !== undefined) throw new UsageError('--exit-layer', 'fixes the policy (exit-E): do not combine it with --policy');
  if (f.policy !== undefined) {
    const name = policyName(String(f.policy));
    if (['ldlp', 'specdec', 'ldlp+threshold'].some((p) => name.startsWith(p.split('+')[0]))) throw new UsageError('--policy', `${name} needs an EAGLE head (--draft PATH); with --draft self use del, exit-E or a head-free policy`);
  }
}

/** The registry name of a policy spec (`exit-3:x=1` -> exit). */
export function policyName(spec: string): string {
  const head = spec.split(':')[0];
  const short = /^([a-z][a-z0-9]*)-(\d+)$/.exec(head);
  return short ? short[1] : head;
}

/** `--fused-round`: draft the chain and verify it in one ORT call per round (LoadOptions.fusedRound). */
export const ROUND_DEPTHS_FLAG: FlagSpec = { flag: 'round-depths', type: 'string', meta: 'LIST', help: 'with the fused round: also build round graphs of these depths (comma-separated, each at most the tree depth); a round runs the shallowest graph that reaches its planned depth, so a policy that plans shallow rounds (ldlp, goodput) does not pay for the deepest graph\'s head steps (each graph holds its own copy of the target\'s weights)' };

/** ROUND_DEPTHS_FLAG as LoadOptions `roundDepths`. */
export function roundDepthsFromFlags(f: Parsed): number[] | undefined {
  if (f.roundDepths === undefined) return undefined;
  const depths = String(f.roundDepths).split(',').map((x) => x.trim()).filter((x) => x.length > 0).map(Number);
  if (depths.length === 0 || depths.some((d) => !(Number.isInteger(d) && d >= 1))) throw new UsageError('--round-depths', `expects positive integers separated by commas, got "${f.roundDepths}"`);
  return depths;
}

export const FUSED_ROUND_FLAG: FlagSpec = { flag: 'fused-round', type: 'bool', help: 'with a chain tree (--tree-top-k 1): draft and verify in ONE ORT call per round instead of one per draft depth plus one to verify (holds a second copy of the target\'s weights; default: on for the embedded default pair, or as a tuning file beside the head says; --no-fused-round to turn it off)' };
