# The experiment tables of the paper (its Tables 1-3; LeapLabTHU/SimPro sh/SimPro.sh), shared by every launcher.
# `table_row DATASET INDEX` sets ROW (an array of train.py arguments for that row) and
# DATASET, or prints the valid choices and exits with status 2.

MODES=(consistent reversed shuffled middle head-tail seed-shuffled)   # --flag-reverse-LT 0..5

# One row per line, its index is its place in the list (0, 1, ...):
#   row gamma_l gamma_u mode [image size]    (gamma_u 1 is the uniform setting, whatever the mode)
#   usb_row gamma_l gamma_u mode N1 M1       (a row of USB's long-tailed protocol, with its own N1 and M1:
#                                             microsoft/Semi-supervised-learning config/classic_cv_imb/)
#   cpg_row gamma mode N1 M1                 (a row of CPG's protocol, gamma_u = gamma_l: YaxinHou/CPG config/;
#                                             its long-tail, reverse-long-tail and random orders are modes 0, 1, 5)
# To add a setting, append a line to its dataset and run it by its new index. `table_row` sets
# PROTOCOL to paper (the SimPro paper's tables), usb or cpg, which selects a launcher's recipe.
DATASETS=(cifar10 cifar100 stl10 smallimagenet smallimagenet_1k digits)

