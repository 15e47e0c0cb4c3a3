# Shared by script_pretrain.sh, script_action_classification.sh and script_action_retrieval.sh.
# A recipe script sources this file, defines a function config_<name> for each configuration and the
# array CONFIGS of their names, then calls `dispatch "$@"`, so that every script takes
#   bash SCRIPT CONFIG|all|list [-- EXTRA ARGUMENTS...]
#
# Environment (all optional):
#   GPUS=0,1,2,3          CUDA_VISIBLE_DEVICES for the run (empty: leave it as it is)
#   LAUNCHER=python       python: one process, DataParallel over the visible GPUs (the reference's way)
#                         torchrun: DistributedDataParallel, one process per GPU (NPROC of them)
#   NPROC=<count of GPUS> processes per machine for torchrun
#   NNODES=1 NODE_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500   several machines with torchrun
#   DATA_ROOT=./data      where data_gen wrote NTU-RGB-D-60-AGCN/ ...
#   CHECKPOINT_ROOT=./checkpoints   where pretraining writes and evaluation reads checkpoints
#   RUNS_ROOT=./runs      every run's metrics JSON, at a path `python scripts/ledger.py RUNS_ROOT` reads:
#                         <setting>/<pretraining>/pretrain/metrics.json (pretraining) and
#                         <setting>/<pretraining>/<protocol>/<encoder>/seed<N>/metrics.json (evaluation),
#                         e.g. ntu60_cross_view/seq-based_and_graph-based/linear/seq-based/seed0/metrics.json
#   SEEDS="0"             seeds of each linear-classification and KNN-retrieval configuration
#   SEMI_SEEDS="0 1 2 3 4"                seeds of each semi-supervised label fraction
#   LABEL_FRACTIONS="0.01 0.05 0.1 0.2"   label fractions of the semi-supervised configurations
#   EXTRA_ARGS=""         appended to every command (e.g. "--amp -j 16"): split at white space, never
#                         glob-expanded; arguments after `--` on the command line are appended the same way
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
RUNS_ROOT="${RUNS_ROOT:-./runs}"
SEEDS="${SEEDS:-0}"
SEMI_SEEDS="${SEMI_SEEDS:-0 1 2 3 4}"
LABEL_FRACTIONS="${LABEL_FRACTIONS:-0.01 0.05 0.1 0.2}"
DRY_RUN="${DRY_RUN:-0}"
PYTHON="${PYTHON:-python}"

# `read -a` splits at IFS and, unlike an unquoted expansion, never expands '*' or '?' against files.
EXTRA=()
read -r -a EXTRA <<<"${EXTRA_ARGS:-}" || true

if [[ -z "${NPROC:-}" ]]; then
  if [[ -n "$GPUS" ]]; then
    NPROC=$(awk -F, '{print NF}' <<<"$GPUS")
  else
    NPROC=1
  fi
fi

die() { echo "$(basename "$0"): $*" >&2; exit 2; }

# split_words VALUE NAME PATTERN WHAT : VALUE's words into the array WORDS; exit 2 naming NAME when VALUE
# is empty or a word does not match the extended regular expression PATTERN.
split_words() {
  local word
  WORDS=()
  read -r -a WORDS <<<"$1" || true
  [[ ${#WORDS[@]} -gt 0 ]] || die "$2 is empty; expected $4"
  for word in "${WORDS[@]}"; do
    [[ "$word" =~ $3 ]] || die "$2: expected $4, got '$word'"
  done
}

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
      die "LAUNCHER must be python or torchrun, not '$LAUNCHER'" ;;
  esac
  # ${a[@]+...}: an empty array under `set -u` on bash 3.2 (macOS) too.
  cmd+=("$@" --data-root "$DATA_ROOT" ${EXTRA[@]+"${EXTRA[@]}"})
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "${cmd[@]}"; printf '\n'
  elif [[ -n "$GPUS" ]]; then
    CUDA_VISIBLE_DEVICES="$GPUS" "${cmd[@]}"
  else
    "${cmd[@]}"
  fi
}

# dispatch "$@" : run the configuration named by the first argument, all of them, or list them;
# arguments after `--` join EXTRA_ARGS. Expects CONFIGS (array of names) and a function config_<name>.
dispatch() {
  local choice="${1:-}" name
  if [[ $# -gt 1 ]]; then
    [[ "$2" == "--" ]] || die "unexpected argument '$2'; put extra arguments for the Python scripts after --"
    EXTRA+=("${@:3}")
  fi
  if [[ -z "$choice" || "$choice" == "-h" || "$choice" == "--help" || "$choice" == "list" ]]; then
    echo "usage: bash $(basename "$0") CONFIG|all [-- EXTRA ARGUMENTS]   (environment: see scripts/common.sh)"
    echo "configurations: ${CONFIGS[*]}"
    [[ -n "$choice" ]] && return 0
    return 2
  fi
  if [[ "$choice" == all ]]; then
    for name in "${CONFIGS[@]}"; do "config_${name}"; done
    return 0
  fi
  for name in "${CONFIGS[@]}"; do
    if [[ "$name" == "$choice" ]]; then "config_${name}"; return 0; fi
  done
  echo "unknown configuration '$choice'; expected one of: ${CONFIGS[*]} all" >&2
  return 2
}

# -- the paper's recipes --------------------------------------------------------------------------

# run_name REPRESENTATION : the reference's checkpoint folder name,
# e.g. seq-based_and_graph-based -> interskeleton_seq_based_graph_based
run_name() {
  local name="interskeleton_${1//-/_}"
  echo "${name//_and_/_}"
}

# dataset_folder DATASET PROTOCOL : the reference's folder of a pretraining, e.g. ntu_60_cross_view
dataset_folder() {
  case "$1" in
    ntu60) echo "ntu_60_$2" ;;
    ntu120) echo "ntu_120_$2" ;;
    pku1) echo "pku_mmd_1_$2" ;;
    pku2) echo "pku_mmd_2_$2" ;;
    *) die "no recipe for dataset '$1'" ;;
  esac
}

