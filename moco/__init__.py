"""Inter- and intra-skeleton MoCo contrast: pure functions (``moco.functional``), the model holding encoders
and queues (``moco.builder``) and one training step (``moco.step``)."""
