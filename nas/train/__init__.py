"""Weight-sharing supernet training: strategies, the training loop, checkpoints and the Ray Train launcher.

Example:
    >>> from nas.train import STRATEGIES
    >>> sorted(STRATEGIES)
    ['delayed', 'progressive', 'sandwich', 'uniform']
"""

from nas.train.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights
from nas.train.strategies import STRATEGIES, Strategy, SubnetTask, make_strategy, register_strategy
from nas.train.trainer import TrainConfig, TrainResult, recipe_for, resolve_device, train_supernet

__all__ = [
    "STRATEGIES",
    "Strategy",
    "SubnetTask",
    "TrainConfig",
    "TrainResult",
    "load_checkpoint",
    "load_weights",
    "make_strategy",
    "recipe_for",
    "register_strategy",
    "resolve_device",
    "save_checkpoint",
    "save_weights",
    "train_supernet",
]
