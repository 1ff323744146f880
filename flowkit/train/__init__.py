"""The training engine shared by every plug-in: loop, optimiser, warmup, EMA,
checkpoints (safetensors + JSON), resume, distributed data parallel and metrics."""

from .checkpoint import Checkpoint, load_checkpoint, load_weights, save_checkpoint
from .data import IndexSchedule
from .engine import TrainConfig, Trainer, first_nonfinite_layer
from .metrics import MetricsLog

__all__ = ["Checkpoint", "IndexSchedule", "MetricsLog", "TrainConfig", "Trainer", "first_nonfinite_layer",
           "load_checkpoint", "load_weights", "save_checkpoint"]
