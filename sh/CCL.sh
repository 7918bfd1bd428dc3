#!/usr/bin/env bash
# CCL (Zhou et al., NeurIPS 2024), one row of the tables, with its own recipe per dataset from the
# official code's configs/ (zhouzihao11/CCL; README "CCL" says which config each row takes):
#   bash sh/CCL.sh <dataset> <index> [extra train.py arguments, which override the table]
set -euo pipefail
source "$(dirname "$0")/tables.sh"
table_row "${1:-}" "${2:-}"
shift 2
reversed=0  # the row's unlabeled distribution is reversed (--flag-reverse-LT 1)
for i in "${!ROW[@]}"; do
  if [[ ${ROW[$i]} == --flag-reverse-LT && ${ROW[$((i + 1))]} == 1 ]]; then reversed=1; fi
done
# the official defaults that no config changes: 250000 steps of 500, lambda1 0.7, T 1
COMMON=(--lr 0.03 --total-steps 250000 --eval-step 500 --threshold 0.95 --lambda1 0.7 --T 1.0)
case $DATASET in
  cifar10|stl10)  # configs/cifar10: reverse_100 for reversed rows, con_100/con_150/uni_100 for the others
    if (( reversed )); then
      HP=("${COMMON[@]}" --tau 2.0 --batch-size 64 --mu 1 --alpha 0.999 --beta 0.999 --est-epoch 5 --upbatch 100 --lambda2 1.0)
    else
      HP=("${COMMON[@]}" --tau 2.0 --batch-size 64 --mu 1 --alpha 0.5 --beta 0.9 --est-epoch 20 --upbatch 500 --lambda2 1.0)
    fi ;;
  cifar100)  # configs/cifar100: every row the defaults
    HP=("${COMMON[@]}" --tau 2.0 --batch-size 64 --mu 1 --alpha 0.5 --beta 0.5 --est-epoch 5 --upbatch 500 --lambda2 1.0) ;;
  smallimagenet|smallimagenet_1k)  # configs/SmallImagenet (its --labmda2 1.5 read as --lambda2 1.5)
    HP=("${COMMON[@]}" --batch-size 32 --mu 2 --tau 0.1 --alpha 0.5 --beta 0.5 --est-epoch 5
        --upbatch 500 --lambda2 1.5) ;;
  digits)  # the digits recipe; one estimate update per epoch of 40 steps, as 500 of 500 above
    HP=("${DIGITS_RECIPE[@]}" --tau 2.0 --lambda1 0.7 --lambda2 1.0 --T 1.0 --alpha 0.5 --beta 0.9 --est-epoch 5
        --upbatch 40) ;;
  *) no_recipe ;;
esac
if [[ $PROTOCOL == usb ]]; then  # no USB config: USB's protocol with CCL's settings of the dataset's rows
  HP+=("${USB_RECIPE[@]}")  # (the protocol's budget overrides the official one)
fi
run_train --version CCL "${ROW[@]}" "${HP[@]}" --seed 0 "$@"
