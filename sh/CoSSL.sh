#!/usr/bin/env bash
# FixMatch w/ CoSSL (Fan et al., CVPR 2022), one row of the tables:
#   bash sh/CoSSL.sh <dataset> <index> [extra train.py arguments, which override the table]
set -euo pipefail
source "$(dirname "$0")/tables.sh"
table_row "${1:-}" "${2:-}"
shift 2
# CoSSL's run scripts (YUE-FAN/CoSSL run_*.sh): FixMatch pre-training, then co-learning for the
# last 100 epochs of 500 with TFE's lam ~ U(0.6, 1); the classifier's Adam weight decay 5e-4, warmed
# up for 10 epochs of 500 steps at lr_tfe 0.002. The CIFAR scripts warm it up on a TFE set made once,
# train it on strong views and in co-learning at --lr (train_cifar_fix_cossl.py); the ImageNet-127
# scripts warm it up on per-step TFE batches of weak views and train it at lr_tfe (used for every
# ImageNet variant; STL-10 keeps the CIFAR settings)
METHOD=(--threshold 0.95 --max-lam 0.6 --lr-tfe 0.002 --wd-tfe 5e-4)
if [[ $DATASET == smallimagenet* ]]; then
  METHOD+=(--tfe-view weak --tfe-warmup online --lr-classifier 0.002)
else
  METHOD+=(--tfe-view strong --tfe-warmup offline)
fi
if [[ $DATASET == digits ]]; then
  # the short recipe of every method (its SGD); co-learning for its last 6 epochs of 30 (the
  # official last fifth), the warm-up one epoch of 40 steps
  HP=("${METHOD[@]}" "${DIGITS_RECIPE[@]}" --optimizer sgd --cossl-start 960 --tfe-warmup-steps 40 \
      --lr-classifier 0.002)
else
  # the official budget: 500 epochs of 500 steps, B 64 and 64 unlabeled images (mu 1), Adam lr 0.002
  # constant; co-learning from step 200,000 (the official runs load the pre-training checkpoint of
  # epoch 401 of 500); 5,000 warm-up steps of the classifier
  HP=("${METHOD[@]}" --optimizer adam --lr 0.002 --lr-schedule constant --total-steps 250000
      --batch-size 64 --mu 1 --cossl-start 200000 --tfe-warmup-steps 5000)
fi
if [[ $PROTOCOL == usb ]]; then
  # USB's fixmatch_cossl configs: the network's SGD at the protocol's constant lr 0.03; co-learning
  # from epoch 200 of 256 (of 1024 steps), lam ~ U(0.6, 1); a classifier warm-up of 10 epochs on a TFE
  # set made once (USB's Adam at 1e-3); in co-learning the classifier keeps the official code's Adam
  # at 0.002 (USB trains its own at SGD 0.02 and 0.03: FIDELITY.md, "USB's protocol")
  HP=("${USB_IMB_RECIPE[@]}" --optimizer sgd --threshold 0.95 --max-lam 0.6 --cossl-start 204800
      --tfe-warmup offline --tfe-warmup-steps 10240 --tfe-view strong --lr-tfe 0.001 --wd-tfe 5e-4
      --lr-classifier 0.002)
fi
run_train --version CoSSL "${ROW[@]}" "${HP[@]}" --seed 0 "$@"
