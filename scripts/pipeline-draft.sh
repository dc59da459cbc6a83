#!/usr/bin/env bash
# Everything after the target: feature logs -> EAGLE draft head -> round logs -> LDLP and
# SpecDec++ predictors -> policy benchmark on held-out prompts. Each step is an eaglet command;
# outputs go to OUT (heads/predictors) and $WORK (logs, prompts, benchmark; default OUT/work).
#
#   scripts/pipeline-draft.sh TARGET_DIR OUT_DIR [DRAFT_STEPS]
#
# TARGET_DIR is a model trained by `eaglet train-target` on node_modules/typescript/lib (its
# held-out split is recomputed from the file names). Resumable: rerun after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
T=$1; OUT=$2; STEPS=${3:-1500}
W=${WORK:-$OUT/work}; mkdir -p "$W"
CORPUS=node_modules/typescript/lib
eaglet() { node --import tsx src/cli/main.ts "$@"; }
split() { node --import tsx scripts/corpus-split.ts --corpus-dir $CORPUS "$@"; }

# 1. Features of the target, teacher-forced over the training split.
[ -f "$W/features.arrow" ] || eaglet log --model "$T" --corpus $(split --split train | tr '\n' ' ') \
  --out "$W/features.arrow" --mode teacher --seq-len 256 --max-tokens 400000
# 2. The draft head (EAGLE layout).
eaglet train-draft --model "$T" --logs "$W/features.arrow" --out "$OUT/head" --steps "$STEPS" --batch 8 --window 64 \
  --lr 3e-3 --warmup 50 --checkpoint-every 100 --val-every 250 --backend wasm --resume
# 3. Prompts: training-split prompts for length data, held-out prompts for every measurement.
split --split train --prompts "$W/train-prompts.ids" --model "$T" --prompt-len 32 --count 240
split --split held-out --prompts "$W/heldout-prompts.jsonl" --model "$T" --prompt-len 32 --count 24
# 4. Round logs at depth 8, then the LDLP and SpecDec++ heads.
eaglet collect-lengths --model "$T" --draft "$OUT/head" --prompts "$W/train-prompts.ids" --prompt-len 32 \
  --max-prompts 240 --max-new-tokens 96 --depth 8 --total-tokens 24 --out "$W/rounds.arrow"
eaglet train-ldlp --logs "$W/rounds.arrow" --out "$OUT/ldlp"
eaglet train-ldlp --head specdec++ --logs "$W/rounds.arrow" --out "$OUT/specdec"
# 5. Plain decoding vs every policy on held-out prompts, same process, interleaved.
eaglet bench --model "$T" --draft "$OUT/head" --prompts "$W/heldout-prompts.jsonl" --depth 8 --total-tokens 24 \
  --max-new-tokens 96 --repeats 2 --out "$W/bench" \
  --policies "static-1,static-2,static-3,static-4,static-6,static-8,threshold,adaedl,heuristic,goodput,ldlp:path=$OUT/ldlp,ldlp+threshold:path=$OUT/ldlp,specdec++:path=$OUT/specdec"