# dataset_rows DATASET: ROWS (one "gamma_l gamma_u mode [size]" per row), N and M; status 1 for an
# unknown dataset.
# READS: the split flags the dataset reads (train.py refuses the others: dataset.data.DATASETS, unused).
dataset_rows() {
  local n m
  ROWS=()
  READS=(--num-max --num-max-u --imb-ratio-label --imb-ratio-unlabel --flag-reverse-LT)
  case $1 in
    cifar10)  # N1=500, M1=4000
      n=500; m=4000
      row 150 150 0   # 0: consistent, gamma 150
      row 150 1   0   # 1: uniform
      row 150 150 1   # 2: reversed
      row 150 150 3   # 3: middle
      row 150 150 4   # 4: head-tail
      row 100 100 0   # 5: consistent, gamma 100
      row 100 1   0   # 6: uniform
      row 100 100 1   # 7: reversed
      row 100 100 3   # 8: middle
      row 100 100 4   # 9: head-tail
      row 150 120 0   # 10: consistent, gamma_u 120
      row 150 90  0   # 11: consistent, gamma_u 90
      row 150 60  0   # 12: consistent, gamma_u 60
      row 150 30  0   # 13: consistent, gamma_u 30
      row 150 120 1   # 14: reversed, gamma_u 120
      row 150 90  1   # 15: reversed, gamma_u 90
      row 150 60  1   # 16: reversed, gamma_u 60
      row 150 30  1   # 17: reversed, gamma_u 30
      row 150 150 2   # 18: shuffled, gamma 150
      row 100 100 2   # 19: shuffled, gamma 100
      usb_row 100 100 0 1500 3000   # 20: USB, consistent, gamma 100
      usb_row 100 100 1 1500 3000   # 21: USB, reversed (its gamma_u -100)
      usb_row 150 150 0 1500 3000   # 22: USB, consistent, gamma 150
      usb_row 100 100 0 500 4000    # 23: USB, consistent, gamma 100
      usb_row 100 100 1 500 4000    # 24: USB, reversed
      usb_row 150 150 0 500 4000    # 25: USB, consistent, gamma 150
      cpg_row 50 0 400 4600    # 26: CPG, long-tail (consistent), gamma 50
      cpg_row 50 1 400 4600    # 27: CPG, reverse-long-tail (reversed), gamma 50
      cpg_row 50 5 400 4600    # 28: CPG, random (seed-shuffled), gamma 50
      cpg_row 100 0 400 4600   # 29: CPG, long-tail, gamma 100
      cpg_row 100 1 400 4600   # 30: CPG, reverse-long-tail, gamma 100
      cpg_row 100 5 400 4600   # 31: CPG, random, gamma 100
      cpg_row 150 0 400 4600   # 32: CPG, long-tail, gamma 150
      cpg_row 150 1 400 4600   # 33: CPG, reverse-long-tail, gamma 150
      cpg_row 150 5 400 4600   # 34: CPG, random, gamma 150
      cpg_row 200 0 400 4600   # 35: CPG, long-tail, gamma 200
      cpg_row 200 1 400 4600   # 36: CPG, reverse-long-tail, gamma 200
      cpg_row 200 5 400 4600   # 37: CPG, random, gamma 200
      ;;
    cifar100)  # N1=50, M1=400
      n=50; m=400
      row 20 20 0   # 0: consistent, gamma 20
      row 20 1  0   # 1: uniform
      row 20 20 1   # 2: reversed
      row 20 20 3   # 3: middle
      row 20 20 4   # 4: head-tail
      row 10 10 0   # 5: consistent, gamma 10
      row 10 1  0   # 6: uniform
      row 10 10 1   # 7: reversed
      row 10 10 3   # 8: middle
      row 10 10 4   # 9: head-tail
      row 20 20 2   # 10: shuffled, gamma 20
      usb_row 10 10 0 150 300   # 11: USB, consistent, gamma 10
      usb_row 10 10 1 150 300   # 12: USB, reversed (its gamma_u -10)
      usb_row 15 15 0 150 300   # 13: USB, consistent, gamma 15
      cpg_row 10 0 50 450   # 14: CPG, long-tail (consistent), gamma 10
      cpg_row 10 1 50 450   # 15: CPG, reverse-long-tail (reversed), gamma 10
      cpg_row 10 5 50 450   # 16: CPG, random (seed-shuffled), gamma 10
      cpg_row 15 0 50 450   # 17: CPG, long-tail, gamma 15
      cpg_row 15 1 50 450   # 18: CPG, reverse-long-tail, gamma 15
      cpg_row 15 5 50 450   # 19: CPG, random, gamma 15
      cpg_row 20 0 50 450   # 20: CPG, long-tail, gamma 20
      cpg_row 20 1 50 450   # 21: CPG, reverse-long-tail, gamma 20
      cpg_row 20 5 50 450   # 22: CPG, random, gamma 20
      ;;
    stl10)  # N1=450; the unlabeled set is all of unlabeled_X.bin (gamma_u and mode unused)
      n=450; m=100000; READS=(--num-max --imb-ratio-label)
      row 10 1 0   # 0: gamma_l 10
      row 20 1 0   # 1: gamma_l 20
      usb_row 10 1 0 150 100000   # 2: USB, N1 150, gamma_l 10
      usb_row 20 1 0 150 100000   # 3: USB, N1 150, gamma_l 20
      ;;
    smallimagenet)  # ImageNet-127: 10% of each class labeled (N1, M1 and the ratios unused)
      n=28000; m=250000; READS=()
      row 286 286 0 32   # 0: 32x32
      row 286 286 0 64   # 1: 64x64
      ;;
    smallimagenet_1k)  # s_i long-tailed from N1 + M1 = 1280 with gamma 256, 20% of each labeled
      n=256; m=1024; READS=(--num-max --num-max-u --imb-ratio-label)
      row 256 256 0 32   # 0: 32x32
      row 256 256 0 64   # 1: 64x64
      ;;
    digits)  # real handwritten digits (scikit-learn), for CPU runs of a minute or two
      n=20; m=120
      row 20 20 0   # 0: consistent
      row 20 1  0   # 1: uniform
      row 20 20 1   # 2: reversed
      row 20 20 3   # 3: middle
      row 20 20 4   # 4: head-tail
      ;;
    *)
      return 1 ;;
  esac
  N=$n; M=$m
}

# The rows of DATASET, one per line, on stderr.
list_rows() {
  local i
  for i in "${!ROWS[@]}"; do
    echo "  $i: $(DATASET=$1 describe_row ${ROWS[$i]})" >&2
  done
}

usage() {
  echo "usage: bash $0 <dataset> <index> [extra train.py arguments, which override the table]" >&2
}

