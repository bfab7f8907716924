"""Accuracy of one subnet of a trained supernet, with batch-norm statistics recalibrated for that subnet.

The running BN statistics a supernet accumulates during training mix every subnet it sampled, so they fit no
single subnet. :func:`evaluate_subnet` therefore re-estimates them for the subnet being measured (as in
Once-for-All and BigNAS): it resets the running statistics, runs ``calib_batches`` (default
:data:`CALIB_BATCHES` = 8) batches of ``calib_batch_size`` (default 256) calibration images through the subnet
in training mode without gradients, averaging the batches' statistics weighted by their sizes (a cumulative
average, like ``momentum=None`` but exact for batches of unequal size), then measures top-1 accuracy in eval
mode. Afterwards every buffer of the supernet (BN running statistics, quantization observers) and the
train/eval mode are restored, so that calling it changes nothing. Only the buffers are saved (no deep
copy of the supernet), which keeps the cost of a call at one calibration pass plus one evaluation pass. On CPU
the supernet's convolution weights are switched to channels-last memory for the call (and back afterwards):
oneDNN's channels-last kernels evaluate a MobileNetV3 subnet about 2x faster than NCHW ones.

Accuracy is returned in **percent** (0-100).

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from search_spaces import mobilenetv3
    >>> net = mobilenetv3.supernet("small", num_classes=10, in_channels=1)
    >>> data = TensorDataset(torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)))
    >>> acc = evaluate_subnet(net, net.space.min(), data, calib_batches=1)
    >>> 0.0 <= acc <= 100.0
    True
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from nas.ops.elastic import clear_slice_caches
from nas.supernet import resize_to

__all__ = [
    "CALIB_BATCHES",
    "CALIB_BATCH_SIZE",
    "bn_calibration",
    "channels_last_on_cpu",
    "device_of",
    "evaluate_subnet",
    "recalibrate_bn",
    "subnet_correct",
]

CALIB_BATCHES = 8
CALIB_BATCH_SIZE = 256


def _tensors(data: Any, what: str, labels: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of a TensorDataset or an ``(x, y)`` pair; ``labels=False``: only the images are used,
    and a tensor of images alone is taken too."""
    if not labels and torch.is_tensor(data):
        x, y = data, None
    elif isinstance(data, TensorDataset):
        x, y = data.tensors[0], data.tensors[1]
    elif isinstance(data, tuple | list) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        x, y = data
    elif isinstance(data, Dataset):
        items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        x = torch.stack([torch.as_tensor(a) for a, _ in items])
        y = torch.as_tensor([int(b) for _, b in items])
    else:
        images = ", a tensor of images" if not labels else ""
        raise TypeError(
            f"{what}: expected a TensorDataset{images} or an (images, labels) pair, got {_kind_of(data)}"
        )
    if not labels:
        return check_images_and_labels(x, torch.zeros(len(x), dtype=torch.long), what)  # a (N, C, H, W) check
    return check_images_and_labels(x, y, what)


def _kind_of(data: Any) -> str:
    """What ``data`` is, for an error message: for a pair, also the types inside it and how to convert them."""
    if isinstance(data, tuple | list) and len(data) == 2:
        inner = ", ".join(type(t).__name__ for t in data)
        return f"a {type(data).__name__} of ({inner}); convert them with torch.as_tensor"
    return type(data).__name__


