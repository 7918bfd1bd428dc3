#!/usr/bin/env bash
# FixMatch w/ DASO (Oh et al., CVPR 2022), one row of the tables:
#   bash sh/DASO.sh <dataset> <index> [extra train.py arguments, which override the table]
set -euo pipefail
source "$(dirname "$0")/tables.sh"
table_row "${1:-}" "${2:-}"
shift 2

row_value() {  # the value ROW gives a train.py flag
  local i
  for i in "${!ROW[@]}"; do
    if [[ ${ROW[$i]} == "$1" ]]; then echo "${ROW[$((i + 1))]}"; fi
  done
}

# DASO's configs: T_dist 1.5 for CIFAR-10 when the unlabeled distribution is the labeled one
# (consistent, gamma_u = gamma_l), 0.3 for every other setting and dataset
T_DIST=0.3
if [[ $DATASET == cifar10 && $(row_value --flag-reverse-LT) == 0 ]] &&
   awk "BEGIN { exit !($(row_value --imb-ratio-label) == $(row_value --imb-ratio-unlabel)) }"; then
  T_DIST=1.5
fi
METHOD=(--threshold 0.95 --dist-temp "$T_DIST" --proto-temp 0.05 --psa-loss-weight 1 --queue-max-size 256)
if [[ $DATASET == digits ]]; then
  # the short recipe of every method; pretraining and the pseudo-label window scaled to its 1,200 steps
  HP=("${METHOD[@]}" "${DIGITS_RECIPE[@]}" --pretrain-steps 240 --pl-dist-update-period 40)
else
  # DASO's recipe: 250k steps, B 64, mu 2, constant lr 0.03, weight decay on every parameter, EMA
  # warm-up, BatchNorm momentum 0.1; 5,000 steps of FixMatch first, pseudo-label window 100 steps
  HP=("${METHOD[@]}" --lr 0.03 --total-steps 250000 --batch-size 64 --mu 2 --lr-schedule constant --wdecay-all
      --ema-warmup --bn-momentum 0.1 --pretrain-steps 5000 --pl-dist-update-period 100)
fi
if [[ $PROTOCOL == usb ]]; then
  # USB's fixmatch_daso configs: T_dist 1.5 on every CIFAR-10 row, 0.3 elsewhere; 5,120 pretraining steps
  [[ $DATASET == cifar10 ]] && T_DIST=1.5 || T_DIST=0.3
  HP=("${USB_IMB_RECIPE[@]}" --dist-temp "$T_DIST" --proto-temp 0.05 --psa-loss-weight 1 --queue-max-size 256
      --pretrain-steps 5120 --pl-dist-update-period 100)
fi
run_train --version DASO "${ROW[@]}" "${HP[@]}" --seed 0 "$@"
