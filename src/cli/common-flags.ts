/** Flags several commands share: the target, the draft head, the tree shape, threads. */
import { DEFAULT_TREE } from '../api.ts';
import { DEFAULT_THREADS } from '../runtime/ort.ts';
import type { TreeShape } from '../generate/eagle-drafter.ts';
import { UsageError } from '../errors.ts';
import { camel, type FlagSpec, type Parsed } from './flags.ts';

export const MODEL_FLAGS: FlagSpec[] = [
  { flag: 'model', type: 'string', meta: 'PATH', help: 'target: HF checkpoint directory or llama2.c .bin' },
  { flag: 'tokenizer', type: 'string', meta: 'PATH', help: 'tokenizer.json or llama2.c tokenizer.bin (default: found with the model)' },
];

export const TREE_FLAGS: FlagSpec[] = [
  { flag: 'depth', type: 'int', min: 1, max: 32, default: DEFAULT_TREE.maxDepth, meta: 'D', help: 'deepest draft tree' },
  { flag: 'total-tokens', type: 'int', min: 1, max: 512, default: DEFAULT_TREE.totalTokens, meta: 'N', help: 'drafted tokens verified per round (tree size)' },
  { flag: 'tree-top-k', type: 'int', min: 1, max: 64, default: DEFAULT_TREE.topK, meta: 'K', help: 'children per expanded node and nodes expanded per depth' },
];

export const THREADS_FLAG: FlagSpec = { flag: 'threads', type: 'int', min: 1, max: 256, default: DEFAULT_THREADS, meta: 'N', help: 'onnxruntime intra-op threads; by default all cores but one' };

/** The tree shape the TREE_FLAGS parsed into. */
export const treeFromFlags = (f: Parsed): TreeShape => ({ maxDepth: f.depth as number, totalTokens: f.totalTokens as number, topK: f.treeTopK as number });

/** The files of a list flag: comma-separated in its value, plus the positional arguments after it (shell globs). */
export function fileList(f: Parsed, key: string, flag: string): string[] {
  const files = [...String(f[key] ?? '').split(','), ...f._].filter((p) => p.length > 0);
  if (files.length === 0) throw new UsageError(flag, 'is required');
  return files;
}

/** Throws a UsageError for the first of `flags` (camelCase key, flag) that was not given. */
export function requireFlags(f: Parsed, flags: string[]): void {
  for (const flag of flags) {
    const key = camel(flag);
    if (f[key] === undefined || f[key] === '') throw new UsageError(`--${flag}`, 'is required');
  }
}
