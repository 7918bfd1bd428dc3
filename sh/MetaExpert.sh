#!/usr/bin/env bash
# Meta-Expert (Hou and Jia, ICML 2025), one row of the tables:
#   bash sh/MetaExpert.sh <dataset> <index> [extra train.py arguments, which override the table]
# Its configs (YaxinHou/Meta-Expert config/, CIFAR-10 and STL-10) are USB's protocol: 2^18 steps of batch 64
# with mu 2, SGD (Nesterov) at a constant lr 0.03, weight decay 5e-4, a weight EMA of 0.999, an evaluation every
# 1,024 steps, USB's RandAugment; CPE's experts (tau 0, 2, 4; branch cuts 2 and 4), threshold 0.95, the gate and
# fusion losses from epoch 20 (--est-epoch 18), beta 0.99. It has no CIFAR-100 config: there its code's
# optimizer has USB's cosine schedule, and the branch cuts are CPE's (35, 70). The same configuration runs the
# paper's rows (their splits); the digits rows take the short recipe with the fusion from epoch 2 of 30
# (--est-epoch 0, about its 20 of 256).
set -euo pipefail
source "$(dirname "$0")/tables.sh"
table_row "${1:-}" "${2:-}"
shift 2
OWN=(--threshold 0.95 --expert-tau1 0 --expert-tau2 2 --expert-tau3 4 --est-epoch 18 --me-beta 0.99 --me-ratio 2)
case $DATASET in
  cifar10|stl10) HP=("${USB_IMB_RECIPE[@]}"); OWN+=(--cbn-cut1 2 --cbn-cut2 4) ;;
  cifar100) HP=("${USB_RECIPE[@]}"); OWN+=(--cbn-cut1 35 --cbn-cut2 70) ;;
  digits) HP=("${DIGITS_RECIPE[@]}"); OWN+=(--cbn-cut1 2 --cbn-cut2 4 --est-epoch 0) ;;
  smallimagenet*)
    # its network with the experts and the gate is its WRN-28-2 (semilearn/nets/wrn/wrn_metaexpert.py) only
    echo "error: Meta-Expert's official code cannot train on ${DATASET} (its experts exist on its WRN-28-2 only); no recipe" >&2
    exit 2 ;;
  *) no_recipe ;;
esac
run_train --version MetaExpert "${ROW[@]}" "${HP[@]}" "${OWN[@]}" --seed 0 "$@"
