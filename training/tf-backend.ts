/**
 * The one place that picks the TensorFlow.js backend for training.
 *
 * Preference (`auto`): `@tensorflow/tfjs-node` (native libtensorflow; an optional dependency that
 * only installs where its binary download works), then `@tensorflow/tfjs` on the `wasm` backend
 * (SIMD, single thread, ~3x the pure-JS cpu backend), then `cpu`. wasm has no
 * UnsortedSegmentSum, so gradients through `tf.gather` fail there: training keeps embedding
 * lookups outside the gradient tape, which makes every backend usable.
 *
 * TensorFlow.js is an optional peer dependency of the package: inference never loads it, and a
 * training command without it ends with one line naming what to install.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { isMissingPackage, MissingPackageError, UsageError } from '../src/errors.ts';

export type Tf = typeof import('@tensorflow/tfjs');
export type BackendChoice = 'auto' | 'node' | 'wasm' | 'cpu';
export const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', 'node', 'wasm', 'cpu'];

/** The loaded library and the backend actually in use ('tensorflow' | 'wasm' | 'cpu'). */
export interface TfBackend {
  tf: Tf;
  name: string;
}

const require = createRequire(import.meta.url);

/**
 * Loads tfjs once and selects the backend. Calling again with a different explicit choice
 * switches the backend of the same tfjs instance (tfjs-node, once loaded, replaces the library).
 */
export async function loadTf(choice: BackendChoice = 'auto'): Promise<TfBackend> {
  if (!BACKEND_CHOICES.includes(choice)) throw new UsageError('--backend', `expected one of ${BACKEND_CHOICES.join('|')}, got "${choice}"`);
  if (choice === 'auto' || choice === 'node') {
    const node = await tryTfNode();
    if (node) return node;
    if (choice === 'node') throw new UsageError('--backend', '@tensorflow/tfjs-node is not installed (it needs a libtensorflow download); use wasm or cpu');
  }
  const tf = await importTfjs();
  if (choice === 'auto' || choice === 'wasm') {
    if (await tryWasm(tf)) return { tf, name: 'wasm' };
    if (choice === 'wasm') throw new UsageError('--backend', 'the tfjs wasm backend failed to initialise (is @tensorflow/tfjs-backend-wasm installed?)');
  }
  await tf.setBackend('cpu');
  await tf.ready();
  return { tf, name: 'cpu' };
}

async function importTfjs(): Promise<Tf> {
  try {
    return await import('@tensorflow/tfjs');
  } catch (e) {
    if (isMissingPackage(e, '@tensorflow/tfjs')) throw new MissingPackageError('@tensorflow/tfjs', 'training', '@tensorflow/tfjs @tensorflow/tfjs-backend-wasm');
    throw e;
  }
}

async function tryTfNode(): Promise<TfBackend | null> {
  try {
    // A variable specifier keeps type-checking independent of the optional package.
    const spec = '@tensorflow/tfjs-node';
    const tf = (await import(spec)) as Tf;
    await tf.ready();
    return { tf, name: tf.getBackend() };
  } catch {
    return null;
  }
}

async function tryWasm(tf: Tf): Promise<boolean> {
  try {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    // The .wasm binaries ship in the package's dist folder; point the loader at them on disk.
    const dist = dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
    wasm.setWasmPaths({
      'tfjs-backend-wasm.wasm': join(dist, 'tfjs-backend-wasm.wasm'),
      'tfjs-backend-wasm-simd.wasm': join(dist, 'tfjs-backend-wasm-simd.wasm'),
      'tfjs-backend-wasm-threaded-simd.wasm': join(dist, 'tfjs-backend-wasm-threaded-simd.wasm'),
    });
    return await tf.setBackend('wasm');
  } catch {
    return false;
  }
}
