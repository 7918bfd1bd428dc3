#!/usr/bin/env bash
# ACR (Wei and Gan, CVPR 2023) with its anchor distributions and dynamic tau1, one row of the tables:
#   bash sh/ACR.sh <dataset> <index> [extra train.py arguments, which override the table]
# ACR's recipe is ACR_d's (ACR's own launchers, the same for every dataset; mu 1, its script
# default; --tau1 is tau1's maximum; the estimate of the unlabeled distribution starts after epoch
# --est-epoch): sh/ACR_d.sh, run as --version ACR.
ACR_VERSION=ACR
source "$(dirname "$0")/ACR_d.sh"