# pretrain_epochs DATASET : "EPOCHS MILESTONE..." of the paper's pretraining schedule (lr x0.1 at each
# milestone); PKU-MMD has no recipe in the paper's code and takes NTU 60's.
pretrain_epochs() {
  case "$1" in
    ntu120) echo "351 251 351" ;;
    *) echo "451 351" ;;
  esac
}

# final_checkpoint DATASET : the file the last (0-based) epoch of that schedule writes
final_checkpoint() {
  local schedule=()
  read -r -a schedule <<<"$(pretrain_epochs "$1")"
  printf 'checkpoint_%04d.pth.tar\n' $((schedule[0] - 1))
}

# setting DATASET PROTOCOL PRE_DATASET PRE_PROTOCOL : the first folder of a run under RUNS_ROOT
setting() {
  if [[ "$1/$2" == "$3/$4" ]]; then echo "$1_$2"; else echo "$1_$2_from_$3_$4"; fi
}

# percent FRACTION : 0.01 -> 1, 0.2 -> 20
percent() { awk -v f="$1" 'BEGIN { printf "%g\n", f * 100 }'; }

# evaluate KIND DATASET PROTOCOL REPRESENTATION [PRE_DATASET PRE_PROTOCOL]
#   Evaluate the REPRESENTATION encoder of the PRETRAIN_REPRESENTATION checkpoint pretrained on
#   PRE_DATASET/PRE_PROTOCOL (default: DATASET/PROTOCOL) on DATASET/PROTOCOL, once per seed of SEEDS:
#   KIND linear (action_classification.py, frozen encoder, lr 0.1), knn (action_retrieval.py, k = 1),
#   finetune (action_classification.py --finetune: the whole network, in train mode, lr 0.01, on every
#   label) or semi (the same fine-tuning with --label-fraction F) over LABEL_FRACTIONS x SEMI_SEEDS.
#   Each run writes RUNS_ROOT/<setting>/<pretraining>/<protocol>/<encoder>/seed<N>/metrics.json;
#   classification keeps its classifier checkpoints and TensorBoard events in the same folder.
evaluate() {
  local kind="$1" dataset="$2" protocol="$3" rep="$4" pre_dataset="${5:-$2}" pre_protocol="${6:-$3}"
  local folder ckpt where seeds=() fractions=() seed fraction name
  folder=$(dataset_folder "$pre_dataset" "$pre_protocol")
  ckpt=$(final_checkpoint "$pre_dataset")
  where=$(setting "$dataset" "$protocol" "$pre_dataset" "$pre_protocol")
  local common=(--batch-size 64 --pretrained "$CHECKPOINT_ROOT/$folder/$(run_name "$PRETRAIN_REPRESENTATION")/$ckpt"
                --finetune-dataset "$dataset" --protocol "$protocol"
                --pretrain-skeleton-representation "$PRETRAIN_REPRESENTATION" --finetune-skeleton-representation "$rep")
  split_words "$SEEDS" SEEDS '^[0-9]+$' "non-negative integers"; seeds=("${WORDS[@]}")
  case "$kind" in
    linear)
      for seed in "${seeds[@]}"; do
        _classify "$where" linear "$rep" "$seed" "${common[@]}" --lr 0.1
      done ;;
    knn)
      for seed in "${seeds[@]}"; do
        _retrieve "$where" knn "$rep" "$seed" "${common[@]}" --lr 0.1 --knn-neighbours 1
      done ;;
    finetune)
      for seed in "${seeds[@]}"; do
        _classify "$where" finetune "$rep" "$seed" "${common[@]}" --lr 0.01 --finetune
      done ;;
    semi)
      split_words "$SEMI_SEEDS" SEMI_SEEDS '^[0-9]+$' "non-negative integers"; seeds=("${WORDS[@]}")
      split_words "$LABEL_FRACTIONS" LABEL_FRACTIONS '^(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?)$' "fractions in (0, 1]"
      fractions=("${WORDS[@]}")
      for fraction in "${fractions[@]}"; do
        name="semi_$(percent "$fraction")pct"
        for seed in "${seeds[@]}"; do
          _classify "$where" "$name" "$rep" "$seed" "${common[@]}" --lr 0.01 --finetune --label-fraction "$fraction"
        done
      done ;;
    *) die "evaluate: unknown kind '$kind'" ;;
  esac
}

# _classify / _retrieve SETTING PROTOCOL_NAME REPRESENTATION SEED ARG... : one evaluation run.
_classify() {
  local seed="$4" dir="$RUNS_ROOT/$1/$PRETRAIN_REPRESENTATION/$2/$3/seed$4"; shift 4
  launch action_classification.py "$@" --seed "$seed" --checkpoint-path "$dir" --metrics-json "$dir/metrics.json"
}
_retrieve() {
  local seed="$4" dir="$RUNS_ROOT/$1/$PRETRAIN_REPRESENTATION/$2/$3/seed$4"; shift 4
  launch action_retrieval.py "$@" --seed "$seed" --metrics-json "$dir/metrics.json"
}
