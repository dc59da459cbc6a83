/** Benchmark prompt sets: a prompt file, or random token-id prompts. */
import { FormatError } from '../errors.ts';
import { readFileOrFail } from '../io/read.ts';
import { Rng } from '../util/rng.ts';

/**
 * Token-id prompts from `file`: .jsonl (per line a string, an id array, or {"prompt"|"text"|"ids": ...})
 * or text (one prompt per line). Text prompts go through `encode`.
 */
export function readPrompts(file: string, encode: (text: string) => number[]): number[][] {
  return readRawPrompts(file).map((p) => checkedIds(typeof p === 'string' ? encode(p) : p, file));
}

/** Prompts from a .jsonl file (strings, id arrays, {prompt|text|ids} objects) or a text file (one per line). */
function readRawPrompts(file: string): (string | number[])[] {
  const text = new TextDecoder().decode(readFileOrFail(file));
  const lines = text.split('\n').map((l, i) => [l.trim(), i + 1] as const).filter(([l]) => l.length > 0);
  if (lines.length === 0) throw new FormatError(file, 'holds no prompts');
  if (!file.endsWith('.jsonl')) return lines.map(([l]) => l);
  return lines.map(([l, n]) => {
    let v: unknown;
    try {
      v = JSON.parse(l);
    } catch {
      throw new FormatError(file, `line ${n} is not JSON`);
    }
    const o = v as { prompt?: unknown; text?: unknown; ids?: unknown };
    const p = typeof v === 'string' || Array.isArray(v) ? v : (o?.ids ?? o?.prompt ?? o?.text);
    if (typeof p === 'string' && p.length > 0) return p;
    if (Array.isArray(p) && p.length > 0 && p.every((t) => Number.isInteger(t))) return p as number[];
    throw new FormatError(file, `line ${n}: expected a non-empty string, an array of token ids, or {"prompt"|"text"|"ids": ...}`);
  });
}

function checkedIds(ids: number[], file: string): number[] {
  if (ids.length === 0) throw new FormatError(file, 'a prompt encodes to no tokens');
  return ids;
}

/** `n` prompts of `length` token ids, reproducible from `seed`. */
export function randomPrompts(n: number, length: number, vocab: number, seed: number): number[][] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => Array.from({ length }, () => rng.int(vocab)));
}
