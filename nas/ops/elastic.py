"""Elastic layers: one set of max-size weights, sliced for the active sub-network.

Every layer keeps the weights of its largest configuration and computes with a slice of them: the first
output / input channels and, for convolutions, the centre crop of the kernel (Once-for-All's dynamic layers).
Input channels are read from the incoming tensor, so only output sizes and kernels need to be set.
``to_static()`` copies the active slice into a plain ``torch.nn`` layer that computes the same function.

Sliced weights are cached per active shape while no gradient is recorded (evaluation, search, latency
measurement): the cache is keyed on the parameter's storage and version counter, so an in-place update or
``load_state_dict`` (both bump the version) invalidates it without any bookkeeping by the caller. Fused
optimizers (``torch.optim.AdamW(..., fused=True)``) update parameters without bumping their version counters,
so the key also holds a count of ``torch.optim`` optimizer steps (a global step hook). Writes through
``param.data`` (``param.data.add_(...)``) bump nothing: call :func:`clear_slice_caches` after them.

Example:
    >>> import torch
    >>> conv = ElasticConv2d(8, 16, kernel_sizes=(3, 5))
    >>> conv.set_active(out_channels=12, kernel=3)
    >>> y = conv(torch.randn(1, 6, 10, 10))
    >>> tuple(y.shape)
    (1, 12, 10, 10)
    >>> static = conv.to_static(in_channels=6)
    >>> bool(torch.equal(static.weight, conv.active_weight(6)))
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from nas.ops import quant as _quant
from nas.ops import sparse as _sparse

__all__ = [
    "ElasticBatchNorm2d",
    "ElasticConv2d",
    "ElasticLayerNorm",
    "ElasticLinear",
    "ElasticSequential",
    "make_divisible",
]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor`` without going more than 10% below it (MobileNet rule).

    Example:
        >>> make_divisible(16 * 4.5), make_divisible(10, 8)
        (72, 16)
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _check_size(layer: str, what: str, value: int, maximum: int) -> int:
    number = int(value)
    if number != value:  # int() would cut 8.4 to 8 without a word
        raise ValueError(
            f"{layer}: {what}={value!r} is not a whole number; round it (e.g. nas.ops.make_divisible)"
        )
    value = number
    if not 1 <= value <= maximum:
        raise ValueError(f"{layer}: {what}={value} is out of range; use an integer in [1, {maximum}]")
    return value


class _SliceCache:
    """Remembers one derived tensor per key; reused only when no autograd graph is being recorded."""

    __slots__ = ("key", "value")

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: torch.Tensor | None = None

    @staticmethod
    def usable(*params: torch.Tensor | None) -> bool:
        """Whether a slice derived from ``params`` may be cached: only if none of them records a gradient.

        Every tensor the slice is computed from must be checked, not just the main weight: a cached slice
        that carries an autograd graph (e.g. through a trainable kernel transform of a frozen weight) would
        be backpropagated through a second time and fail.
        """
        return not (torch.is_grad_enabled() and any(p is not None and p.requires_grad for p in params))

    def get(self, key: tuple) -> torch.Tensor | None:
        return self.value if key == self.key else None

    def put(self, key: tuple, value: torch.Tensor) -> torch.Tensor:
        self.key, self.value = key, value
        return value

    def clear(self) -> None:
        self.key = self.value = None

    def __reduce__(self):
        # Copies (deepcopy, pickling for Ray workers) start empty: cached tensors are derived data.
        return (type(self), ())


def clear_slice_caches(module: nn.Module) -> None:
    """Forget the weight slices every elastic layer of ``module`` cached.

    Needed after a layer's weight tensor was swapped out and back (``param.data = ...``): a later tensor at a
    freed address with the same version counter would otherwise match a cache key and return a stale slice.
    """
    for m in module.modules():
        for value in vars(m).values():
            if isinstance(value, _SliceCache):
                value.clear()


class _SliceCachingModule(nn.Module):
    """Base of the elastic layers that hold :class:`_SliceCache` attributes: empties them on ``_apply``.

    ``.to()``, ``.half()``, ``.float()``, ``.cuda()`` swap the parameter tensors (``param.data = ...``) without
    bumping their version counters; after a round trip (``.half().float()``) the new tensor can sit at the
    freed address of the old one, and the cache key would match a slice of the old values.
    """

    def _apply(self, fn, recurse: bool = True):
        for value in vars(self).values():
            if isinstance(value, _SliceCache):
                value.clear()
        return super()._apply(fn, recurse)


class _ViewCache(dict):
    """Per-shape tensor views; empty in copies and pickles, like :class:`_SliceCache`."""

    def __reduce__(self):
        return (type(self), ())


_optimizer_steps = 0  # torch.optim steps taken in this process (see _count_optimizer_step)


def _count_optimizer_step(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
    """Global ``torch.optim`` step hook: fused optimizers (``fused=True``) write parameters in place without
    bumping their version counters, so the step count is part of every slice-cache key."""
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)


def _param_state(p: torch.Tensor | None) -> tuple:
    # data_ptr changes on .to(device) / re-assignment, _version on every in-place update (copy_, most optimizer
    # steps), the step count on every optimizer step (fused optimizers bump no version counter).
    if p is None:
        return ()
    return (p.data_ptr(), p._version, _optimizer_steps, p.dtype, p.device, torch.is_inference_mode_enabled())


def _pointwise_as_matmul(x: torch.Tensor) -> bool:
    """Whether a 1x1 convolution of ``x`` is faster as one matrix product (CPU, channels-last memory)."""
    return x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def _pointwise_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution as ``F.linear`` over the pixels of a channels-last ``x`` (same result, same layout).

    Why: oneDNN's CPU convolution spends more time in its backward pass at the small maps of a searchable
    net than BLAS needs for the same product (2-3x at 1x1 to 4x4 maps, measured on a 2-core Xeon).
    """
    n, c, h, w = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view: channels-last memory is NHWC
    out = F.linear(pixels, weight.reshape(weight.shape[0], c), bias)
    return out.view(n, h, w, -1).permute(0, 3, 1, 2)


