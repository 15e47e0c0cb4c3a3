#!/usr/bin/env bash
# Inter-skeleton contrastive pretraining, the paper's recipes (seq-based and graph-based), on 4 GPUs.
#   bash script_pretrain.sh ntu60_xview        # one configuration
#   bash script_pretrain.sh all                # all of them, in order
#   LAUNCHER=torchrun bash script_pretrain.sh ntu60_xview     # DistributedDataParallel
#   REPRESENTATION=seq-based_and_image-based bash script_pretrain.sh ntu60_xview
# Environment: see scripts/common.sh (GPUS, DATA_ROOT, CHECKPOINT_ROOT, LAUNCHER, NNODES, ...).
source "$(dirname "$0")/scripts/common.sh"

REPRESENTATION="${REPRESENTATION:-seq-based_and_graph-based}"
RUN_NAME=$(run_name "$REPRESENTATION")

pretrain() {  # pretrain DATASET PROTOCOL FOLDER EPOCHS SCHEDULE...
  local dataset="$1" protocol="$2" folder="$3" epochs="$4"; shift 4
  launch main_moco_inter_skeleton.py \
    --lr 0.01 --batch-size 64 --mlp --moco-t 0.07 --moco-k 16384 \
    --checkpoint-path "$CHECKPOINT_ROOT/$folder/$RUN_NAME" \
    --schedule "$@" --epochs "$epochs" \
    --pre-dataset "$dataset" --protocol "$protocol" --skeleton-representation "$REPRESENTATION"
}

config_ntu60_xview()   { pretrain ntu60  cross_view    ntu_60_cross_view     451 351; }
config_ntu60_xsub()    { pretrain ntu60  cross_subject ntu_60_cross_subject  451 351; }
config_ntu120_xsetup() { pretrain ntu120 cross_setup   ntu_120_cross_setup   351 251 351; }
config_ntu120_xsub()   { pretrain ntu120 cross_subject ntu_120_cross_subject 351 251 351; }
# PKU-MMD: the paper's code ships no recipe; we use the NTU 60 one.
config_pku1_xsub()     { pretrain pku1   cross_subject pku_mmd_1_cross_subject 451 351; }
config_pku2_xsub()     { pretrain pku2   cross_subject pku_mmd_2_cross_subject 451 351; }

CONFIGS=(ntu60_xview ntu60_xsub ntu120_xsetup ntu120_xsub pku1_xsub pku2_xsub)
dispatch "$@"
