#!/usr/bin/env bash
# A longer-trained EAGLE head for a target trained on node_modules/typescript/lib (the embedded
# default's corpus), on the onnxruntime training backend (minutes, not the tfjs pipeline's ~11):
#   1. teacher-forced features of the whole training split (held-out files never logged),
#   2. the target's own greedy continuations of 1000 training-split prompts (generate mode: the
#      text the head will be asked to predict at greedy decoding),
#   3. train-draft on both logs, 6000 steps of 16 x 64 rows.
#
#   scripts/train-head-ort.sh TARGET_DIR OUT_DIR          (work files go to $WORK, default OUT_DIR-work)
#
# Environment (defaults in brackets):
#   QUANTIZE=q4|q8   log and train for the target as `--quantize` runs it: its features, its
#                    greedy continuations, its quantized embeddings and LM head [fp32 target]
#   STEPS=N          training updates [6000]
#   GEN_TOKENS=N     rows of greedy continuations, 128 per prompt, at most 3000 prompts [128000]
#   THREADS=N        onnxruntime threads for logging and training [the commands' defaults]
#   HEAD_INTERMEDIATE=N  the head's SwiGLU width (`train-draft --intermediate`) [the target's]
#   TTT=K            training-time test: unroll the draft chain K steps (`train-draft --ttt`) [1]
#
# Evaluate it on held-out prompts only, e.g.
#   eaglet bench --model TARGET_DIR --draft OUT_DIR --prompts data/default/heldout-prompts.jsonl ...
set -euo pipefail
cd "$(dirname "$0")/.."
T=$1; OUT=$2; W=${WORK:-$OUT-work}; mkdir -p "$W"
CORPUS=node_modules/typescript/lib
eaglet() { node --import tsx src/cli/main.ts "$@"; }
split() { node --import tsx scripts/corpus-split.ts --corpus-dir $CORPUS "$@"; }
Q=(${QUANTIZE:+--quantize "$QUANTIZE"}); TH=(${THREADS:+--threads "$THREADS"}); HI=(${HEAD_INTERMEDIATE:+--intermediate "$HEAD_INTERMEDIATE"} ${TTT:+--ttt "$TTT"})
GEN=${GEN_TOKENS:-128000}

[ -f "$W/teacher.arrow" ] || eaglet log --model "$T" "${Q[@]}" "${TH[@]}" --corpus $(split --split train | tr '\n' ' ') \
  --out "$W/teacher.arrow" --mode teacher --seq-len 256 --max-tokens 2000000
[ -f "$W/gen-prompts.ids" ] || split --split train --prompts "$W/gen-prompts.ids" --model "$T" --prompt-len 32 --count 3000
[ -f "$W/generate.arrow" ] || eaglet log --model "$T" "${Q[@]}" "${TH[@]}" --corpus "$W/gen-prompts.ids" --out "$W/generate.arrow" \
  --mode generate --prompt-len 32 --seq-len 128 --max-tokens "$GEN"
eaglet train-draft --model "$T" "${Q[@]}" "${TH[@]}" --logs "$W/teacher.arrow,$W/generate.arrow" --out "$OUT" --steps "${STEPS:-6000}" "${HI[@]}" \
  --batch 16 --window 64 --lr 3e-3 --warmup 100 --val-every 1000 --checkpoint-every 500 --backend ort --resume
