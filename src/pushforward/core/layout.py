"""The file names of a run folder, each defined once.

A run folder holds everything a run made and nothing that needs unpickling::

    RUN/
      config.json            the resolved settings, the model's constructor arguments, the data
      model.safetensors      final weights (or fitted state, for PCA)
      checkpoint.safetensors weights + optimiser + RNG state of the last checkpoint (trained models)
      metrics.jsonl          one JSON record per epoch
      snapshots.safetensors  fixed-seed samples every K epochs (``snapshot_every``; optional)
      figures/*.png

The training loop writes the checkpoint, the metrics and the snapshots; the runs layer writes the
rest and reads them all back.
"""

from __future__ import annotations

__all__ = ["CHECKPOINT", "CONFIG", "FIGURES", "METRICS", "SNAPSHOTS", "WEIGHTS"]

CONFIG = "config.json"
"""The run's record: format, versions, resolved settings, the model's config, the data's shape."""

WEIGHTS = "model.safetensors"
"""The final weights (or fitted state) of the run's model."""

CHECKPOINT = "checkpoint.safetensors"
"""Weights, optimiser and RNG state of the last checkpoint, from which a run resumes."""

METRICS = "metrics.jsonl"
"""One JSON record per epoch of training."""

SNAPSHOTS = "snapshots.safetensors"
"""Fixed-seed samples every ``snapshot_every`` epochs (``epochs`` (S,), ``samples`` (S, m, d))."""

FIGURES = "figures"
"""The folder of the run's figures (PNG)."""
