#!/usr/bin/env bash
# Inter-skeleton contrastive pretraining, the paper's recipes (seq-based and graph-based), on 4 GPUs.
#   bash script_pretrain.sh ntu60_xview        # one configuration
#   bash script_pretrain.sh all                # all of them, in order
#   bash script_pretrain.sh ntu60_xview -- --amp -j 16        # extra arguments for every command
#   LAUNCHER=torchrun bash script_pretrain.sh ntu60_xview     # DistributedDataParallel
#   REPRESENTATION=seq-based_and_image-based bash script_pretrain.sh ntu60_xview
# Checkpoints go to $CHECKPOINT_ROOT/<ntu_60_cross_view|...>/<run name>/, the run's metrics JSON to
# $RUNS_ROOT/<dataset>_<protocol>/<representation>/pretrain/metrics.json.
# Environment: see scripts/common.sh (GPUS, DATA_ROOT, CHECKPOINT_ROOT, RUNS_ROOT, LAUNCHER, NNODES, ...).
source "$(dirname "$0")/scripts/common.sh"

REPRESENTATION="${REPRESENTATION:-seq-based_and_graph-based}"

pretrain() {  # pretrain DATASET PROTOCOL
  local dataset="$1" protocol="$2" folder schedule=()
  folder=$(dataset_folder "$dataset" "$protocol")
  read -r -a schedule <<<"$(pretrain_epochs "$dataset")"
  launch main_moco_inter_skeleton.py \
    --lr 0.01 --batch-size 64 --mlp --moco-t 0.07 --moco-k 16384 \
    --checkpoint-path "$CHECKPOINT_ROOT/$folder/$(run_name "$REPRESENTATION")" \
    --schedule "${schedule[@]:1}" --epochs "${schedule[0]}" \
    --pre-dataset "$dataset" --protocol "$protocol" --skeleton-representation "$REPRESENTATION" \
    --metrics-json "$RUNS_ROOT/${dataset}_${protocol}/$REPRESENTATION/pretrain/metrics.json"
}

config_ntu60_xview()   { pretrain ntu60  cross_view; }
config_ntu60_xsub()    { pretrain ntu60  cross_subject; }
config_ntu120_xsetup() { pretrain ntu120 cross_setup; }
config_ntu120_xsub()   { pretrain ntu120 cross_subject; }
# PKU-MMD: the paper's code ships no recipe; we use the NTU 60 one.
config_pku1_xsub()     { pretrain pku1   cross_subject; }
config_pku2_xsub()     { pretrain pku2   cross_subject; }

CONFIGS=(ntu60_xview ntu60_xsub ntu120_xsetup ntu120_xsub pku1_xsub pku2_xsub)
dispatch "$@"
