#!/usr/bin/env bash
# CPE (Ma, Elezi, Deng, Dong and Xu, AAAI 2024), one row of the tables:
#   bash sh/CPE.sh <dataset> <index> [extra train.py arguments, which override the table]
# Its configs (machengcheng2016/CPE-LTSSL config/classic_cv_imb/fixmatch_cpe/) are USB's protocol: 2^18 steps of
# batch 64 with mu 2, SGD (Nesterov) at a constant lr 0.03, weight decay 5e-4, a weight EMA of 0.999,
# an evaluation every 1,024 steps, USB's WRN-28-2 with its classwise BatchNorm and USB's RandAugment; experts
# at tau 0, 2 and 4, threshold 0.95; the branch cuts 2 and 4 for 10 classes, 35 and 70 for 100. The same
# configuration runs the paper's rows (their splits), and the digits rows with the short recipe.
set -euo pipefail
source "$(dirname "$0")/tables.sh"
table_row "${1:-}" "${2:-}"
shift 2
OWN=(--threshold 0.95 --expert-tau1 0 --expert-tau2 2 --expert-tau3 4)
case $DATASET in
  cifar10|stl10|digits) OWN+=(--cbn-cut1 2 --cbn-cut2 4) ;;
  cifar100) OWN+=(--cbn-cut1 35 --cbn-cut2 70) ;;
  smallimagenet*)
    # its only network with the experts is the WRN-28-2 (semilearn/nets/wrn/wrn_cbn.py); it has no config there
    echo "error: CPE's official code cannot train on ${DATASET} (its experts exist on its WRN-28-2 only); no recipe" >&2
    exit 2 ;;
  *) no_recipe ;;
esac
if [[ $DATASET == digits ]]; then
  HP=("${DIGITS_RECIPE[@]}")
else
  HP=("${USB_IMB_RECIPE[@]}")
fi
run_train --version CPE "${ROW[@]}" "${HP[@]}" "${OWN[@]}" --seed 0 "$@"
