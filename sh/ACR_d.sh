#!/usr/bin/env bash
# ACR_d (ACR without anchor distributions, the paper's ACR-dagger), one row of the tables:
#   bash sh/ACR_d.sh <dataset> <index> [extra train.py arguments, which override the table]
set -euo pipefail
source "$(dirname "$0")/tables.sh"
table_row "${1:-}" "${2:-}"
shift 2
# the same hyper-parameters for every dataset (sh/ACR.sh runs them too, with ACR_VERSION=ACR)
HP=(--lr 0.03 --total-steps 250000 --batch-size 64 --mu 1)
OWN=(--tau1 2 --tau12 2 --tau2 2 --threshold 0.95 --ema-u 0.99 --est-epoch 5)
if [[ $DATASET == digits ]]; then
  HP+=("${DIGITS_RECIPE[@]}")
fi
if [[ $PROTOCOL == usb ]]; then  # no USB config: USB's protocol with ACR's settings
  HP=("${USB_RECIPE[@]}")
fi
run_train --version "${ACR_VERSION:-ACR_d}" "${ROW[@]}" "${HP[@]}" "${OWN[@]}" --seed 0 "$@"
