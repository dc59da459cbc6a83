#!/usr/bin/env bash
# Reproduces the embedded default target (data/default/target) from scratch: a byte-level BPE
# tokenizer and a 2-layer Llama trained on the TypeScript declaration files that `npm install`
# brings (typescript 5.9.3, node_modules/typescript/lib/*.d.ts; whole files held out).
#
# About an hour on 2 shared cores (tfjs wasm). Interrupted? Run it again: --resume continues from
# the last checkpoint in runs/default-target-checkpoint with exactly the same result.
# Extra flags are passed through, e.g. `scripts/train-default.sh --time-budget 30`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
exec node --import tsx src/cli/main.ts train-target \
  --corpus-dir node_modules/typescript/lib \
  --out data/default/target \
  --checkpoint-dir runs/default-target-checkpoint \
  --dim 128 --layers 2 --heads 4 --vocab 1536 --seq-len 256 --batch 4 \
  --lr 3e-3 --steps 1200 --warmup 50 --eval-every 150 --eval-tokens 16384 --checkpoint-every 25 \
  --seed 0 --backend wasm --resume "$@"
