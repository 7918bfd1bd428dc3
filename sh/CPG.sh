#!/usr/bin/env bash
# CPG (Hou, Han, Jia, Liu and Hou, NeurIPS 2025), one row of the tables:
#   bash sh/CPG.sh <dataset> <index> [extra train.py arguments, which override the table]
# Its configs (YaxinHou/CPG config/config-*/cpg/, identical but for the split and the seed) are USB's protocol
# with mu 7 and its FixMatch's cosine schedule: 2^18 steps of batch 64, SGD (Nesterov) at lr 0.03, weight decay
# 5e-4, a weight EMA of 0.999, an evaluation every 1,024 steps, USB's WRN-28-2 (its extra rotation head is never
# used) and USB's RandAugment; threshold 0.95 (0.855 after label smoothing 0.1), warm-up 30 epochs, a window of
# 5 epochs, an image selected when remembered more than 12 times with one label in more than 80% of them, 10
# feature copies. The same configuration runs every CIFAR row (the paper's, USB's and CPG's own: cifar10 rows
# 26-37); the digits rows take the short recipe with its schedule scaled to 30 epochs.
set -euo pipefail
source "$(dirname "$0")/tables.sh"
table_row "${1:-}" "${2:-}"
shift 2
OWN=(--threshold 0.95 --label-smoothing 0.1 --cpg-warmup-epochs 30 --cpg-update-epochs 5 --cpg-min-hits 12
     --cpg-agreement 0.8 --cpg-copies 10)
case $DATASET in
  cifar10|cifar100) HP=("${USB_RECIPE[@]}" --mu 7) ;;
  digits)
    # 40 steps of 48 unlabeled images draw each of its 405 pool images about 4.7 times an epoch (CIFAR-10's pool
    # about 40 times): warm-up 4 of 30 epochs (its 30 of 256), windows of 3 epochs, selected when remembered
    # more than once (its 12 of about 200 draws)
    HP=("${DIGITS_RECIPE[@]}"); OWN+=(--cpg-warmup-epochs 4 --cpg-update-epochs 3 --cpg-min-hits 1) ;;
  stl10|smallimagenet*)
    # cpg.py sets its schedule (memory_step, update_step) for cifar10, cifar100, food101 and svhn only
    echo "error: CPG's official code cannot train on ${DATASET} (cpg.py sets its update schedule for CIFAR-10, CIFAR-100, SVHN and Food-101 only); no recipe" >&2
    exit 2 ;;
  *) no_recipe ;;
esac
run_train --version CPG "${ROW[@]}" "${HP[@]}" "${OWN[@]}" --seed 0 "$@"
