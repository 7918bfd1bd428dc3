#!/usr/bin/env bash
# FixMatch, the baseline of the paper's first row, on the same tables:
#   bash sh/FixMatch.sh <dataset> <index> [extra train.py arguments, which override the table]
set -euo pipefail
source "$(dirname "$0")/tables.sh"
table_row "${1:-}" "${2:-}"
shift 2
# SimPro's release gives no FixMatch recipe (README, "The FixMatch row"). The paper's CIFAR and STL-10 FixMatch
# numbers that DASO also reports are DASO's: its recipe, 250k steps, B 64, mu 2, constant lr 0.03,
# weight decay on every parameter, EMA warm-up, BatchNorm momentum 0.1, as sh/DASO.sh and sh/CReST+.sh.
# On ImageNet the one known source is CoSSL's FixMatch (train_small_imagenet127_fix.py), Table 3's
# gamma_t~286 FixMatch cells: 500 epochs of 500 steps, B 64, mu 1, Adam lr 0.002 constant, weight decay
# 0.02 (its WeightEMA), as sh/DARP.sh and sh/CoSSL.sh there.
case $DATASET in
  cifar10|cifar100|stl10)
    HP=(--lr 0.03 --total-steps 250000 --batch-size 64 --mu 2 --lr-schedule constant --wdecay-all --ema-warmup
        --bn-momentum 0.1 --threshold 0.95) ;;
  smallimagenet*)
    HP=(--optimizer adam --lr 0.002 --lr-schedule constant --total-steps 250000 --batch-size 64 --mu 1
        --threshold 0.95) ;;
  *)
    HP=(--lr 0.03 --total-steps 250000 --batch-size 64 --mu 1 --threshold 0.95) ;;
esac
if [[ $DATASET == digits ]]; then
  HP+=("${DIGITS_RECIPE[@]}")
fi
if [[ $PROTOCOL == usb ]]; then  # USB's FixMatch (config/classic_cv_imb/fixmatch/, removed after 6dc0083)
  HP=("${USB_RECIPE[@]}")
fi
run_train --version FixMatch "${ROW[@]}" "${HP[@]}" --seed 0 "$@"
