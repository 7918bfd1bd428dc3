# The experiment tables of the paper (SPEC section 8), shared by every launcher.
# `table_row DATASET INDEX` sets ROW (an array of train.py arguments for that row) and
# DATASET, or prints the valid choices and exits non-zero.

MODES=(consistent reversed shuffled middle head-tail)

table_row() {
  DATASET=${1:-}
  local index=${2:-} gl gu md n m sizes=()
  case $DATASET in
    cifar10)
      n=500; m=4000
      gl=(150 150 150 150 150 100 100 100 100 100 150 150 150 150 150 150 150 150 150 100)
      gu=(150 1 150 150 150 100 1 100 100 100 120 90 60 30 120 90 60 30 150 100)
      md=(0 0 1 3 4 0 0 1 3 4 0 0 0 0 1 1 1 1 2 2) ;;
    cifar100)
      n=50; m=400
      gl=(20 20 20 20 20 10 10 10 10 10 20)
      gu=(20 1 20 20 20 10 1 10 10 10 20)
      md=(0 0 1 3 4 0 0 1 3 4 2) ;;
    stl10)
      n=450; m=100000; gl=(10 20); gu=(1 1); md=(0 0) ;;
    smallimagenet)
      n=28000; m=250000; gl=(286 286); gu=(286 286); md=(0 0); sizes=(32 64) ;;
    smallimagenet_1k)
      n=256; m=1024; gl=(256 256); gu=(256 256); md=(0 0); sizes=(32 64) ;;
    digits)  # real handwritten digits (scikit-learn), for CPU runs of a minute or two
      n=20; m=120; gl=(20 20 20 20 20); gu=(20 1 20 20 20); md=(0 0 1 3 4) ;;
    *)
      echo "error: unknown dataset '${DATASET}'; choose one of: cifar10 cifar100 stl10 smallimagenet smallimagenet_1k digits" >&2
      echo "usage: bash $0 <dataset> <index> [extra train.py arguments]" >&2
      exit 2 ;;
  esac
  if ! [[ $index =~ ^[0-9]+$ ]] || (( index >= ${#gl[@]} )); then
    echo "error: index '${index}' is not a row of ${DATASET}; choose one of:" >&2
    local i
    for i in "${!gl[@]}"; do
      if (( ${#sizes[@]} )); then
        echo "  $i: ${sizes[$i]}x${sizes[$i]}" >&2
      elif [[ $DATASET == stl10 ]]; then
        echo "  $i: gamma_l=${gl[$i]}" >&2
      else
        echo "  $i: gamma_l=${gl[$i]} gamma_u=${gu[$i]} ${MODES[${md[$i]}]}" >&2
      fi
    done
    exit 2
  fi
  ROW=(--dataset "$DATASET" --num-max "$n" --num-max-u "$m" --imb-ratio-label "${gl[$index]}"
       --imb-ratio-unlabel "${gu[$index]}" --flag-reverse-LT "${md[$index]}")
  if (( ${#sizes[@]} )); then
    ROW+=(--img-size "${sizes[$index]}")
  fi
}

# The recipe of the digits rows, the same for every method: a WRN-10-1 at 16x16, 30 epochs of
# 40 steps. BatchNorm momentum 0.1 instead of 0.001: with 0.001 the EMA model's running statistics
# stay near their initial values for hundreds of steps, longer than such a short run. Batch 8 with
# mu 6 makes one pass over the labeled set as long as one over the unlabeled set (scale ratio 1).
DIGITS_RECIPE=(--depth 10 --widen-factor 1 --bn-momentum 0.1 --lr 0.1 --total-steps 1200 --eval-step 40
               --batch-size 8 --mu 6 --ema-decay 0.99 --threshold 0.95 --num-workers 0)

# Run train.py from the repository root with the given arguments, showing the command. With
# NPROC > 1 or NNODES > 1 in the environment it runs under torchrun (NODE_RANK, MASTER_ADDR and
# MASTER_PORT as torchrun's flags); --batch-size stays per process.
run_train() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  local command=("${PYTHON:-python}")
  if (( ${NPROC:-1} > 1 || ${NNODES:-1} > 1 )); then
    command+=(-m torch.distributed.run --nproc_per_node "${NPROC:-1}" --nnodes "${NNODES:-1}"
              --node_rank "${NODE_RANK:-0}" --master_addr "${MASTER_ADDR:-127.0.0.1}"
              --master_port "${MASTER_PORT:-29500}")
  fi
  echo "+ ${command[*]} train.py $*"
  exec "${command[@]}" train.py "$@"
}