class ElasticConv2d(_SliceCachingModule):
    """A 2-D convolution whose output channels, input channels and kernel size shrink at run time.

    Args:
        in_channels: largest number of input channels (for ``depthwise``, the channel count).
        out_channels: largest number of output channels (ignored for ``depthwise``: equal to the input).
        kernel_sizes: odd kernel sizes the layer may run with; the weights have the largest, smaller kernels
            are its centre crop ("same" padding ``k // 2``).
        stride: convolution stride.
        depthwise: one filter per channel (``groups`` = active channels).
        bias: learn a bias.
        kernel_transform: Once-for-All's kernel transformation matrices: a smaller kernel is the centre crop of
            the next larger *transformed* kernel, ``crop(w) @ T_k`` with one learned ``k*k x k*k`` matrix per
            smaller size, shared by all channels (identity at start). Without them the centre taps of the 7x7
            kernel must serve as the 3x3 kernel as well; with them each size gets its own view of the shared
            weights for ``(k*k) ** 2`` extra parameters per smaller size. ``kernel_transforms["k5"]`` maps
            the 5x5 crop of the 7x7 kernel (OFA's ``7to5_matrix``), ``"k3"`` the 3x3 crop of that (``5to3``);
            OFA applies its matrices with ``F.linear``, i.e. transposed: load them as ``M.T``.

    Example:
        >>> dw = ElasticConv2d(32, 32, kernel_sizes=(3, 5, 7), depthwise=True)
        >>> dw.set_active(kernel=5)
        >>> tuple(dw(torch.randn(2, 24, 8, 8)).shape)
        (2, 24, 8, 8)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_sizes: int | Sequence[int] = 1,
        stride: int = 1,
        depthwise: bool = False,
        bias: bool = False,
        kernel_transform: bool = False,
    ):
        super().__init__()
        kernels = (kernel_sizes,) if isinstance(kernel_sizes, int) else tuple(int(k) for k in kernel_sizes)
        if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"ElasticConv2d: kernel_sizes must be odd positive ints, got {kernel_sizes!r}")
        if depthwise:
            out_channels = in_channels
        self.max_in_channels = int(in_channels)
        self.max_out_channels = int(out_channels)
        self.kernel_sizes = tuple(sorted(set(kernels)))
        self.max_kernel = self.kernel_sizes[-1]
        self.stride = int(stride)
        self.depthwise = bool(depthwise)
        fan_in_channels = 1 if depthwise else in_channels
        self.weight = nn.Parameter(
            torch.empty(out_channels, fan_in_channels, self.max_kernel, self.max_kernel)
        )
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.kernel_transforms: nn.ParameterDict | None = None
        if kernel_transform and len(self.kernel_sizes) > 1:
            self.kernel_transforms = nn.ParameterDict(
                {f"k{k}": nn.Parameter(torch.empty(k * k, k * k)) for k in self.kernel_sizes[:-1]}
            )
        self.active_out_channels = self.max_out_channels
        self.active_kernel = self.max_kernel
        # Weight policy (issue: quantization / sparsity as dimensions): 32 bits and density 1.0 are float/dense.
        self.active_bits = 32
        self.active_sparsity: float | str = 1.0
        self._cache = _SliceCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s initialisation for the max-size weights."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.max_kernel * self.max_kernel
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        if self.kernel_transforms is not None:
            with torch.no_grad():
                for t in self.kernel_transforms.values():
                    t.copy_(torch.eye(t.shape[0]))
        self._cache.clear()

    def set_active(self, out_channels: int | None = None, kernel: int | None = None) -> None:
        """Choose the active output channels (not for depthwise layers) and kernel size."""
        if out_channels is not None:
            if self.depthwise:
                raise ValueError("ElasticConv2d(depthwise=True): output channels follow the input channels")
            self.active_out_channels = _check_size(
                "ElasticConv2d", "out_channels", out_channels, self.max_out_channels
            )
        if kernel is not None:
            if int(kernel) not in self.kernel_sizes:
                raise ValueError(
                    f"ElasticConv2d: kernel={kernel!r} is not allowed; use one of {self.kernel_sizes}"
                )
            self.active_kernel = int(kernel)

    def out_channels_for(self, in_channels: int) -> int:
        """Output channels when ``in_channels`` come in."""
        return in_channels if self.depthwise else self.active_out_channels

    def active_weight(self, in_channels: int) -> torch.Tensor:
        """The weight slice for ``in_channels`` inputs at the active settings (a view, or the cached copy)."""
        c_out = self.out_channels_for(in_channels)
        k = self.active_kernel
        transforms = () if self.kernel_transforms is None else tuple(self.kernel_transforms.values())
        if not _SliceCache.usable(self.weight, *transforms):
            return self._slice(in_channels, c_out, k)
        key = (in_channels, c_out, k, *_param_state(self.weight), *self.transform_state())
        key += tuple(s for t in transforms for s in _param_state(t))
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache.put(key, self._slice(in_channels, c_out, k).contiguous())
        return cached

    def _slice(self, c_in: int, c_out: int, k: int) -> torch.Tensor:
        w = self.weight
        if self.depthwise:
            _check_size("ElasticConv2d(depthwise)", "in_channels", c_in, self.max_in_channels)
            w = w[:c_out]
        else:
            _check_size("ElasticConv2d", "in_channels", c_in, self.max_in_channels)
            if c_out != self.max_out_channels or c_in != self.max_in_channels:
                w = w[:c_out, :c_in]
        if k != self.max_kernel:
            if self.kernel_transforms is None:
                start = (self.max_kernel - k) // 2
                w = w[:, :, start : start + k, start : start + k]
            else:  # crop to each smaller size in turn, transforming after each crop (as OFA does)
                for size in reversed([s for s in self.kernel_sizes if k <= s < self.max_kernel]):
                    start = (w.shape[-1] - size) // 2
                    w = w[:, :, start : start + size, start : start + size]
                    flat = w.reshape(w.shape[0], w.shape[1], size * size)
                    w = (flat @ self.kernel_transforms[f"k{size}"]).reshape(w.shape)
        return self.transform_weight(w)

    def set_policy(self, bits: int | None = None, sparsity: float | str | None = None) -> None:
        """Choose the weight bit-width (4, 8 or 32 = float) and sparsity (density or ``"N:M"``).

        The sliced weight is masked first (magnitude or N:M, from the current weights), then fake-quantized
        per output channel; both are cached with the slice when no gradient is recorded.
        """
        if bits is not None:
            self.active_bits = _quant._check_bits(bits)
        if sparsity is not None:
            _sparse.parse_sparsity(sparsity)
            self.active_sparsity = sparsity

    def transform_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """Apply the active sparsity mask, then the active weight fake quantization."""
        if self.active_sparsity != 1.0:
            weight = _sparse.apply_sparsity(weight, self.active_sparsity)
        if self.active_bits != 32:
            weight = _quant.fake_quant_weight(weight, self.active_bits)
        return weight

    def transform_state(self) -> tuple:
        """Cache-key entries for :meth:`transform_weight`."""
        return (self.active_bits, self.active_sparsity)

    def active_bias(self, in_channels: int) -> torch.Tensor | None:
        if self.bias is None:
            return None
        c_out = self.out_channels_for(in_channels)
        return self.bias if c_out == self.max_out_channels else self.bias[:c_out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c_in = x.shape[1]
        groups = c_in if self.depthwise else 1
        k = self.active_kernel
        weight = self.active_weight(c_in)
        if k == 1 and groups == 1 and self.stride == 1 and _pointwise_as_matmul(x):
            return _pointwise_matmul(x, weight, self.active_bias(c_in))
        return F.conv2d(x, weight, self.active_bias(c_in), self.stride, k // 2, 1, groups)

    @torch.no_grad()
    def to_static(self, in_channels: int) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding a copy of the active slice."""
        c_out = self.out_channels_for(in_channels)
        k = self.active_kernel
        conv = nn.Conv2d(
            in_channels,
            c_out,
            k,
            stride=self.stride,
            padding=k // 2,
            groups=in_channels if self.depthwise else 1,
            bias=self.bias is not None,
        )
        conv.weight.copy_(self._slice(in_channels, c_out, k))
        if self.bias is not None:
            conv.bias.copy_(self.bias[:c_out])
        return conv.to(self.weight.device)

    @torch.no_grad()
    def permute_channels(self, order: torch.Tensor, dim: int) -> None:
        """Reorder the max-size weights along output (``dim=0``) or input (``dim=1``) channels."""
        if self.depthwise or dim == 0:
            self.weight.copy_(self.weight.index_select(0, order))
            if self.bias is not None:
                self.bias.copy_(self.bias.index_select(0, order))
        else:
            self.weight.copy_(self.weight.index_select(1, order))
        self._cache.clear()

    def extra_repr(self) -> str:
        kind = "depthwise, " if self.depthwise else ""
        kind += "kernel_transform, " if self.kernel_transforms is not None else ""
        return (
            f"{self.max_in_channels}, {self.max_out_channels}, {kind}kernel_sizes={self.kernel_sizes}, "
            f"stride={self.stride}, bias={self.bias is not None}, active_out={self.active_out_channels}, "
            f"active_kernel={self.active_kernel}"
        )


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over the first ``C`` channels of its max-size parameters and running statistics.

    In training mode the batch statistics normalise and the first ``C`` running statistics are updated (in
    place, through views); in eval mode the first ``C`` running statistics are used. Subclassing
    ``nn.BatchNorm2d`` keeps the state-dict layout and lets BN recalibration code treat it as any batch norm.

    Example:
        >>> bn = ElasticBatchNorm2d(16).eval()
        >>> tuple(bn(torch.randn(2, 8, 4, 4)).shape)
        (2, 8, 4, 4)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c > self.num_features:
            raise ValueError(
                f"ElasticBatchNorm2d: {c} input channels exceed num_features={self.num_features}"
            )
        if not self.training and self.affine and self.track_running_stats and not torch.is_grad_enabled():
            # Inference fast path: reuse the sliced views (they see in-place updates of the full tensors; a
            # replaced tensor, e.g. after .to(device), has a new data_ptr and misses the cache).
            key = (
                c,
                self.weight.data_ptr(),
                self.bias.data_ptr(),
                self.running_mean.data_ptr(),
                self.running_var.data_ptr(),
                torch.is_inference_mode_enabled(),
            )
            views = self._eval_views.get(key) if hasattr(self, "_eval_views") else None
            if views is None:
                if not hasattr(self, "_eval_views") or len(self._eval_views) > 16:
                    self._eval_views = _ViewCache()
                views = (self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c])
                self._eval_views[key] = views
            mean, var, weight, bias = views
            return torch.batch_norm(x, weight, bias, mean, var, False, 0.0, self.eps, True)
        # Same momentum bookkeeping as nn.BatchNorm2d.forward.
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or self.running_mean is None
        if c == self.num_features:
            mean, var, weight, bias = self.running_mean, self.running_var, self.weight, self.bias
        else:
            mean = None if self.running_mean is None else self.running_mean[:c]
            var = None if self.running_var is None else self.running_var[:c]
            weight = None if self.weight is None else self.weight[:c]
            bias = None if self.bias is None else self.bias[:c]
        track = not self.training or self.track_running_stats
        return F.batch_norm(
            x,
            mean if track else None,
            var if track else None,
            weight,
            bias,
            use_batch_stats,
            momentum,
            self.eps,
        )

    @torch.no_grad()
    def to_static(self, channels: int) -> nn.BatchNorm2d:
        """A plain ``nn.BatchNorm2d`` with the first ``channels`` parameters and running statistics."""
        _check_size("ElasticBatchNorm2d", "channels", channels, self.num_features)
        bn = nn.BatchNorm2d(channels, self.eps, self.momentum, self.affine, self.track_running_stats)
        if self.affine:
            bn.weight.copy_(self.weight[:channels])
            bn.bias.copy_(self.bias[:channels])
        if self.track_running_stats:
            bn.running_mean.copy_(self.running_mean[:channels])
            bn.running_var.copy_(self.running_var[:channels])
            bn.num_batches_tracked.copy_(self.num_batches_tracked)
        like = next(iter([*self.parameters(), *self.buffers()]), None)  # none: no affine, no running stats
        return bn.to(like.device if like is not None else "cpu").train(self.training)

    @torch.no_grad()
    def permute_channels(self, order: torch.Tensor) -> None:
        """Reorder every per-channel tensor."""
        for t in (self.weight, self.bias, self.running_mean, self.running_var):
            if t is not None:
                t.copy_(t.index_select(0, order))


