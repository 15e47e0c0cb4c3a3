#!/usr/bin/env bash
# KNN action retrieval (k = 1, cosine) on frozen pretrained encoders, the paper's recipes.
#   bash script_action_retrieval.sh ntu60_xview_seq    # one configuration
#   bash script_action_retrieval.sh all                # all of them, in order
# Checkpoints as in script_action_classification.sh. Environment: see scripts/common.sh;
# METRICS_DIR (default $CHECKPOINT_ROOT/metrics) gets one JSON per run.
source "$(dirname "$0")/scripts/common.sh"

PRETRAIN_REPRESENTATION="${PRETRAIN_REPRESENTATION:-seq-based_and_graph-based}"
RUN_NAME=$(run_name "$PRETRAIN_REPRESENTATION")
METRICS_DIR="${METRICS_DIR:-$CHECKPOINT_ROOT/metrics}"

retrieve() {  # retrieve PRETRAIN_FOLDER CHECKPOINT DATASET PROTOCOL REPRESENTATION
  local folder="$1" ckpt="$2" dataset="$3" protocol="$4" rep="$5"
  launch action_retrieval.py \
    --lr 0.1 --batch-size 64 --knn-neighbours 1 \
    --pretrained "$CHECKPOINT_ROOT/$folder/$RUN_NAME/$ckpt" \
    --finetune-dataset "$dataset" --protocol "$protocol" \
    --pretrain-skeleton-representation "$PRETRAIN_REPRESENTATION" \
    --finetune-skeleton-representation "$rep" \
    --metrics-json "$METRICS_DIR/retrieval_${folder}_${dataset}_${protocol}_${rep}.json"
}

config_ntu60_xview_seq()     { retrieve ntu_60_cross_view     checkpoint_0450.pth.tar ntu60  cross_view    seq-based; }
config_ntu60_xsub_seq()      { retrieve ntu_60_cross_subject  checkpoint_0450.pth.tar ntu60  cross_subject seq-based; }
config_ntu120_xsetup_seq()   { retrieve ntu_120_cross_setup   checkpoint_0350.pth.tar ntu120 cross_setup   seq-based; }
config_ntu120_xsub_seq()     { retrieve ntu_120_cross_subject checkpoint_0350.pth.tar ntu120 cross_subject seq-based; }
config_ntu60_xview_graph()   { retrieve ntu_60_cross_view     checkpoint_0450.pth.tar ntu60  cross_view    graph-based; }
config_ntu60_xsub_graph()    { retrieve ntu_60_cross_subject  checkpoint_0450.pth.tar ntu60  cross_subject graph-based; }
config_ntu120_xsetup_graph() { retrieve ntu_120_cross_setup   checkpoint_0350.pth.tar ntu120 cross_setup   graph-based; }
config_ntu120_xsub_graph()   { retrieve ntu_120_cross_subject checkpoint_0350.pth.tar ntu120 cross_subject graph-based; }

CONFIGS=(ntu60_xview_seq ntu60_xsub_seq ntu120_xsetup_seq ntu120_xsub_seq
         ntu60_xview_graph ntu60_xsub_graph ntu120_xsetup_graph ntu120_xsub_graph)
dispatch "$@"
