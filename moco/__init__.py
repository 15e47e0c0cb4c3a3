"""Inter- and intra-skeleton MoCo contrast: pure functions and the model holding encoders and queues."""

from moco.builder import (
    QUEUE_NAMES,
    MoCo,
    attach_mlp_head,
    build_moco,
    checkpoint_state_dict,
    encoder_state_dict,
    load_checkpoint_state_dict,
)
from moco.functional import (
    contrastive_loss,
    enqueue,
    info_nce_labels,
    info_nce_logits,
    init_queue,
    momentum_update,
)
from moco.step import StepOutput, contrastive_step

__all__ = [
    "QUEUE_NAMES",
    "MoCo",
    "StepOutput",
    "attach_mlp_head",
    "build_moco",
    "checkpoint_state_dict",
    "contrastive_loss",
    "contrastive_step",
    "encoder_state_dict",
    "enqueue",
    "info_nce_labels",
    "info_nce_logits",
    "init_queue",
    "load_checkpoint_state_dict",
    "momentum_update",
]
