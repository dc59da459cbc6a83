#!/usr/bin/env bash
# The cost-scaled 100M benchmark fixtures of the q4-target goal (docs/performance.md), rebuilt
# from the embedded default target (data/default/target) by their documented recipes:
#   A     the embedded pair as it is: `eaglet cost-scale` with no model (seconds),
#   B     a head trained on the q4 target's own features ("A head trained for the q4 target
#         (session 11)"): scripts/train-head-ort.sh with QUANTIZE=q4 GEN_TOKENS=384000, 6000
#         steps, seed 0, 1 thread; its LDLP from `collect-lengths --quantize q4` over 240
#         training-split prompts (chains of 8) and `train-ldlp`; then cost-scaled,
#   N172  the same recipe on the same logs with a SwiGLU width of 172 (`train-draft
#         --intermediate 172`, "A narrower head for the q4 target (session 12)").
# Logging the q4 target (teacher-forced training split + 3000 greedy continuations) is most of
# the time; B and N172 share those logs. Each fixture's training and logging run at 1 thread.
#
#   scripts/build-q4-fixtures.sh OUT_DIR
#
# Writes OUT_DIR/{A,B,N172}/{target,head,ldlp} (work files in OUT_DIR/work), for the goal command:
#   eaglet bench --model OUT_DIR/B/target --draft OUT_DIR/B/head --ldlp-path OUT_DIR/B/ldlp \
#     --prompts data/default/heldout-prompts.jsonl --quantize q4 ...
# Resumable: rerun after an interruption; steps whose outputs exist are skipped (the head's
# training resumes from its checkpoint).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: scripts/build-q4-fixtures.sh OUT_DIR" >&2; exit 2; }
# OUT_DIR is the caller's path: resolve it before moving to the repo root.
OUT=$(realpath -m "$1"); W=$OUT/work
cd "$(dirname "$0")/.."
mkdir -p "$W"
T=data/default/target
eaglet() { node --import tsx src/cli/main.ts "$@"; }

# A: the embedded head and LDLP, scaled.
[ -f "$OUT/A/README.md" ] || eaglet cost-scale --out "$OUT/A"

# Training-split prompts for the LDLP's round logs (as the embedded LDLP's).
[ -f "$W/ldlp-prompts.ids" ] || node --import tsx scripts/corpus-split.ts --corpus-dir node_modules/typescript/lib \
  --split train --prompts "$W/ldlp-prompts.ids" --model "$T" --prompt-len 32 --count 240

# fixture NAME HEAD_INTERMEDIATE: head (shared logs in $W), round logs, LDLP, scaled pair.
fixture() {
  local name=$1 head=$W/head-$1
  [ -f "$head/training.json" ] || QUANTIZE=q4 GEN_TOKENS=384000 STEPS=6000 THREADS=1 HEAD_INTERMEDIATE=$2 \
    WORK="$W" scripts/train-head-ort.sh "$T" "$head"
  [ -f "$W/rounds-$name.arrow" ] || eaglet collect-lengths --model "$T" --draft "$head" --quantize q4 --threads 1 \
    --prompts "$W/ldlp-prompts.ids" --prompt-len 32 --max-prompts 240 --max-new-tokens 96 --depth 8 --total-tokens 24 \
    --out "$W/rounds-$name.arrow"
  [ -f "$W/ldlp-$name/training.json" ] || eaglet train-ldlp --logs "$W/rounds-$name.arrow" --out "$W/ldlp-$name"
  [ -f "$OUT/$name/README.md" ] || eaglet cost-scale --model "$T" --draft "$head" --ldlp "$W/ldlp-$name" --out "$OUT/$name"
}
fixture B ''
fixture N172 172
