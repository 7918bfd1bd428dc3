#!/usr/bin/env bash
# FixMatch w/ CReST+ (Wei et al., CVPR 2021) as the DASO authors' code runs it, one row of the tables:
#   bash sh/CReST+.sh <dataset> <index> [extra train.py arguments, which override the table]
set -euo pipefail
source "$(dirname "$0")/tables.sh"
table_row "${1:-}" "${2:-}"
shift 2
# DASO's configs (fixmatch_crest.yaml): 5 generations, sampling rates with alpha 3, alignment
# temperature from 1 down to 0.5; no alignment on STL-10, whose unlabeled distribution is unknown
METHOD=(--threshold 0.95 --generations 5 --crest-alpha 3 --da-t-min 0.5)
if [[ $DATASET == stl10 ]]; then
  METHOD+=(--no-dist-align)
fi
if [[ $DATASET == digits ]]; then
  # the short recipe of every method, in 3 generations of 400 steps (10 epochs each)
  HP=("${METHOD[@]}" "${DIGITS_RECIPE[@]}" --generations 3)
else
  # DASO's recipe: 250k steps (5 generations of 50k), B 64, mu 2, constant lr 0.03 restarted every
  # generation, weight decay on every parameter, EMA warm-up, BatchNorm momentum 0.1
  HP=("${METHOD[@]}" --lr 0.03 --total-steps 250000 --batch-size 64 --mu 2 --lr-schedule constant --wdecay-all
      --ema-warmup --bn-momentum 0.1)
fi
if [[ $PROTOCOL == usb ]]; then
  # USB's fixmatch_crest+ configs: 6 generations of 65,536 steps each, alpha 3, alignment temperature
  # from 1 down to 0.5
  HP=("${USB_IMB_RECIPE[@]}" --total-steps 393216 --generations 6 --crest-alpha 3 --dist-align --da-t-min 0.5)
fi
run_train --version CReST+ "${ROW[@]}" "${HP[@]}" --seed 0 "$@"
