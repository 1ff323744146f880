"""The training engine shared by every plug-in: loop, optimiser, warmup, EMA,
checkpoints (safetensors + JSON), resume, distributed data parallel, optimiser steps
inside backward and metrics; run folders (start, resume, load for inference) and the
loop's config with its merge rule."""

from .checkpoint import (
    Checkpoint,
    checkpoint_config,
    find_checkpoint,
    load_checkpoint,
    load_weights,
    newest_checkpoint,
    recover_checkpoint,
    save_checkpoint,
)
from .config import TrainConfig, train_config
from .data import IndexSchedule
from .engine import Trainer, first_nonfinite_layer
from .in_backward import InBackwardOptimizer
from .interrupt import TrainingInterrupted
from .metrics import MetricsLog
from .resume import Resumed, resume_run
from .runs import DEMO_ADVICE, load_run, prepare_run_folder, run_kind, saved_run_config, start_run

__all__ = ["Checkpoint", "DEMO_ADVICE", "InBackwardOptimizer", "IndexSchedule", "MetricsLog", "Resumed", "TrainConfig",
           "Trainer", "TrainingInterrupted", "checkpoint_config", "find_checkpoint", "first_nonfinite_layer",
           "load_checkpoint", "load_run", "load_weights", "newest_checkpoint", "prepare_run_folder",
           "recover_checkpoint", "resume_run", "run_kind", "save_checkpoint", "saved_run_config", "start_run",
           "train_config"]
