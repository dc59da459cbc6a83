/** Small file-reading helpers shared by the checkpoint readers: every failure names the file. */
import { existsSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError } from '../errors.ts';

/** Opens `path` for reading; a missing or unreadable file becomes a FormatError naming it. */
export function openForRead(path: string): number {
  try {
    return openSync(path, 'r');
  } catch (e) {
    throw new FormatError(path, `cannot open: ${describe(e)}`);
  }
}

/** Reads exactly `into.byteLength` bytes at `pos`. Callers check sizes first; a short read means the file changed. */
export function readExact(fd: number, into: Uint8Array, pos: number): void {
  for (let off = 0; off < into.byteLength; ) {
    const n = readSync(fd, into, off, into.byteLength - off, pos + off);
    if (n === 0) throw new Error('file shrank while being read');
    off += n;
  }
}

/** Reads and parses a JSON file; a missing file or bad JSON becomes a FormatError naming it. */
export function readJsonFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new FormatError(path, `cannot read: ${describe(e)}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new FormatError(path, `not valid JSON (${(e as Error).message})`);
  }
}

/** Reads a whole (small) file, naming it on failure. */
export function readFileOrFail(path: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new FormatError(path, `cannot read: ${describe(e)}`);
  }
}

function describe(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' ? 'no such file' : code ?? (e as Error).message;
}

/**
 * The parts of a small-model directory (a draft head, a predictor): its `config.json` as a JSON
 * object and the path of its `model.safetensors`, both checked to exist. `what` names the kind
 * of directory in errors.
 */
export function readModelDir(dir: string, what: string): { cfgFile: string; json: Record<string, unknown>; weightsFile: string } {
  if (!existsSync(dir)) throw new FormatError(dir, 'no such directory');
  if (!statSync(dir).isDirectory()) throw new FormatError(dir, `is a file; a ${what} is a directory of config.json + model.safetensors`);
  const cfgFile = join(dir, 'config.json'), weightsFile = join(dir, 'model.safetensors');
  if (!existsSync(cfgFile)) throw new FormatError(cfgFile, 'missing');
  const json = readJsonFile(cfgFile);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FormatError(cfgFile, 'expected a JSON object');
  if (!existsSync(weightsFile)) throw new FormatError(weightsFile, 'missing');
  return { cfgFile, json: json as Record<string, unknown>, weightsFile };
}
