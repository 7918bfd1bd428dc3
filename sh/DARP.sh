#!/usr/bin/env bash
# FixMatch w/ DARP (Kim et al., NeurIPS 2020), one row of the tables:
#   bash sh/DARP.sh <dataset> <index> [extra train.py arguments, which override the table]
set -euo pipefail
source "$(dirname "$0")/tables.sh"
table_row "${1:-}" "${2:-}"
shift 2
# DARP's defaults (DASO's ALGORITHM.DARP, DARP's README): 40% warm-up, a refinement every 10 steps of
# 10 solver iterations, alpha 2. The counts the pseudo labels are aligned to: on CIFAR the pool's true
# counts (DASO's code: the same where the two distributions match, DARP's estimate elsewhere); on
# STL-10, whose pool has no labels, the labeled distribution (DASO's code: DARP's estimate); on
# ImageNet the labeled distribution scaled to the pool, as DARP's own code (which CoSSL ran) without --est
METHOD=(--threshold 0.95 --darp-warmup-ratio 0.4 --darp-period 10 --darp-iters 10 --darp-alpha 2 --darp-tol 0.1)
if [[ $DATASET == stl10 || $DATASET == smallimagenet* ]]; then
  METHOD+=(--darp-target labeled)
else
  METHOD+=(--darp-target true)
fi
case $DATASET in
  digits)
    # the short recipe of every method; the warm-up its first 40% (480 steps), then a refinement
    # every 10 steps
    HP=("${METHOD[@]}" "${DIGITS_RECIPE[@]}") ;;
  smallimagenet*)
    # CoSSL's FixMatch (train_small_imagenet127_fix.py), where Table 3's DARP rows come from: 500
    # epochs of 500 steps, B 64, mu 1, Adam lr 0.002 constant, weight decay 0.02 (its WeightEMA);
    # the same for ImageNet-1k, which has no DARP row
    HP=("${METHOD[@]}" --optimizer adam --lr 0.002 --lr-schedule constant --total-steps 250000 --batch-size 64
        --mu 1) ;;
  cifar10|cifar100|stl10)
    # DASO's recipe, where the CIFAR and STL-10 DARP rows come from: 250k steps, B 64, mu 2, constant
    # lr 0.03, weight decay on every parameter, EMA warm-up, BatchNorm momentum 0.1
    HP=("${METHOD[@]}" --lr 0.03 --total-steps 250000 --batch-size 64 --mu 2 --lr-schedule constant --wdecay-all
        --ema-warmup --bn-momentum 0.1) ;;
  *)
    no_recipe ;;
esac
if [[ $PROTOCOL == usb ]]; then
  # USB's fixmatch_darp configs: the refinement after epoch 200 of 256 (of 1024 steps; its test is
  # epoch > 200, from step 205,825: 201/256 of the steps), every 10 steps, 10 solver iterations, alpha
  # 2, tolerance 0.1, aligned to the labeled distribution scaled to the pool on every row
  HP=("${USB_IMB_RECIPE[@]}" --darp-warmup-ratio 0.78515625 --darp-period 10 --darp-iters 10 --darp-alpha 2
      --darp-tol 0.1 --darp-target labeled)
fi
run_train --version DARP "${ROW[@]}" "${HP[@]}" --seed 0 "$@"
