"""The training engine shared by every plug-in: loop, optimiser, warmup, EMA,
checkpoints (safetensors + JSON), resume, distributed data parallel, optimiser steps
inside backward and metrics."""

from .checkpoint import (Checkpoint, find_checkpoint, load_checkpoint, load_weights, newest_checkpoint,
                         recover_checkpoint, save_checkpoint)
from .data import IndexSchedule
from .engine import TrainConfig, Trainer, first_nonfinite_layer, prepare_run_folder, saved_run_config
from .in_backward import InBackwardOptimizer
from .interrupt import TrainingInterrupted
from .metrics import MetricsLog

__all__ = ["Checkpoint", "InBackwardOptimizer", "IndexSchedule", "MetricsLog", "TrainConfig", "Trainer", "TrainingInterrupted",
           "find_checkpoint", "first_nonfinite_layer", "load_checkpoint", "load_weights", "newest_checkpoint",
           "prepare_run_folder", "recover_checkpoint", "save_checkpoint", "saved_run_config"]
