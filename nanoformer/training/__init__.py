"""Training: one family-agnostic loop, AdamW and schedules, checkpoints, torchrun/DDP.

    from nanoformer.training import Trainer, TrainConfig
    Trainer(model, loss_fn, batches, TrainConfig(max_steps=1000), model_config, "runs/x").fit()
"""

from nanoformer.layers.losses import IGNORE_INDEX, token_cross_entropy
from nanoformer.training.checkpoint import (
    average_checkpoints,
    load_model_state,
    numbered_checkpoints,
    read_config,
    read_trainer_state,
    resolve_checkpoint,
    save_checkpoint,
)
from nanoformer.training.config import TrainConfig, parse_duration
from nanoformer.training.contracts import BatchSource, FitResult
from nanoformer.training.distributed import (
    DistInfo,
    cleanup_distributed,
    setup_distributed,
)
from nanoformer.training.optim import build_optimizer, param_groups
from nanoformer.training.schedules import lr_at, set_lr
from nanoformer.training.trainer import Trainer

__all__ = [
    "BatchSource",
    "DistInfo",
    "FitResult",
    "IGNORE_INDEX",
    "TrainConfig",
    "Trainer",
    "average_checkpoints",
    "build_optimizer",
    "cleanup_distributed",
    "load_model_state",
    "lr_at",
    "numbered_checkpoints",
    "param_groups",
    "parse_duration",
    "read_config",
    "read_trainer_state",
    "resolve_checkpoint",
    "save_checkpoint",
    "set_lr",
    "setup_distributed",
    "token_cross_entropy",
]
