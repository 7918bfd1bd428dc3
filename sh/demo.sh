#!/usr/bin/env bash
# A few-minute CPU demo on real handwritten digits: SimPro vs FixMatch when the unlabeled
# distribution is reversed and when it is consistent, then a table of top-1, tail-class
# accuracy and the KL of the estimated unlabeled prior. Options: see tools/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m tools.demo "$@"
