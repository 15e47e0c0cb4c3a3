"""Skeleton clip augmentations (``feeders.augmentations``), the views the encoders read (``feeders.views``)
and the datasets over the prepared split folders (``feeders.datasets``)."""