table_row() {
  DATASET=${1:-}
  local index=${2:-} d
  if [[ -z $DATASET || $DATASET == -h || $DATASET == --help ]]; then
    usage
    for d in "${DATASETS[@]}"; do
      dataset_rows "$d"
      echo "$d:" >&2
      list_rows "$d"
    done
    exit 2
  fi
  if ! dataset_rows "$DATASET"; then
    echo "error: unknown dataset '${DATASET}'; choose one of: ${DATASETS[*]}" >&2
    usage
    exit 2
  fi
  # an index is decimal digits (010 is row 10, not octal 8)
  if ! [[ $index =~ ^[0-9]+$ ]] || (( 10#$index >= ${#ROWS[@]} )); then
    echo "error: index '${index}' is not a row of ${DATASET}; choose one of:" >&2
    list_rows "$DATASET"
    exit 2
  fi
  index=$((10#$index))
  local gl gu md size n m protocol flag
  read -r gl gu md size n m protocol <<< "${ROWS[$index]}"
  PROTOCOL=paper
  if [[ -n $n ]]; then
    PROTOCOL=$protocol; N=$n; M=$m
  fi
  local -A split=([--num-max]=$N [--num-max-u]=$M [--imb-ratio-label]=$gl [--imb-ratio-unlabel]=$gu
                  [--flag-reverse-LT]=$md)
  ROW=(--dataset "$DATASET")
  for flag in "${READS[@]}"; do
    ROW+=("$flag" "${split[$flag]}")
  done
  if [[ -n $size && $size != - ]]; then
    ROW+=(--img-size "$size")
  fi
}

row() { ROWS+=("$*"); }
usb_row() { ROWS+=("$1 $2 $3 - $4 $5 usb"); }
cpg_row() { ROWS+=("$1 $1 $2 - $3 $4 cpg"); }

# A row in words, with the paper's setting names: "gamma_l=150 gamma_u=1 uniform", "64x64", ...
describe_row() {
  local gl=$1 gu=$2 md=$3 size=${4:-} n=${5:-} m=${6:-} protocol=${7:-}
  if [[ $protocol == cpg ]]; then
    local order=([0]=long-tail [1]=reverse-long-tail [5]=random)
    echo "CPG protocol: N1=$n M1=$m, $(describe_row "$gl" "$gu" "$md") (its ${order[$md]})"
  elif [[ -n $n ]]; then
    local words
    words=$(describe_row "$gl" "$gu" "$md")
    if [[ $DATASET == stl10 ]]; then
      echo "USB protocol: N1=$n, $words"
    else
      echo "USB protocol: N1=$n M1=$m, $words"
    fi
  elif [[ -n $size ]]; then
    echo "${size}x${size}"
  elif [[ $DATASET == stl10 ]]; then
    echo "gamma_l=$gl"
  elif [[ $gu == 1 ]]; then
    echo "gamma_l=$gl gamma_u=1 uniform"
  else
    echo "gamma_l=$gl gamma_u=$gu ${MODES[$md]}"
  fi
}

# USB's long-tailed protocol (microsoft/Semi-supervised-learning config/classic_cv_imb/), for its rows: 2^18
# steps of batch 64 with mu 2, evaluated every 1024 (an epoch), SGD (momentum 0.9, Nesterov) at lr 0.03 with
# weight decay 5e-4 (not on biases and BatchNorm) and its FixMatch's cosine schedule, a weight EMA of 0.999,
# its WRN-28-2 and its RandAugment(3, 5). A method adds its own settings (its USB config's, where it has one).
USB_RECIPE=(--arch wideresnet_usb --randaugment usb --total-steps 262144 --eval-step 1024 --batch-size 64 --mu 2
            --lr 0.03 --wdecay 5e-4 --ema-decay 0.999 --threshold 0.95)
# USB's long-tailed algorithms (semilearn/imb_algorithms/) keep the learning rate constant
# (ImbAlgorithmBase.set_optimizer: no scheduler)
USB_IMB_RECIPE=("${USB_RECIPE[@]}" --lr-schedule constant)

# The recipe of the digits rows, the same for every method: a WRN-10-1 at 16x16, 30 epochs of
# 40 steps. BatchNorm momentum 0.1 instead of 0.001: with 0.001 the EMA model's running statistics
# stay near their initial values for hundreds of steps, longer than such a short run. Batch 8 with
# mu 6 makes one pass over the labeled set as long as one over the unlabeled set (scale ratio 1).
DIGITS_RECIPE=(--depth 10 --widen-factor 1 --bn-momentum 0.1 --lr 0.1 --total-steps 1200 --eval-step 40
               --batch-size 8 --mu 6 --ema-decay 0.99 --threshold 0.95 --num-workers 0)

# A launcher's `case` has no recipe for the dataset: say so and stop (never train with defaults).
no_recipe() {
  echo "error: $(basename "$0") has no recipe for ${DATASET}; add one to its case" >&2
  exit 2
}

# Run train.py from the repository root with the given arguments, showing the command. With
# NPROC > 1 or NNODES > 1 in the environment it runs under torchrun (NODE_RANK, MASTER_ADDR and
# MASTER_PORT as torchrun's flags); --batch-size stays per process. With PRINT_ARGS=1 it prints
# train.py's arguments, one per line, and runs nothing (how train.py and tools.report read a
# launcher's recipe, which is written only here).
# ARGS: the arguments "$@" with each flag once, where it was given last (with its values): the
# command line's extra arguments override the table's, and the command shown is what train.py reads.
# --flag, --no-flag and --flag=value are one flag.
last_given() {
  local -A last=()
  local -a given=("$@")
  local i name drop=0
  for i in "${!given[@]}"; do
    if [[ ${given[$i]} == --* ]]; then
      name=${given[$i]%%=*}; name=${name#--}; last[${name#no-}]=$i
    fi
  done
  ARGS=()
  for i in "${!given[@]}"; do
    if [[ ${given[$i]} == --* ]]; then
      name=${given[$i]%%=*}; name=${name#--}; drop=$(( ${last[${name#no-}]} != i ))
    fi
    if (( ! drop )); then
      ARGS+=("${given[$i]}")
    fi
  done
}

run_train() {
  last_given "$@"
  if [[ -n ${PRINT_ARGS:-} ]]; then
    printf '%s\n' "${ARGS[@]}"
    exit 0
  fi
  local variable
  for variable in NPROC NNODES; do
    if ! [[ ${!variable:-1} =~ ^[0-9]+$ ]] || (( 10#${!variable:-1} < 1 )); then
      echo "error: ${variable}=${!variable} is not allowed; use a whole number >= 1 (processes per machine for NPROC, machines for NNODES)" >&2
      exit 2
    fi
  done
  if [[ -n ${NODE_RANK:-} ]] && ! { [[ $NODE_RANK =~ ^[0-9]+$ ]] && (( 10#$NODE_RANK < 10#${NNODES:-1} )); }; then
    echo "error: NODE_RANK=${NODE_RANK} is not allowed; use a whole number from 0 to NNODES - 1 = $((10#${NNODES:-1} - 1))" >&2
    exit 2
  fi
  if [[ -n ${MASTER_PORT:-} ]] && ! { [[ $MASTER_PORT =~ ^[0-9]{1,5}$ ]] && (( 10#$MASTER_PORT >= 1 && 10#$MASTER_PORT <= 65535 )); }; then
    echo "error: MASTER_PORT=${MASTER_PORT} is not allowed; use a port from 1 to 65535" >&2
    exit 2
  fi
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  if ! command -v "${PYTHON:-python}" > /dev/null; then
    echo "error: no '${PYTHON:-python}' to run train.py with; set PYTHON to your interpreter, e.g. PYTHON=python3 bash $0 ..." >&2
    exit 2
  fi
  local command=("${PYTHON:-python}")
  if (( 10#${NPROC:-1} > 1 || 10#${NNODES:-1} > 1 )); then
    command+=(-m torch.distributed.run --nproc_per_node "$((10#${NPROC:-1}))" --nnodes "$((10#${NNODES:-1}))"
              --node_rank "${NODE_RANK:-0}" --master_addr "${MASTER_ADDR:-127.0.0.1}"
              --master_port "${MASTER_PORT:-29500}")
  fi
  echo "+ ${command[*]} train.py ${ARGS[*]}"
  exec "${command[@]}" train.py "${ARGS[@]}"
}
