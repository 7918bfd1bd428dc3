#!/usr/bin/env bash
# SimPro, one row of the paper's tables:
#   bash sh/SimPro.sh <dataset> <index> [extra train.py arguments, which override the table]
# e.g. bash sh/SimPro.sh cifar10 0     # gamma_l=150 consistent (rows: see sh/tables.sh or a bad index)
set -euo pipefail
source "$(dirname "$0")/tables.sh"
table_row "${1:-}" "${2:-}"
shift 2
# HP: the training budget; OWN: SimPro's own settings
case $DATASET in
  cifar10)  HP=(--lr 0.17 --total-steps 43000 --batch-size 64 --mu 8); OWN=(--tau 2.0 --threshold 0.95 --ema-u 0.9) ;;
  cifar100) HP=(--lr 0.17 --total-steps 43000 --batch-size 64 --mu 8); OWN=(--tau 1.0 --threshold 0.2 --ema-u 0.9) ;;
  stl10)    HP=(--lr 0.17 --total-steps 43000 --batch-size 64 --mu 16); OWN=(--tau 2.0 --threshold 0.95 --ema-u 0.9) ;;
  smallimagenet|smallimagenet_1k)
            HP=(--lr 0.01 --total-steps 250000 --batch-size 32 --mu 2); OWN=(--tau 1.0 --threshold 0.2 --ema-u 0.9) ;;
  digits)   HP=("${DIGITS_RECIPE[@]}"); OWN=(--tau 2.0 --ema-u 0.9) ;;
  *)        no_recipe ;;
esac
if [[ $PROTOCOL == usb ]]; then  # no USB config: USB's protocol with SimPro's settings of the dataset
  HP=("${USB_RECIPE[@]}")
fi
run_train --version SimPro "${ROW[@]}" "${HP[@]}" "${OWN[@]}" --seed 0 "$@"