def check_images_and_labels(x: torch.Tensor, y: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images ``(N, C, H, W)`` and N integer class labels (as ``int64``), or a ``ValueError`` naming what
    is wrong.

    Why: uint8 images, one-hot or float labels otherwise fail deep inside a convolution or the loss, with
    torch's message about dtypes and sizes instead of one about the data.

    Example:
        >>> x, y = check_images_and_labels(torch.zeros(2, 1, 4, 4), torch.tensor([1, 0], dtype=torch.int32), "data")
        >>> y.dtype
        torch.int64
    """
    if x.dim() != 4 or len(x) != len(y):
        raise ValueError(
            f"{what}: expected images (N, C, H, W) and N labels, got {tuple(x.shape)} / {len(y)}"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{what}: images are {x.dtype}; pass float images normalised as for training (e.g. "
            "(x.float() / 255 - mean) / std per channel, as nas.data.npz does)"
        )
    if y.dim() != 1:
        raise ValueError(
            f"{what}: labels must be class indices of shape (N,), got shape {tuple(y.shape)}"
            + (" (one-hot? use y.argmax(1))" if y.dim() == 2 else "")
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{what}: labels are {y.dtype}; class indices must be integers (e.g. y.long())")
    if len(y) and int(y.min()) < 0:
        raise ValueError(f"{what}: labels must be class indices >= 0, found {int(y.min())}")
    return x, y.long()


def _bn_layers(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@contextlib.contextmanager
def bn_calibration(net: nn.Module) -> Iterator[None]:
    """Save every buffer, BN momentum and the training flags of ``net``; restore them on exit."""
    saved = {name: buf.detach().clone() for name, buf in net.named_buffers()}
    momenta = [(m, m.momentum) for m in _bn_layers(net)]
    modes = [(m, m.training) for m in net.modules()]
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buf in net.named_buffers():
                if name in saved:
                    buf.copy_(saved[name])
        for m, momentum in momenta:
            m.momentum = momentum
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def channels_last_on_cpu(net: nn.Module) -> Iterator[None]:
    """Hold a CPU model's 4-D (convolution) weights in channels-last memory for the block, then put the
    original tensors back.

    Values are unchanged; only the memory layout (and so oneDNN's choice of kernels) differs. Weights on
    other devices and weights already laid out channels-last are left alone. Not for a model another thread
    uses meanwhile, nor for one whose weights change inside the block (the originals come back).
    """
    switched = []
    for p in net.parameters():
        if p.dim() != 4 or p.device.type != "cpu":
            continue
        channels_last = p.data.to(memory_format=torch.channels_last)  # restrides size-1 dims too
        if channels_last.data_ptr() != p.data_ptr():
            switched.append((p, p.data))
            p.data = channels_last
    try:
        yield
    finally:
        for p, original in switched:
            p.data = original
        if switched:  # slices cached from the channels-last copies must not outlive them
            clear_slice_caches(net)


def device_of(net: nn.Module) -> torch.device:
    """The device ``net``'s parameters (else its buffers) live on, the CPU for a net with neither: where its
    inputs must go.

    Example:
        >>> device_of(nn.Linear(2, 2)).type
        'cpu'
    """
    tensor = next(itertools.chain(net.parameters(), net.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@torch.no_grad()  # forward passes for the running statistics only: no autograd graph, slice caches usable
def recalibrate_bn(
    net: nn.Module,
    calib_x: torch.Tensor,
    cfg: Mapping[str, Any] | None = None,
    batches: int = CALIB_BATCHES,
    batch_size: int = CALIB_BATCH_SIZE,
) -> int:
    """Re-estimate the running BN statistics of the active subnet from ``calib_x``; returns the images used.

    Uses ``batches * batch_size`` images drawn at random with a fixed seed (the same set on every call, so
    results are reproducible; drawn, not the first ones, because datasets are often sorted by class and
    statistics from a few classes skew every layer). Call it inside :func:`bn_calibration` to undo the
    change afterwards.

    The images are run in batches of at most ``batch_size`` whose sizes differ by at most one, and each batch's
    statistics count in proportion to its images (the running mean is then the exact mean over all of them).
    Why: torch's cumulative average (``momentum=None``) weighs every batch alike, so a short last batch counted
    as much as a full one (36 + 4 images put a MobileNetV3 layer's running mean 0.4 standard deviations off).

    A network without buffers (a ViT: layer norms keep no running statistics) has nothing a training-mode
    pass could re-estimate, so no image is run through it and 0 is returned.
    """
    if batches < 1 or batch_size < 1:
        raise ValueError(f"batches={batches} and batch_size={batch_size} must both be >= 1")
    if next(net.buffers(), None) is None:
        return 0
    layers = _bn_layers(net)
    for m in layers:
        m.reset_running_stats()
    net.train()
    # Dropout off, every kind (Dropout2d, AlphaDropout...): the statistics must be those of the eval pass.
    for m in net.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    used = 0
    n = min(len(calib_x), batches * batch_size)
    if n < len(calib_x):
        calib_x = calib_x[torch.randperm(len(calib_x), generator=torch.Generator().manual_seed(0))[:n]]
    device = device_of(net)
    for xb in torch.tensor_split(calib_x[:n], -(-n // batch_size)) if n else ():
        used += len(xb)
        for m in layers:  # this batch's share of the images so far: a size-weighted cumulative average
            m.momentum = len(xb) / used
        xb = xb.to(device, non_blocking=True)
        net(resize_to(xb, cfg) if cfg is not None and "resolution" in cfg else xb)
    net.eval()
    return used


@torch.no_grad()
def evaluate_subnet(
    net: nn.Module,
    cfg: Mapping[str, Any],
    data: Any,
    calib_data: Any = None,
    calib_batches: int = CALIB_BATCHES,
    calib_batch_size: int = CALIB_BATCH_SIZE,
    batch_size: int = 1000,
    recalibrate: bool = True,
    max_examples: int | None = None,
) -> float:
    """Top-1 accuracy in percent of subnet ``cfg`` of supernet ``net`` on ``data``.

    Args:
        net: a :class:`nas.Supernet`; its active config, buffers and mode are restored afterwards. It runs
            where its weights are (``net.cuda()`` evaluates on the GPU); the data may stay on the CPU: each
            batch is moved to the net's device.
        cfg: the subnet (validated and canonicalised by ``net.activate``).
        data: a ``TensorDataset`` (images, labels) or an ``(images, labels)`` pair at any resolution; images
            are resized to the subnet's resolution.
        calib_data: images for BN recalibration, as ``data`` or a tensor of images alone (defaults to
            ``data``; pass training images to keep the test set out of calibration). ``calib_batches`` x
            ``calib_batch_size`` images are used (8 x 256).
        recalibrate: ``False`` evaluates with the supernet's stored running statistics.
        max_examples: evaluate on the first ``max_examples`` examples only (faster, for searches).

    Example:
        >>> from search_spaces import mobilenetv3
        >>> net = mobilenetv3.supernet("small", num_classes=10, in_channels=1)
        >>> x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
        >>> 0.0 <= evaluate_subnet(net, net.space.max(), (x, y), calib_batches=1) <= 100.0
        True
    """
    correct = subnet_correct(
        net, cfg, data, calib_data, calib_batches, calib_batch_size, batch_size, recalibrate, max_examples
    )
    return 100.0 * int(correct.sum()) / len(correct)


@torch.no_grad()
def subnet_correct(
    net: nn.Module,
    cfg: Mapping[str, Any],
    data: Any,
    calib_data: Any = None,
    calib_batches: int = CALIB_BATCHES,
    calib_batch_size: int = CALIB_BATCH_SIZE,
    batch_size: int = 1000,
    recalibrate: bool = True,
    max_examples: int | None = None,
) -> torch.Tensor:
    """Which examples of ``data`` subnet ``cfg`` classifies correctly: a bool tensor, one per example.

    The same measurement as :func:`evaluate_subnet` (which is its mean, in percent), kept per example so that
    two subnets can be compared on the same images (:mod:`nas.significance`: is one really more accurate, or
    did the test set happen to favour it?). Arguments as :func:`evaluate_subnet`.

    Example:
        >>> from search_spaces import mobilenetv3
        >>> net = mobilenetv3.supernet("small", num_classes=10, in_channels=1)
        >>> x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
        >>> ok = subnet_correct(net, net.space.min(), (x, y), calib_batches=1)
        >>> ok.shape, ok.dtype
        (torch.Size([32]), torch.bool)
    """
    x, y = _tensors(data, "data")
    if max_examples is not None:
        x, y = x[:max_examples], y[:max_examples]
    if len(x) == 0:
        raise ValueError("data: no examples to evaluate")
    calib_x = _tensors(calib_data, "calib_data", labels=False)[0] if calib_data is not None else x
    previous = getattr(net, "active_config", None)
    with bn_calibration(net), channels_last_on_cpu(net):
        active = net.activate(cfg) if hasattr(net, "activate") else cfg
        try:
            if recalibrate:
                recalibrate_bn(net, calib_x, active, calib_batches, calib_batch_size)
            net.eval()
            correct = []
            device = device_of(net)
            for start in range(0, len(x), batch_size):
                xb = x[start : start + batch_size].to(device, non_blocking=True)
                if active is not None and "resolution" in active:
                    xb = resize_to(xb, active)
                # compared where the labels are (data may be on the GPU too, or on the CPU for a GPU net)
                predicted = net(xb).argmax(1).to(y.device)
                correct.append((predicted == y[start : start + batch_size]).cpu())
        finally:
            if previous is not None and hasattr(net, "activate"):
                net.activate(previous)
    return torch.cat(correct)
