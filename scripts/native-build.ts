/** Builds the native probes under scripts/native/ (cost probes run by scripts/probe-native-*.ts; nothing in eaglet links them). */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EagletError } from '../src/errors.ts';

/**
 * scripts/native/NAME.cc compiled with g++ (C++17, -O3 -march=native: the probes use this host's
 * AVX-512) into `dir`; returns the executable's path. A missing g++ or a failed build is one error line.
 */
export function compileNative(name: string, dir: string): string {
  const rel = `scripts/native/${name}.cc`, src = fileURLToPath(new URL(`./native/${name}.cc`, import.meta.url)), exe = join(dir, name);
  const cc = spawnSync('g++', ['-std=c++17', '-O3', '-march=native', '-pthread', src, '-o', exe], { encoding: 'utf8' });
  if (cc.error) throw new EagletError(`g++ not found (${cc.error.message}): the probe needs g++ to build ${rel}`);
  if (cc.status !== 0) throw new EagletError(`g++ failed to build ${rel}: ${cc.stderr.split('\n').find((l) => l.includes('error')) ?? cc.stderr.split('\n')[0]}`);
  return exe;
}
