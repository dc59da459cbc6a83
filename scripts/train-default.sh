#!/usr/bin/env bash
# Reproduces the embedded default (data/default) from scratch, offline: a byte-level BPE tokenizer
# and an 8-layer Llama target trained on the TypeScript declaration files that `npm install` brings
# (typescript 5.9.3, node_modules/typescript/lib/*.d.ts; whole files held out), then its EAGLE draft
# head, LDLP and SpecDec++ predictors and the policy benchmark (scripts/pipeline-draft.sh).
#
# About 56 + 25 minutes on 2 shared cores (tfjs wasm). Interrupted? Run it again: every training
# step resumes from its checkpoint with exactly the same result.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
node --import tsx src/cli/main.ts train-target \
  --corpus-dir node_modules/typescript/lib \
  --out data/default/target \
  --checkpoint-dir runs/default-target-checkpoint \
  --dim 128 --layers 8 --heads 4 --kv-heads 2 --vocab 1536 --seq-len 256 --batch 4 \
  --lr 3e-3 --steps 500 --warmup 40 --eval-every 100 --eval-tokens 16384 --checkpoint-every 20 \
  --seed 0 --backend wasm --resume "$@"
# Head, LDLP, SpecDec++ (kept in runs/default-work) and the benchmark of every policy.
WORK=runs/default-work scripts/pipeline-draft.sh data/default/target data/default 900
rm -rf data/default/head/checkpoint.safetensors data/default/specdec
