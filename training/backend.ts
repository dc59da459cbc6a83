/**
 * The one place that picks a training backend: onnxruntime (the autodiff graphs of training/ort)
 * or a TensorFlow.js backend. `auto` = tfjs-node when it loads (native libtensorflow), else ort:
 * wasm and cpu stay available by name. Choosing ort never loads tfjs.
 */
import { UsageError } from '../src/errors.ts';
import { loadTf, type TfBackend } from './tf-backend.ts';

export type TrainBackendChoice = 'auto' | 'ort' | 'tfjs-node' | 'wasm' | 'cpu';
export const TRAIN_BACKEND_CHOICES: readonly TrainBackendChoice[] = ['auto', 'ort', 'tfjs-node', 'wasm', 'cpu'];
export const TRAIN_BACKEND_HELP = 'training backend: auto (tfjs-node if installed, else ort), ort, tfjs-node, wasm, cpu';

/** The resolved backend: ort, or a loaded tfjs with its backend name ('tensorflow' | 'wasm' | 'cpu'). */
export type TrainBackend = { kind: 'ort'; name: 'ort' } | { kind: 'tfjs'; name: string; tf: TfBackend['tf'] };

export async function pickTrainBackend(choice: TrainBackendChoice = 'auto'): Promise<TrainBackend> {
  if (!TRAIN_BACKEND_CHOICES.includes(choice)) throw new UsageError('--backend', `must be one of ${TRAIN_BACKEND_CHOICES.join(', ')}, got "${choice}"`);
  if (choice === 'ort') return { kind: 'ort', name: 'ort' };
  if (choice === 'auto') {
    try {
      const { tf, name } = await loadTf('node');
      return { kind: 'tfjs', name, tf };
    } catch {
      return { kind: 'ort', name: 'ort' };
    }
  }
  const { tf, name } = await loadTf(choice === 'tfjs-node' ? 'node' : choice);
  return { kind: 'tfjs', name, tf };
}
