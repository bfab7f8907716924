"""The weight-sharing training loop: one optimizer step trains several subnets on one batch.

Each step asks the strategy (:mod:`nas.train.strategies`) for its subnets, runs them on the same batch with
the gradients accumulated, and takes one optimizer step. With in-place distillation the max subnet (the
strategy's *teacher*) learns from the labels and every other subnet from the teacher's detached soft
predictions.

Everything random is a pure function of ``(seed, epoch)`` or ``(seed, step)``: the data order of an epoch, the
subnets of a step and the augmentation of a batch. Only dropout uses the global torch RNG, whose state goes into
the checkpoint. So a run resumed from any checkpoint, and every data-parallel worker, sees exactly what an
uninterrupted single run would see, and ends with the same weights (on CPU, same thread count).

Run directory (``out_dir``):

* ``checkpoint.safetensors`` every ``checkpoint_every`` steps and at each epoch end (atomic),
* ``metrics.jsonl`` one JSON object per line (each with the wall-clock ``time``):

  - every 10th step and the last: ``step`` (steps done, counting this one), ``epoch`` (the 0-based epoch this
    step belongs to), ``lr`` (the learning rate this step applied) and this step's losses, each a mean over
    the batch and not scaled by the subnet's loss weight: ``loss_max`` (the max subnet's, on the labels),
    ``loss_min`` (the second subnet's: the smallest of the elastic part), ``loss_other`` (the mean over the
    random subnets, or the one subnet of ``uniform``). A student's loss under distillation is its soft
    cross-entropy against the teacher's predictions: the KL divergence plus the teacher's entropy;
  - at each epoch end: ``epoch`` (epochs done), ``step``, ``seconds`` (training time so far) and, with
    validation data, ``val_max`` / ``val_min`` (accuracy in %, batch norm recalibrated);
  - at each phase change (``progressive``, ``delayed``): ``event: "phase"``, ``step``, ``phase``.

* ``supernet.safetensors`` the final weights, ``train.json`` the run's settings and final metrics; its ``device``
  is the last session's, ``sessions`` lists every session whose steps the weights hold (``start_step``, ``device``,
  ``torch``), kept in the checkpoint across resumes.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from nas import atomic
from nas.supernet import Supernet, resize_to
from nas.train.checkpoint import (
    CHECKPOINT,
    WEIGHTS,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
    save_weights,
)
from nas.train.strategies import STRATEGIES, Strategy, make_strategy

__all__ = ["TrainConfig", "TrainResult", "resolve_device", "train_supernet"]

METRICS = "metrics.jsonl"
SUMMARY = "train.json"


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (stored in checkpoints; a resumed run must use the same ones)."""

    strategy: str = "sandwich"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    optimizer: str = "sgd"
    weight_decay: float = 3e-5
    label_smoothing: float = 0.1
    warmup_epochs: float = 0.5
    distill: bool = True
    # Weight of the labels' cross-entropy in a student's loss under in-place distillation (the rest is the
    # teacher's soft targets): 0 is pure in-place distillation (BigNAS); Once-for-All adds both.
    distill_labels: float = 0.0
    n_random: int = 2
    augment: bool | str = True
    seed: int = 0
    checkpoint_every: int = 50
    grad_clip: float = 5.0
    # Conv weights and inputs channels-last on the CPU (about 2x faster there). Not applied on a GPU: torch then
    # sends every depthwise conv to cuDNN, whose releases from 9.10 compile a kernel for each new shape (about
    # 1.5 s each, NVIDIA/cudnn-frontend#1066), and elastic subnets bring new shapes for many steps (on an H200 the
    # first 10 steps of the MNIST recipe took 124 s channels-last; NCHW there not re-measured yet; see
    # docs/training.md).
    channels_last: bool = True
    strategy_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What :func:`train_supernet` returns: where the run lives and its final numbers."""

    out_dir: str
    steps: int
    epochs: int
    seconds: float
    val_accuracy: dict[str, float]
    history: list[dict[str, Any]]


# ------------------------------------------------------------------------------------------------ helpers
def _lr_at(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Linear warmup then cosine decay to zero; a pure function of the step (nothing to checkpoint)."""
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _make_optimizer(cfg: TrainConfig, net: nn.Module) -> torch.optim.Optimizer:
    # No weight decay on BN / biases (1-D tensors): decaying them only hurts small networks. Nor on kernel
    # transformation matrices: they start at the identity, and decay would pull them towards zero instead. Nor
    # on what the network's no_weight_decay() names (timm's convention: a ViT's position embedding and class
    # token, which are embeddings rather than weights).
    named_exempt = set(net.no_weight_decay()) if callable(getattr(net, "no_weight_decay", None)) else set()

    def exempt(name: str, p: torch.Tensor) -> bool:
        return p.dim() <= 1 or "kernel_transforms." in name or name in named_exempt

    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if not exempt(n, p)]
    no_decay = [p for n, p in named if exempt(n, p)]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"optimizer={cfg.optimizer!r} is not supported; use 'sgd' or 'adamw'")


