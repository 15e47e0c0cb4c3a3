# Shared by script_pretrain.sh, script_action_classification.sh and script_action_retrieval.sh.
# Source it; then call `run_config NAME` for each chosen configuration and `launch SCRIPT ARGS...`.
#
# Environment (all optional):
#   GPUS=0,1,2,3          CUDA_VISIBLE_DEVICES for the run (empty: leave it as it is)
#   LAUNCHER=python       python: one process, DataParallel over the visible GPUs (the reference's way)
#                         torchrun: DistributedDataParallel, one process per GPU (NPROC of them)
#   NPROC=<count of GPUS> processes per machine for torchrun
#   NNODES=1 NODE_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500   several machines with torchrun
#   DATA_ROOT=./data      where data_gen wrote NTU-RGB-D-60-AGCN/ ...
#   CHECKPOINT_ROOT=./checkpoints   where pretraining writes and evaluation reads checkpoints
#   EXTRA_ARGS=""         appended to every command (e.g. "--amp" or "-j 16")
#   DRY_RUN=1             print the commands instead of running them
set -euo pipefail

GPUS="${GPUS-0,1,2,3}"
LAUNCHER="${LAUNCHER:-python}"
NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
DATA_ROOT="${DATA_ROOT:-./data}"
CHECKPOINT_ROOT="${CHECKPOINT_ROOT:-./checkpoints}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
DRY_RUN="${DRY_RUN:-0}"
PYTHON="${PYTHON:-python}"

if [[ -z "${NPROC:-}" ]]; then
  if [[ -n "$GPUS" ]]; then
    NPROC=$(awk -F, '{print NF}' <<<"$GPUS")
  else
    NPROC=1
  fi
fi

# launch SCRIPT ARG... : run one python entry point with the chosen launcher.
launch() {
  local script="$1"; shift
  local cmd=()
  case "$LAUNCHER" in
    python)
      cmd=("$PYTHON" "$script") ;;
    torchrun)
      cmd=("$PYTHON" -m torch.distributed.run --nproc_per_node="$NPROC" --nnodes="$NNODES"
           --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" "$script") ;;
    *)
      echo "LAUNCHER must be python or torchrun, not '$LAUNCHER'" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2206
  local extra=($EXTRA_ARGS)
  cmd+=("$@" --data-root "$DATA_ROOT" "${extra[@]}")
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "${cmd[@]}"; printf '\n'
  elif [[ -n "$GPUS" ]]; then
    CUDA_VISIBLE_DEVICES="$GPUS" "${cmd[@]}"
  else
    "${cmd[@]}"
  fi
}

# dispatch "$@" : run the configuration named by the first argument, all of them, or list them.
# Expects CONFIGS (array of names) and a function config_<name> for each.
dispatch() {
  local choice="${1:-}"
  if [[ -z "$choice" || "$choice" == "-h" || "$choice" == "--help" || "$choice" == "list" ]]; then
    echo "usage: bash $(basename "$0") CONFIG|all   (environment: see scripts/common.sh)"
    echo "configurations: ${CONFIGS[*]}"
    [[ "$choice" == "list" || "$choice" == "-h" || "$choice" == "--help" ]] && return 0
    return 2
  fi
  if [[ "$choice" == all ]]; then
    local name
    for name in "${CONFIGS[@]}"; do "config_${name}"; done
    return 0
  fi
  local name
  for name in "${CONFIGS[@]}"; do
    if [[ "$name" == "$choice" ]]; then "config_${name}"; return 0; fi
  done
  echo "unknown configuration '$choice'; expected one of: ${CONFIGS[*]} all" >&2
  return 2
}

# run_name REPRESENTATION : the reference's checkpoint folder name,
# e.g. seq-based_and_graph-based -> interskeleton_seq_based_graph_based
run_name() {
  local name="interskeleton_${1//-/_}"
  echo "${name//_and_/_}"
}
