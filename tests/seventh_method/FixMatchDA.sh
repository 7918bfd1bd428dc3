#!/usr/bin/env bash
# FixMatch with distribution alignment (tests/seventh_method/fixmatch_da.py), one row of the tables:
#   bash tests/seventh_method/FixMatchDA.sh <dataset> <index> [extra train.py arguments]
# (train.py runs it only where the method is registered: tests/test_new_method.py reads its recipe)
set -euo pipefail
source "$(dirname "$0")/../../sh/tables.sh"
table_row "${1:-}" "${2:-}"
shift 2
case $DATASET in
  cifar10|cifar100) HP=(--lr 0.03 --total-steps 250000 --batch-size 64 --mu 7 --threshold 0.95 --da-momentum 0.999) ;;
  digits)           HP=("${DIGITS_RECIPE[@]}" --da-momentum 0.99) ;;
  *)                no_recipe ;;
esac
run_train --version FixMatchDA "${ROW[@]}" "${HP[@]}" --seed 0 "$@"