def _augment(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by a whole number of pixels (up to ``max_shift``) per image, seeded by ``gen``.

    Whole pixels: a sub-pixel shift resamples (blurs) every training image, which test images never are;
    with integer offsets ``grid_sample`` lands exactly on pixel centres and copies values unchanged.
    """
    return _affine(x, gen, max_shift, 0.0, 0.0)


def _affine(
    x: torch.Tensor,
    gen: torch.Generator,
    max_shift: int = 2,
    max_degrees: float = 10.0,
    max_scale: float = 0.1,
) -> torch.Tensor:
    """Whole-pixel shifts plus a random rotation (up to ``max_degrees``) and zoom (``1 +- max_scale``)."""
    n, _, h, w = x.shape
    shift = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=gen).to(x.dtype)
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(max_degrees)
    scale = 1.0 + (torch.rand(n, generator=gen) * 2 - 1) * max_scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / scale
    theta[:, 0, 1] = -torch.sin(angle) / scale
    theta[:, 1, 0] = torch.sin(angle) / scale
    theta[:, 1, 1] = torch.cos(angle) / scale
    theta[:, 0, 2] = shift[:, 0] * 2 / w
    theta[:, 1, 2] = shift[:, 1] * 2 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Pad with the image's background value, not zero (inputs are normalised): each channel's own minimum, so a
    # colour image's border is its darkest colour rather than one channel's minimum pushed into the others.
    bg = x.amin(dim=(2, 3), keepdim=True)
    return F.grid_sample(x - bg, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + bg


def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, 1, epoch]).permutation(n)


def _step_rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, 2, step])


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device ``device`` names: ``"auto"`` is the GPU when CUDA is available, else the CPU.

    Raises ``ValueError`` for a device this machine does not have, naming what it has.

    Example:
        >>> resolve_device("cpu").type
        'cpu'
        >>> resolve_device("auto").type in ("cpu", "cuda")
        True
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a torch device; use 'auto', 'cpu' or 'cuda'") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r}, but this machine has no CUDA GPU (torch {torch.__version__}, "
                f"torch.cuda.is_available() is False); use device='cpu' or 'auto'"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}, but this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    elif resolved.type != "cpu":
        raise ValueError(f"device={device!r}: nas trains on 'cpu' or 'cuda' ('auto' picks)")
    return resolved


def _tensors(data: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    from nas.evaluation import _kind_of, check_images_and_labels

    if isinstance(data, TensorDataset):
        x, y = data.tensors[0], data.tensors[1]
    elif isinstance(data, tuple | list) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        x, y = data[0], data[1]
    else:
        raise TypeError(f"{what}: expected a TensorDataset or an (images, labels) pair, got {_kind_of(data)}")
    return check_images_and_labels(x, y, what)


class _Sync:
    """Gradient averaging across data-parallel workers (no-op for one process)."""

    def __init__(self, rank: int = 0, world: int = 1):
        self.rank, self.world = rank, world

    def grads(self, net: nn.Module) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        params = [p for p in net.parameters() if p.requires_grad]
        if not params:
            return
        # A parameter no subnet of the step used has no gradient on any worker, and must keep none: the optimizer
        # then skips it as a single process does (a zero gradient would still apply weight decay and momentum).
        # Workers agree on which those are (attentive sampling may train different candidates per worker).
        used = torch.tensor(
            [p.grad is not None for p in params], dtype=torch.float32, device=params[0].device
        )
        dist.all_reduce(used)
        for p, n in zip(params, used.tolist(), strict=True):
            if n == 0:
                continue
            if p.grad is None:  # used on another worker only: contributes zeros to the average
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= self.world


# ------------------------------------------------------------------------------------------------ the loop
def _run(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    cfg: TrainConfig,
    out: Path,
    resume: bool,
    progress: bool,
    sync: _Sync,
    fail_at_step: int | None = None,
    device: torch.device | None = None,
) -> TrainResult:
    started = time.perf_counter()
    device = device or torch.device("cpu")
    is_main = sync.rank == 0
    # Each worker takes every world-th example of the epoch's permutation.
    shard = len(x) // sync.world
    steps_per_epoch = shard // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch_size={cfg.batch_size} is larger than the {shard} training examples per worker; "
            "use a smaller batch_size"
        )
    total = steps_per_epoch * cfg.epochs
    options = {"num_random": cfg.n_random, **cfg.strategy_options}
    strategy: Strategy = make_strategy(cfg.strategy, net, total, **options)
    net.to(device)  # before the optimizer is built: it holds the parameters it updates
    channels_last = cfg.channels_last and device.type == "cpu"
    if channels_last:
        net.to(memory_format=torch.channels_last)
    net.train()
    opt = _make_optimizer(cfg, net)
    step = 0
    seconds_before = 0.0
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    # Sessions that trained the weights resumed from; kept in each checkpoint (not read from train.json, which a
    # killed session never wrote), so a session's steps that a later one redoes from an earlier checkpoint drop out.
    sessions: list[dict[str, Any]] = []
    torch.manual_seed(cfg.seed)
    ckpt = out / CHECKPOINT
    settings = {**asdict(cfg), "strategy_description": strategy.describe(), "world": sync.world}
    if resume and ckpt.is_file():
        state = load_checkpoint(ckpt, net, opt)
        stored = _with_new_defaults(state["settings"])
        if stored != json.loads(json.dumps(settings)):
            raise ValueError(
                f"{ckpt} was written with different settings ({settings_diff(stored, settings)}); "
                "resume with the same arguments or start a new out_dir"
            )
        step = int(state["step"])
        # Training time of earlier sessions, up to the checkpoint resumed from (what came after it is redone).
        seconds_before = float(state.get("seconds", 0.0))
        # a checkpoint written before sessions were recorded: what trained its steps is unknown (null)
        sessions = list(state.get("sessions") or [{"start_step": 0, "device": None, "torch": None}])
    if step < total:  # a finished run resumed trains nothing: no session of its weights
        sessions.append({"start_step": step, "device": device_name, "torch": torch.__version__})
    history: list[dict[str, Any]] = []
    # The phase of the last step done: a run resumed exactly at a phase boundary still re-sorts channels.
    phase = strategy.phase(max(0, step - 1))
    if step == 0 and is_main:
        # A run that starts from step 0 (new, overwritten, or killed before its first checkpoint) starts its log too.
        (out / METRICS).unlink(missing_ok=True)
    log = _Log(out / METRICS if is_main else None)
    if step > 0:
        # Steps logged after the checkpoint we resume from are trained (and logged) again.
        log.drop_after(step)
    bar = _Bar(total, step, enabled=progress and is_main, title=f"{cfg.strategy} supernet")

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - started

    def checkpoint(epoch: int) -> None:
        if is_main:
            state = {
                "step": step,
                "epoch": epoch,
                "settings": settings,
                "seconds": round(elapsed(), 3),
                "sessions": sessions,
            }
            save_checkpoint(ckpt, net, opt, state)

    def end_epoch() -> dict[str, float]:
        """Validate (main worker) and log the epoch that ended at ``step``; returns the validation accuracy."""
        accuracy: dict[str, float] = {}
        record: dict[str, Any] = {"epoch": step // steps_per_epoch, "step": step}
        if val is not None and is_main:
            accuracy = _validate(net, strategy, val, x)
            record.update({f"val_{k}": v for k, v in accuracy.items()})
        record["seconds"] = round(elapsed(), 2)
        history.append(record)
        log.write(record)
        bar.message(record)
        return accuracy

    val_acc: dict[str, float] = {}
    try:
        if step > 0 and step % steps_per_epoch == 0 and is_main and not log.has_epoch_record(step):
            # Killed after the epoch's checkpoint but before its record was logged (during validation): the
            # uninterrupted run validated here too, so doing it now changes no weights and fills the gap in the log.
            val_acc = end_epoch()
        while step < total:
            epoch, batch_idx = divmod(step, steps_per_epoch)
            order = _epoch_order(cfg.seed, epoch, len(x))
            new_phase = strategy.phase(step)
            if new_phase != phase:
                # OFA: re-sort channels by importance before the narrower subnets start training; momentum
                # buffers refer to the old channel order, so they are reset.
                if hasattr(net, "sort_channels"):
                    net.sort_channels()
                opt.state.clear()
                phase = new_phase
                log.write({"event": "phase", "step": step, "phase": phase})
            idx = order[sync.rank :: sync.world][
                batch_idx * cfg.batch_size : (batch_idx + 1) * cfg.batch_size
            ]
            xb, yb = x[torch.from_numpy(idx)], y[torch.from_numpy(idx)]
            if cfg.augment:
                gen = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + step)
                xb = _affine(xb, gen) if cfg.augment == "affine" else _augment(xb, gen)
            # Data stays in host memory and augmentation on the CPU (its generator makes it reproducible
            # anywhere); each batch moves to the training device.
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            lr = _lr_at(cfg, step, total, steps_per_epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            losses = _train_step(net, strategy.tasks(step, _step_rng(cfg.seed, step)), xb, yb, cfg)
            sync.grads(net)
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if fail_at_step is not None and step == fail_at_step:
                raise _InjectedFailure(f"injected failure after step {step}")
            bar.update(step, losses)
            if step % 10 == 0 or step == total:
                log.write({"step": step, "epoch": epoch, "lr": lr, **losses})
            end_of_epoch = step % steps_per_epoch == 0
            if end_of_epoch or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                checkpoint(step // steps_per_epoch)
            if end_of_epoch:
                val_acc = end_epoch()
    finally:
        bar.close()
    if val is not None and is_main and not history:
        # Resumed after the last epoch ended (a finished run, or one killed during its final validation): no
        # epoch ended in this session, so validate now rather than write an empty val_accuracy over train.json.
        val_acc = _validate(net, strategy, val, x)
    seconds = elapsed()
    if is_main:
        if channels_last:
            net.to(memory_format=torch.contiguous_format)
        save_weights(net, out / WEIGHTS, {"settings": settings, "steps": step})
        summary = {
            "settings": settings,
            "steps": step,
            "seconds": seconds,
            "session_seconds": time.perf_counter() - started,
            "device": device_name,  # the last session's (what train.json always held); every one's in sessions
            "sessions": sessions,
            "val_accuracy": val_acc,
        }
        atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2))
    net.activate(net.space.max())
    return TrainResult(str(out), step, cfg.epochs, seconds, val_acc, history)


def recipe_for(net: nn.Module, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for :func:`train_supernet`: ``net``'s ``training_recipe`` with ``overrides`` on top.

    Spaces whose supernets need other settings than the defaults say so in ``Supernet.training_recipe`` (the
    ViT's lower learning rate, for one); ``nas train`` applies it to the options not given on its command line.

    Example:
        >>> from search_spaces import vit
        >>> net = vit.supernet("small", num_classes=10, in_channels=1)
        >>> recipe = recipe_for(net, epochs=3)
        >>> recipe["epochs"], recipe["lr"] == vit.VisionTransformerSupernet.training_recipe["lr"]
        (3, True)
    """
    recipe = {**getattr(net, "training_recipe", {}), **overrides}
    allowed = set(TrainConfig.__dataclass_fields__) | set(inspect.signature(train_supernet).parameters)
    unknown = sorted(set(recipe) - allowed)
    if unknown:
        raise TypeError(f"{type(net).__name__}.training_recipe or overrides name unknown settings {unknown}")
    return recipe


def _with_new_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's settings with the :class:`TrainConfig` fields added since it was written, at their defaults
    (which train as before they existed), so an older run still resumes.

    Example:
        >>> _with_new_defaults({"lr": 0.1})["distill_labels"]
        0.0
    """
    fields = TrainConfig.__dataclass_fields__
    return {**{name: fields[name].default for name in _FIELDS_ADDED_LATER}, **stored}


# TrainConfig fields a checkpoint written before them lacks; each one's default must train as its absence did.
_FIELDS_ADDED_LATER = ("distill_labels",)


def settings_diff(stored: dict[str, Any], current: dict[str, Any], prefix: str = "") -> str:
    """The settings that differ, as ``name stored -> current`` (nested keys joined by dots).

    Example:
        >>> settings_diff({"lr": 0.1, "s": {"steps": 22}}, {"lr": 0.1, "s": {"steps": 70}})
        's.steps 22 -> 70'
    """
    current = json.loads(json.dumps(current))  # tuples -> lists, as the stored copy went through JSON
    parts = []
    for key in sorted(set(stored) | set(current), key=str):
        a, b = stored.get(key, "(unset)"), current.get(key, "(unset)")
        if isinstance(a, dict) and isinstance(b, dict):
            inner = settings_diff(a, b, f"{prefix}{key}.")
            if inner:
                parts.append(inner)
        elif a != b:
            parts.append(f"{prefix}{key} {a!r} -> {b!r}")
    return ", ".join(parts)


class _InjectedFailure(RuntimeError):
    """Raised by tests (``fail_at_step``) to simulate a crash in the middle of an epoch."""


def _train_step(
    net: nn.Module, tasks: list, xb: torch.Tensor, yb: torch.Tensor, cfg: TrainConfig
) -> dict[str, float]:
    soft: torch.Tensor | None = None
    losses: dict[str, float] = {}

    def forward(config: Any, x: torch.Tensor) -> torch.Tensor:
        active = net.activate(config)
        inp = resize_to(x, active) if "resolution" in active else x
        if cfg.channels_last and x.device.type == "cpu":
            inp = inp.contiguous(memory_format=torch.channels_last)
        return net(inp)

    def loss_of(logits: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        if teacher is not None and cfg.distill:
            # In-place distillation: soft cross-entropy against the teacher's detached predictions, optionally
            # mixed with the labels' (Once-for-All adds both): a teacher that learns slowly (a ViT's, early on)
            # would otherwise hold every student near its own near-uniform predictions.
            kd = -(teacher * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
            if cfg.distill_labels <= 0:
                return kd
            return (1 - cfg.distill_labels) * kd + cfg.distill_labels * _label_loss(logits, labels)
        return _label_loss(logits, labels)

    def _label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        try:
            return F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
        except IndexError:  # torch: "Target 10 is out of bounds."; name the data and the fix instead
            top, n = int(labels.max()), logits.shape[1]
            raise ValueError(
                f"train_data: label {top} is out of range for the supernet's {n} outputs (classes 0-{n - 1}); "
                f"build the supernet with num_classes={top + 1} (or more), or relabel the data"
            ) from None

    for i, task in enumerate(tasks):
        config = task.config
        if task.candidates:
            config = _worst_candidate((config, *task.candidates), xb, yb, soft, forward, loss_of)
        logits = forward(config, xb)
        loss = loss_of(logits, soft, yb)
        if task.teacher:
            soft = F.softmax(logits.detach(), dim=1)
        if task.weight > 0:
            (loss * task.weight).backward()
        key = "loss_max" if task.teacher else ("loss_min" if i == 1 else "loss_other")
        lval = float(loss.detach())
        losses[key] = round(lval, 5) if key != "loss_other" else losses.get(key, 0.0) + lval
    if "loss_other" in losses:
        losses["loss_other"] = round(losses["loss_other"] / max(1, len(tasks) - 2), 5)
    return losses


_PROBE_EXAMPLES = 32


@torch.no_grad()
def _worst_candidate(
    configs: tuple[Any, ...],
    xb: torch.Tensor,
    yb: torch.Tensor,
    soft: torch.Tensor | None,
    forward: Any,
    loss_of: Any,
) -> Any:
    """The config with the highest loss on the first ``_PROBE_EXAMPLES`` examples (attentive sampling).

    The probe runs in training mode, like the step itself: batch-norm normalises with the probe's own
    statistics (the shared running statistics belong to no particular subnet; every subnet is recalibrated
    before it is evaluated). Ties go to the first config.
    """
    n = min(len(xb), _PROBE_EXAMPLES)
    teacher = None if soft is None else soft[:n]
    scores = [float(loss_of(forward(c, xb[:n]), teacher, yb[:n])) for c in configs]
    return configs[int(np.argmax(scores))]


def _validate(
    net: nn.Module, strategy: Strategy, val: tuple[torch.Tensor, torch.Tensor], calib_x: torch.Tensor
) -> dict[str, float]:
    from nas.evaluation import evaluate_subnet

    out = {}
    for name, c in (("max", net.space.max()), ("min", net.space.min())):
        out[name] = round(evaluate_subnet(net, c, val, calib_data=(calib_x, calib_x[:, 0, 0, 0])), 3)
    net.train()
    return out


class _Log:
    """Append-only JSONL metrics log (one line per record, flushed so a killed run keeps what it logged)."""

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def has_epoch_record(self, step: int) -> bool:
        """Whether the log holds the end-of-epoch record of ``step`` (the one with ``seconds``)."""
        if self.path is None or not self.path.is_file():
            return False
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (
                isinstance(record, dict)
                and record.get("step") == step
                and "epoch" in record
                and "seconds" in record
            ):
                return True
        return False

    def drop_after(self, step: int) -> None:
        """Forget the records of steps after ``step`` (and a line cut short by a kill), atomically.

        A run killed between checkpoints logged steps that its resumed session trains again; without this they
        would appear twice in the log.
        """
        if self.path is None or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a killed run may be half-written
            if not isinstance(record, dict):
                continue
            at = int(record.get("step", 0))
            # a phase event at the resumed step is logged again: the resumed session starts that step
            if at < step or (at == step and "event" not in record):
                kept.append(line + "\n")
        atomic.write_text(self.path, "".join(kept))


class _Bar:
    """A rich progress bar over optimizer steps (silent when disabled)."""

    def __init__(self, total: int, done: int, enabled: bool, title: str):
        self.progress = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        self.progress.start()
        self.task = self.progress.add_task(title, total=total, completed=done, info="")

    def update(self, step: int, losses: dict[str, float]) -> None:
        if self.progress is not None:
            info = " ".join(f"{k}={v:.3f}" for k, v in losses.items())
            self.progress.update(self.task, completed=step, info=info)

    def message(self, record: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.console.print(
                " ".join(f"{k}={v}" for k, v in record.items() if k != "step"), highlight=False
            )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


# ------------------------------------------------------------------------------------------------ public API
def train_supernet(
    net: nn.Module,
    train_data: Any,
    val_data: Any = None,
    strategy: str = "sandwich",
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 0.05,
    distill: bool = True,
    out_dir: str | os.PathLike = "runs/supernet",
    resume: bool = False,
    seed: int = 0,
    num_workers: int = 1,
    n_random: int = 2,
    checkpoint_every: int = 50,
    progress: bool = True,
    ray_address: str | None = None,
    overwrite: bool = False,
    device: str | torch.device = "auto",
    **options: Any,
) -> TrainResult:
    """Train every subnet of ``net`` at once by weight sharing; resumable; data-parallel on Ray Train.

    Args:
        net: a :class:`nas.Supernet`; trained in place (its final weights are also in ``out_dir``).
        train_data, val_data: ``TensorDataset`` (or ``(images, labels)``) at the data's native resolution;
            batches are resized to each sampled subnet's resolution. With ``val_data`` the max and min subnets
            are evaluated (BN recalibrated) after every epoch.
        lr: the peak learning rate: linear warmup over ``warmup_epochs``, then cosine decay towards 0, set
            every step (one schedule for the whole run, across the phases of phased strategies).
        strategy: one of ``sandwich``, ``uniform``, ``progressive``, ``delayed`` (see
            :mod:`nas.train.strategies`; ``strategy_options={...}`` passes e.g. ``delay`` or ``fractions``).
        distill: in-place distillation from the max subnet (strategies with a teacher).
        resume: continue from ``out_dir/checkpoint.safetensors`` if it exists (same arguments required).
        overwrite: start over in an ``out_dir`` that already holds a run (its checkpoint and weights are
            replaced). Without it (or ``resume``) such an ``out_dir`` raises ``FileExistsError``, so a second
            call with the same ``out_dir`` cannot silently discard a finished run.
        num_workers: > 1 runs data-parallel workers on Ray Train (gloo on CPU, nccl on GPU), on a local Ray
            instance, or on the cluster at ``ray_address``; all workers train the same subnets each step.
        n_random: random subnets per step besides max and min (sandwich-like strategies).
        device: where to train: ``"auto"`` (default: the GPU when CUDA is available, else the CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``. ``net`` stays there afterwards (with ``num_workers > 1``, on the CPU). The data stays in host memory (each
            batch is copied over). Only CPU runs are bit-for-bit reproducible (resumed or not); GPU kernels
            may sum in a different order each run. With ``num_workers > 1`` ``"auto"`` gives each worker a GPU
            when the Ray cluster has one per worker, else trains on CPUs (gloo); ``"cuda"`` requires them.
        checkpoint_every: also checkpoint every this many steps (checkpoints are written at epoch ends too).
        options: other :class:`TrainConfig` fields (``optimizer``, ``weight_decay``, ``label_smoothing``,
            ``augment``, ``channels_last`` (CPU only), ``warmup_epochs``, ``grad_clip``, ``distill_labels``,
            ``strategy_options``). A space's own recipe is not applied here: pass ``**recipe_for(net)``.
            ``weight_decay`` spares biases and normalisation parameters (every 1-D tensor), kernel
            transformation matrices and what ``net.no_weight_decay()`` names; ``grad_clip`` bounds the norm of
            the step's whole gradient (summed over its subnets, averaged over data-parallel workers).

    Example:
        >>> import torch, tempfile
        >>> from torch.utils.data import TensorDataset
        >>> from search_spaces import mobilenetv3
        >>> net = mobilenetv3.supernet("small", num_classes=10, in_channels=1)
        >>> data = TensorDataset(torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)))
        >>> r = train_supernet(net, data, epochs=1, batch_size=32, out_dir=tempfile.mkdtemp(), progress=False)
        >>> r.steps
        2
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(sorted(STRATEGIES))}")
    if epochs < 1 or batch_size < 2:
        raise ValueError(f"epochs={epochs} must be >= 1 and batch_size={batch_size} >= 2 (batch norm)")
    if num_workers < 1:
        raise ValueError(f"num_workers={num_workers} must be >= 1")
    # Checked before anything is written; with Ray the workers' devices are decided by the cluster's GPUs.
    train_device = resolve_device(device) if num_workers == 1 else None
    if num_workers > 1 and str(device) not in ("auto", "cpu", "cuda"):
        raise ValueError(
            f"device={device!r}: with num_workers > 1 use 'auto', 'cpu' or 'cuda' (one GPU per worker)"
        )
    phased = STRATEGIES[strategy].phase is not Strategy.phase
    if phased and getattr(type(net), "sort_channels", None) is Supernet.sort_channels:
        # Found now rather than at the first phase change, minutes or hours into the run.
        raise ValueError(
            f"strategy {strategy!r} re-sorts channels by importance between its phases, and "
            f"{type(net).__name__} does not implement sort_channels() (see examples/custom_space.py); "
            "implement it, or train with 'sandwich' or 'uniform'"
        )
    existing = [n for n in (CHECKPOINT, WEIGHTS) if (Path(out_dir) / n).exists()]
    if existing and not (resume or overwrite):
        raise FileExistsError(
            f"{out_dir} already holds a training run ({', '.join(existing)}); pass resume=True to continue it, "
            "overwrite=True to start over, or another out_dir"
        )
    fail_at_step = options.pop("_fail_at_step", None)
    augment = options.get("augment", True)
    if augment not in (True, False, "shift", "affine"):
        raise ValueError(f"augment={augment!r}: use True / 'shift' (whole-pixel shifts), 'affine' or False")
    unknown = set(options) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"train_supernet got unknown options {sorted(unknown)}; see nas.train.TrainConfig")
    cfg = TrainConfig(
        strategy=strategy,
        epochs=int(epochs),
        batch_size=int(batch_size),
        lr=float(lr),
        distill=bool(distill),
        n_random=int(n_random),
        seed=int(seed),
        checkpoint_every=int(checkpoint_every),
        **options,
    )
    if not 0.0 <= cfg.distill_labels <= 1.0:
        raise ValueError(
            f"distill_labels={cfg.distill_labels} must be in [0, 1] (the labels' share of the loss)"
        )
    x, y = _tensors(train_data, "train_data")
    val = _tensors(val_data, "val_data") if val_data is not None else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        for name in (CHECKPOINT, METRICS):
            (out / name).unlink(missing_ok=True)
    if num_workers == 1:
        return _run(net, x, y, val, cfg, out, resume, progress, _Sync(), fail_at_step, train_device)
    from nas.train.ray_launcher import run_on_ray

    # The net travels to the workers pickled: tensors left on a GPU (an earlier single-process GPU run) would not
    # unpickle on a worker without one. Each worker moves it to its own device.
    net.to("cpu")
    return run_on_ray(
        net, x, y, val, cfg, out, resume, progress, num_workers, ray_address, _run, _Sync, str(device)
    )
