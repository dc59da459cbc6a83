/**
 * The embedded default: a target, draft head and LDLP trained by this project's own pipeline
 * (scripts/train-default.sh) and committed under data/default, used when no model is given.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The package root: the nearest folder above this module with a package.json. This module runs
 * from src/ in a checkout and from dist/src/ in the installed package; data/ sits at the root.
 */
function packageRoot(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; ) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

export const DEFAULT_DIR = join(packageRoot(), 'data', 'default');

export const DEFAULT_PATHS = {
  target: join(DEFAULT_DIR, 'target'),
  draft: join(DEFAULT_DIR, 'head'),
  ldlp: join(DEFAULT_DIR, 'ldlp'),
  /** 24 prompts of 32 tokens from the held-out files (scripts/corpus-split.ts): what `bench` measures on. */
  heldoutPrompts: join(DEFAULT_DIR, 'heldout-prompts.jsonl'),
  /** 16 prompts of 32 tokens from the training files: what `tune` measures acceptance on (never the held-out ones). */
  tunePrompts: join(DEFAULT_DIR, 'tune-prompts.jsonl'),
};

/**
 * The default pair's tree, chosen by `eaglet tune` (docs/performance.md, "Sized by measurement"): on this CPU a
 * 3-deep chain is its fastest shape (1.36x predicted; 1.12x for ldlp+threshold on the held-out
 * prompts against 0.99x with the 4x8x24 tree it was trained with). Its LDLP predicts depths up to 8
 * (collected at 4x8x24), so it sizes trees up to this depth.
 */
export const DEFAULT_MODEL_TREE = { topK: 1, maxDepth: 3, totalTokens: 3 };

/** Which parts of the default are present (a checkout may hold only the target while it is being made). */
export function defaultParts(): { target: boolean; draft: boolean; ldlp: boolean } {
  const has = (dir: string) => existsSync(join(dir, 'config.json'));
  return { target: has(DEFAULT_PATHS.target), draft: has(DEFAULT_PATHS.draft), ldlp: has(DEFAULT_PATHS.ldlp) };
}
