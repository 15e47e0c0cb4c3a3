#!/usr/bin/env bash
# Action classification of pretrained encoders, the paper's recipes, on 4 GPUs: linear evaluation
# (frozen encoder; lr 0.1, batch 64, 80 epochs, x0.1 at 50 and 70) and, in the *_semi configurations,
# the semi-supervised protocol of the code this paper's lineage published (maoyunyao/CMD; the paper's code
# has no semi-supervised recipe): the whole network fine-tuned in train mode on a random 1, 5, 10 and
# 20 % of the training clips, 5 seeds each, lr 0.01, no weight decay, batch 64, 80 epochs, x0.1 at 50
# and 70. The transfer to PKU-MMD II is that fine-tuning on every label (the lineage's), or, in
# ntu60_to_pku2_seq_linear, a linear classifier on the frozen encoder.
#   bash script_action_classification.sh ntu60_xview_seq     # one configuration
#   bash script_action_classification.sh all                # all of them, in order
#   bash script_action_classification.sh ntu60_xview_seq -- -j 16   # extra arguments for every command
# Checkpoints are read from $CHECKPOINT_ROOT/<run>/interskeleton_seq_based_graph_based/checkpoint_0450.pth.tar
# (0350 for NTU 120), the layout script_pretrain.sh writes and the authors' released models use
# (set CHECKPOINT_ROOT=./pretrained_models for the latter). Every run writes
# $RUNS_ROOT/<setting>/<pretraining>/<protocol>/<encoder>/seed<N>/metrics.json (and its classifier);
# `python scripts/ledger.py $RUNS_ROOT` tabulates them against the paper.
# Environment: see scripts/common.sh (SEEDS, SEMI_SEEDS, LABEL_FRACTIONS, PRETRAIN_REPRESENTATION, ...).
source "$(dirname "$0")/scripts/common.sh"

PRETRAIN_REPRESENTATION="${PRETRAIN_REPRESENTATION:-seq-based_and_graph-based}"

config_ntu60_xview_seq()      { evaluate linear ntu60  cross_view    seq-based; }
config_ntu60_xsub_seq()       { evaluate linear ntu60  cross_subject seq-based; }
config_ntu120_xsetup_seq()    { evaluate linear ntu120 cross_setup   seq-based; }
config_ntu120_xsub_seq()      { evaluate linear ntu120 cross_subject seq-based; }
config_ntu60_xview_graph()    { evaluate linear ntu60  cross_view    graph-based; }
config_ntu60_xsub_graph()     { evaluate linear ntu60  cross_subject graph-based; }
config_ntu120_xsetup_graph()  { evaluate linear ntu120 cross_setup   graph-based; }
config_ntu120_xsub_graph()    { evaluate linear ntu120 cross_subject graph-based; }
config_pku1_xsub_seq()        { evaluate linear pku1   cross_subject seq-based; }
config_pku2_xsub_seq()        { evaluate linear pku2   cross_subject seq-based; }
# Transfer: an NTU 60 cross-subject encoder, fine-tuned (or under a linear classifier) on PKU-MMD II.
config_ntu60_to_pku2_seq()        { evaluate finetune pku2 cross_subject seq-based ntu60 cross_subject; }
config_ntu60_to_pku2_seq_linear() { evaluate linear   pku2 cross_subject seq-based ntu60 cross_subject; }
config_ntu60_xview_seq_semi()   { evaluate semi ntu60  cross_view    seq-based; }
config_ntu60_xsub_seq_semi()    { evaluate semi ntu60  cross_subject seq-based; }
config_ntu120_xsetup_seq_semi() { evaluate semi ntu120 cross_setup   seq-based; }
config_ntu120_xsub_seq_semi()   { evaluate semi ntu120 cross_subject seq-based; }

CONFIGS=(ntu60_xview_seq ntu60_xsub_seq ntu120_xsetup_seq ntu120_xsub_seq
         ntu60_xview_graph ntu60_xsub_graph ntu120_xsetup_graph ntu120_xsub_graph
         pku1_xsub_seq pku2_xsub_seq ntu60_to_pku2_seq ntu60_to_pku2_seq_linear
         ntu60_xview_seq_semi ntu60_xsub_seq_semi ntu120_xsetup_seq_semi ntu120_xsub_seq_semi)
dispatch "$@"
