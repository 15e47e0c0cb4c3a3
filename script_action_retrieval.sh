#!/usr/bin/env bash
# KNN action retrieval (k = 1, cosine) on frozen pretrained encoders, the paper's recipes.
#   bash script_action_retrieval.sh ntu60_xview_seq    # one configuration
#   bash script_action_retrieval.sh all                # all of them, in order
# Checkpoints and run folders as in script_action_classification.sh (the protocol folder is `knn`).
# Environment: see scripts/common.sh (SEEDS, PRETRAIN_REPRESENTATION, RUNS_ROOT, ...).
source "$(dirname "$0")/scripts/common.sh"

PRETRAIN_REPRESENTATION="${PRETRAIN_REPRESENTATION:-seq-based_and_graph-based}"

config_ntu60_xview_seq()     { evaluate knn ntu60  cross_view    seq-based; }
config_ntu60_xsub_seq()      { evaluate knn ntu60  cross_subject seq-based; }
config_ntu120_xsetup_seq()   { evaluate knn ntu120 cross_setup   seq-based; }
config_ntu120_xsub_seq()     { evaluate knn ntu120 cross_subject seq-based; }
config_ntu60_xview_graph()   { evaluate knn ntu60  cross_view    graph-based; }
config_ntu60_xsub_graph()    { evaluate knn ntu60  cross_subject graph-based; }
config_ntu120_xsetup_graph() { evaluate knn ntu120 cross_setup   graph-based; }
config_ntu120_xsub_graph()   { evaluate knn ntu120 cross_subject graph-based; }

CONFIGS=(ntu60_xview_seq ntu60_xsub_seq ntu120_xsetup_seq ntu120_xsub_seq
         ntu60_xview_graph ntu60_xsub_graph ntu120_xsetup_graph ntu120_xsub_graph)
dispatch "$@"
