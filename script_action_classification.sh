#!/usr/bin/env bash
# Linear action classification on frozen pretrained encoders, the paper's recipes, on 4 GPUs.
#   bash script_action_classification.sh ntu60_xview_seq     # one configuration
#   bash script_action_classification.sh all                # all of them, in order
# Checkpoints are read from $CHECKPOINT_ROOT/<run>/interskeleton_seq_based_graph_based/checkpoint_0450.pth.tar
# (0350 for NTU 120), the layout script_pretrain.sh writes and the authors' released models use
# (set CHECKPOINT_ROOT=./pretrained_models for the latter).
# Environment: see scripts/common.sh; METRICS_DIR (default $CHECKPOINT_ROOT/metrics) gets one JSON per run.
source "$(dirname "$0")/scripts/common.sh"

PRETRAIN_REPRESENTATION="${PRETRAIN_REPRESENTATION:-seq-based_and_graph-based}"
RUN_NAME=$(run_name "$PRETRAIN_REPRESENTATION")
METRICS_DIR="${METRICS_DIR:-$CHECKPOINT_ROOT/metrics}"

classify() {  # classify PRETRAIN_FOLDER CHECKPOINT DATASET PROTOCOL REPRESENTATION
  local folder="$1" ckpt="$2" dataset="$3" protocol="$4" rep="$5"
  launch action_classification.py \
    --lr 0.1 --batch-size 64 \
    --pretrained "$CHECKPOINT_ROOT/$folder/$RUN_NAME/$ckpt" \
    --finetune-dataset "$dataset" --protocol "$protocol" \
    --pretrain-skeleton-representation "$PRETRAIN_REPRESENTATION" \
    --finetune-skeleton-representation "$rep" \
    --checkpoint-path "$CHECKPOINT_ROOT/$folder/$RUN_NAME/linear_${dataset}_${protocol}_${rep}" \
    --metrics-json "$METRICS_DIR/classification_${folder}_${dataset}_${protocol}_${rep}.json"
}

config_ntu60_xview_seq()     { classify ntu_60_cross_view      checkpoint_0450.pth.tar ntu60  cross_view    seq-based; }
config_ntu60_xsub_seq()      { classify ntu_60_cross_subject   checkpoint_0450.pth.tar ntu60  cross_subject seq-based; }
config_ntu120_xsetup_seq()   { classify ntu_120_cross_setup    checkpoint_0350.pth.tar ntu120 cross_setup   seq-based; }
config_ntu120_xsub_seq()     { classify ntu_120_cross_subject  checkpoint_0350.pth.tar ntu120 cross_subject seq-based; }
config_ntu60_xview_graph()   { classify ntu_60_cross_view      checkpoint_0450.pth.tar ntu60  cross_view    graph-based; }
config_ntu60_xsub_graph()    { classify ntu_60_cross_subject   checkpoint_0450.pth.tar ntu60  cross_subject graph-based; }
config_ntu120_xsetup_graph() { classify ntu_120_cross_setup    checkpoint_0350.pth.tar ntu120 cross_setup   graph-based; }
config_ntu120_xsub_graph()   { classify ntu_120_cross_subject  checkpoint_0350.pth.tar ntu120 cross_subject graph-based; }
config_pku1_xsub_seq()       { classify pku_mmd_1_cross_subject checkpoint_0450.pth.tar pku1 cross_subject seq-based; }
config_pku2_xsub_seq()       { classify pku_mmd_2_cross_subject checkpoint_0450.pth.tar pku2 cross_subject seq-based; }
# Transfer: an NTU 60 cross-subject encoder evaluated on PKU-MMD II.
config_ntu60_to_pku2_seq()   { classify ntu_60_cross_subject   checkpoint_0450.pth.tar pku2 cross_subject seq-based; }

CONFIGS=(ntu60_xview_seq ntu60_xsub_seq ntu120_xsetup_seq ntu120_xsub_seq
         ntu60_xview_graph ntu60_xsub_graph ntu120_xsetup_graph ntu120_xsub_graph
         pku1_xsub_seq pku2_xsub_seq ntu60_to_pku2_seq)
dispatch "$@"
