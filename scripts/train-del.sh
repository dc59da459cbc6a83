#!/usr/bin/env bash
# The early-exit pair behind docs/performance.md "Self-drafting: DEL vs static exits vs the EAGLE head":
# the default target's recipe (scripts/train-default.sh: dim 128, 8 layers, 4 heads, 2 K/V heads,
# vocab 1536, seq-len 256, 500 steps) plus LayerSkip's early-exit loss, on the ORT training
# backend; then an EAGLE head for that same target (ORT backend) and the held-out prompts, so
# `eaglet bench` can put DEL, the static exits and the head side by side on one target.
#
#   scripts/train-del.sh [OUT_DIR]        (default runs/del-ort; resumable: rerun after an interruption)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/del-ort}
CORPUS=node_modules/typescript/lib
mkdir -p "$OUT/work"
eaglet() { node --import tsx src/cli/main.ts "$@"; }
split() { node --import tsx scripts/corpus-split.ts --corpus-dir $CORPUS "$@"; }
[ -f "$OUT/target/model.safetensors" ] || eaglet train-target --corpus-dir $CORPUS --out "$OUT/target" \
  --checkpoint-dir "$OUT/target-checkpoint" \
  --dim 128 --layers 8 --heads 4 --kv-heads 2 --vocab 1536 --seq-len 256 --batch 4 \
  --lr 3e-3 --steps 500 --warmup 40 --eval-every 100 --eval-tokens 16384 --checkpoint-every 20 \
  --seed 0 --early-exit-loss 1 --backend ort --resume
[ -f "$OUT/work/features.arrow" ] || eaglet log --model "$OUT/target" --corpus $(split --split train | tr '\n' ' ') \
  --out "$OUT/work/features.arrow" --mode teacher --seq-len 256 --max-tokens 400000
[ -f "$OUT/head/model.safetensors" ] || eaglet train-draft --model "$OUT/target" --logs "$OUT/work/features.arrow" --out "$OUT/head" \
  --steps 900 --batch 8 --window 64 --lr 3e-3 --warmup 50 --checkpoint-every 100 --val-every 250 --backend ort --resume
split --split held-out --prompts "$OUT/work/heldout-prompts.jsonl" --model "$OUT/target" --prompt-len 32 --count 24
