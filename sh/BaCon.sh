#!/usr/bin/env bash
# BaCon (Feng, Xie, Fang and Lin, AAAI 2024), one row of the tables:
#   bash sh/BaCon.sh <dataset> <index> [extra train.py arguments, which override the table]
# Its configs (fqhank/AAAI24-BaCon-CISSL config/classic_cv_imb/fixmatch_bacon/, CIFAR-10, CIFAR-100, STL-10, SVHN)
# are one configuration on USB: 300,000 steps of batch 64 with mu 2, an evaluation every 1,000, SGD (Nesterov) at
# a constant lr 0.03 with weight decay 5e-4 on every parameter (its ImbAlgorithmBase: bn_wd_skip False, no
# scheduler), a weight EMA of 0.999, USB's WRN-28-2 and RandAugment; threshold 0.95, ABC's 0.95 and weight 1,
# the contrastive loss after step 100,000. The same configuration runs every CIFAR and STL-10 row (the paper's
# and USB's); the digits rows take the short recipe with the contrastive loss after a third of it.
set -euo pipefail
source "$(dirname "$0")/tables.sh"
table_row "${1:-}" "${2:-}"
shift 2
OWN=(--threshold 0.95 --abc-threshold 0.95 --abc-loss-ratio 1 --contrast-after 100000)
case $DATASET in
  cifar10|cifar100|stl10)
    HP=("${USB_RECIPE[@]}" --total-steps 300000 --eval-step 1000 --lr-schedule constant --wdecay-all) ;;
  digits) HP=("${DIGITS_RECIPE[@]}" --wdecay-all); OWN+=(--contrast-after 400) ;;
  smallimagenet*)
    # its auxiliary head and projection wrap its WRN-28-2 configs only (no ImageNet config, no other network)
    echo "error: BaCon's official code has no recipe for ${DATASET} (its configs and network are CIFAR, STL-10 and SVHN's WRN-28-2); no recipe" >&2
    exit 2 ;;
  *) no_recipe ;;
esac
run_train --version BaCon "${ROW[@]}" "${HP[@]}" "${OWN[@]}" --seed 0 "$@"