class ElasticLinear(_SliceCachingModule):
    """A linear layer using the first input features (from the input) and the first ``active_out_features``.

    Example:
        >>> fc = ElasticLinear(64, 10)
        >>> fc.set_active(out_features=5)
        >>> tuple(fc(torch.randn(3, 40)).shape)
        (3, 5)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.max_in_features = int(in_features)
        self.max_out_features = int(out_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.active_out_features = self.max_out_features
        self._cache = _SliceCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialisation."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.max_in_features)
            nn.init.uniform_(self.bias, -bound, bound)
        self._cache.clear()

    def set_active(self, out_features: int | None = None) -> None:
        if out_features is not None:
            self.active_out_features = _check_size(
                "ElasticLinear", "out_features", out_features, self.max_out_features
            )

    def active_weight(self, in_features: int) -> torch.Tensor:
        _check_size("ElasticLinear", "in_features", in_features, self.max_in_features)
        c_out = self.active_out_features
        if c_out == self.max_out_features and in_features == self.max_in_features:
            return self.weight
        if not _SliceCache.usable(self.weight):
            return self.weight[:c_out, :in_features]
        key = (in_features, c_out, *_param_state(self.weight))
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache.put(key, self.weight[:c_out, :in_features].contiguous())
        return cached

    def active_bias(self) -> torch.Tensor | None:
        if self.bias is None or self.active_out_features == self.max_out_features:
            return self.bias
        return self.bias[: self.active_out_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.active_weight(x.shape[-1]), self.active_bias())

    @torch.no_grad()
    def to_static(self, in_features: int) -> nn.Linear:
        """A plain ``nn.Linear`` holding a copy of the active slice."""
        _check_size("ElasticLinear", "in_features", in_features, self.max_in_features)
        fc = nn.Linear(in_features, self.active_out_features, bias=self.bias is not None)
        fc.weight.copy_(self.weight[: self.active_out_features, :in_features])
        if self.bias is not None:
            fc.bias.copy_(self.bias[: self.active_out_features])
        return fc.to(self.weight.device)

    def extra_repr(self) -> str:
        return f"{self.max_in_features}, {self.max_out_features}, active_out={self.active_out_features}"


class ElasticLayerNorm(nn.LayerNorm):
    """Layer norm over the last dimension using its first ``C`` affine parameters (``C`` from the input).

    Example:
        >>> ln = ElasticLayerNorm(32)
        >>> tuple(ln(torch.randn(2, 5, 20)).shape)
        (2, 5, 20)
    """

    def __init__(self, num_features: int, eps: float = 1e-5, elementwise_affine: bool = True):
        super().__init__(num_features, eps=eps, elementwise_affine=elementwise_affine)
        self.max_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = _check_size("ElasticLayerNorm", "features", x.shape[-1], self.max_features)
        weight = None if self.weight is None else self.weight[:c]
        bias = None if self.bias is None else self.bias[:c]
        return F.layer_norm(x, (c,), weight, bias, self.eps)

    @torch.no_grad()
    def to_static(self, features: int) -> nn.LayerNorm:
        _check_size("ElasticLayerNorm", "features", features, self.max_features)
        ln = nn.LayerNorm(features, eps=self.eps, elementwise_affine=self.elementwise_affine)
        if self.elementwise_affine:
            ln.weight.copy_(self.weight[:features])
            if self.bias is not None:
                ln.bias.copy_(self.bias[:features])
        return ln.to(self.weight.device if self.weight is not None else "cpu")


class ElasticSequential(nn.ModuleList):
    """Elastic depth: a stage of blocks that runs only its first ``active_depth`` blocks.

    Example:
        >>> stage = ElasticSequential([nn.Identity(), nn.ReLU(), nn.Tanh()], depths=(1, 2, 3))
        >>> stage.set_active(depth=2)
        >>> len(stage.active_blocks())
        2
    """

    def __init__(self, blocks: Iterable[nn.Module], depths: Sequence[int] | None = None):
        super().__init__(blocks)
        self.depths = tuple(sorted(set(depths))) if depths else (len(self),)
        if self.depths[0] < 1 or self.depths[-1] > len(self):
            raise ValueError(f"ElasticSequential: depths {self.depths} must lie in [1, {len(self)}]")
        self.active_depth = self.depths[-1]

    def set_active(self, depth: int) -> None:
        if int(depth) not in self.depths:
            raise ValueError(f"ElasticSequential: depth={depth!r} is not allowed; use one of {self.depths}")
        self.active_depth = int(depth)

    def active_blocks(self) -> list[nn.Module]:
        return list(self)[: self.active_depth]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.active_depth):
            x = self[i](x)
        return x
