#!/usr/bin/env bash
# FixMatch, the baseline of the paper's first row, on the same tables:
#   bash sh/FixMatch.sh <dataset> <index> [extra train.py arguments, which override the table]
set -euo pipefail
source "$(dirname "$0")/tables.sh"
table_row "${1:-}" "${2:-}"
shift 2
# SPEC gives no FixMatch recipe: the training budget of ACR_d (README, "Run a row")
HP=(--lr 0.03 --total-steps 250000 --batch-size 64 --mu 1 --threshold 0.95)
if [[ $DATASET == digits ]]; then
  HP+=("${DIGITS_RECIPE[@]}")
fi
run_train --version FixMatch "${ROW[@]}" "${HP[@]}" --seed 0 "$@"
