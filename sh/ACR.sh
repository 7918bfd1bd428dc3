#!/usr/bin/env bash
# ACR (Wei and Gan, CVPR 2023) with its anchor distributions and dynamic tau1, one row of the tables:
#   bash sh/ACR.sh <dataset> <index> [extra train.py arguments, which override the table]
set -euo pipefail
source "$(dirname "$0")/tables.sh"
table_row "${1:-}" "${2:-}"
shift 2
# ACR's launchers, the same for every dataset (ACR_d's budget; --tau1 is tau1's maximum; mu 1, its
# script default); the estimate of the unlabeled distribution starts after epoch --est-epoch
HP=(--lr 0.03 --total-steps 250000 --batch-size 64 --mu 1 --tau1 2 --tau12 2 --tau2 2 --threshold 0.95
    --ema-u 0.99 --est-epoch 5)
if [[ $DATASET == digits ]]; then
  HP+=("${DIGITS_RECIPE[@]}")
fi
run_train --version ACR "${ROW[@]}" "${HP[@]}" --seed 0 "$@"
