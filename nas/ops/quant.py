"""Quantization as a searchable per-layer policy: weight fake quantization and 8-bit activation observers.

Weights: symmetric per-output-channel fake quantization to ``bits`` in {4, 8} (``bits = 32`` is float, the
identity). The scale of a channel is ``max|w| / (2**(bits-1) - 1)``; rounding uses
``torch.fake_quantize_per_channel_affine``, whose gradient is the straight-through estimator.

Activations: where a layer's weights are quantized, its input is fake-quantized to 8 bits (asymmetric,
per tensor, ``0..255``). :class:`ElasticActQuant` keeps one running min/max observer per weight bit-width,
because a 4-bit and an 8-bit subnet see different activation ranges: in training mode it updates the observer
of the active bit-width (exponential moving average) and quantizes with it; in eval mode it uses the
calibrated range. An observer that has never seen data leaves activations in float.

Example:
    >>> import torch
    >>> w = torch.randn(8, 4, 3, 3)
    >>> bool(torch.equal(fake_quant_weight(w, 32), w))
    True
    >>> int(((fake_quant_weight(w, 4) / weight_scale(w, 4).view(-1, 1, 1, 1)).round().abs().max()))
    7
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nas.static import ActQuant

__all__ = ["ACT_BITS", "WEIGHT_BITS", "ActQuant", "ElasticActQuant", "fake_quant_weight", "weight_scale"]

WEIGHT_BITS = (4, 8, 32)
ACT_BITS = 8


def _check_bits(bits: int) -> int:
    if int(bits) not in WEIGHT_BITS:
        raise ValueError(f"weight bits={bits!r} is not supported; use one of {WEIGHT_BITS} (32 = float)")
    return int(bits)


def weight_scale(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel symmetric scale ``max|w| / (2**(bits-1) - 1)`` (float32, never zero)."""
    qmax = 2 ** (_check_bits(bits) - 1) - 1
    amax = weight.detach().abs().flatten(1).amax(dim=1)
    return (amax / qmax).clamp_min(1e-12).float()


def fake_quant_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-channel fake quantization with a straight-through gradient; identity for 32 bits."""
    if _check_bits(bits) == 32:
        return weight
    qmax = 2 ** (bits - 1) - 1
    scale = weight_scale(weight, bits)
    zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -qmax, qmax)


def act_qparams(min_val: float, max_val: float) -> tuple[float, int]:
    """Asymmetric uint8 ``(scale, zero_point)`` for a range (widened to include 0, as integer kernels need)."""
    lo, hi = min(float(min_val), 0.0), max(float(max_val), 0.0)
    # float32 arithmetic, as the quantize kernels use it; the result round-trips through JSON exactly.
    scale = float(torch.tensor(max(hi - lo, 1e-8) / 255.0, dtype=torch.float32))
    zero_point = int(min(255, max(0, round(-lo / scale))))
    return scale, zero_point


class ElasticActQuant(nn.Module):
    """8-bit input fake quantization with one running min/max observer per weight bit-width.

    ``active_bits`` selects the observer (32 disables quantization). ``momentum`` weighs new batch ranges.
    """

    def __init__(self, weight_bits: Sequence[int] = (4, 8), momentum: float = 0.1):
        super().__init__()
        self.weight_bits = tuple(int(b) for b in weight_bits if int(b) < 32)
        n = len(self.weight_bits)
        self.register_buffer("min_val", torch.zeros(n))
        self.register_buffer("max_val", torch.zeros(n))
        self.register_buffer("observed", torch.zeros(n, dtype=torch.bool))
        self.momentum = float(momentum)
        self.active_bits = 32
        self._qparams_key: tuple | None = None
        self._qparams_buffers: tuple[torch.Tensor, ...] = ()  # the buffers _qparams_key was taken from
        self._qparams: tuple[float, int] | None = None

    def set_active(self, bits: int) -> None:
        bits = _check_bits(bits)
        if bits < 32 and bits not in self.weight_bits:
            raise ValueError(f"ElasticActQuant: no observer for {bits}-bit weights; have {self.weight_bits}")
        self.active_bits = bits

    def qparams(self) -> tuple[float, int] | None:
        """``(scale, zero_point)`` of the active observer, or ``None`` when off or never calibrated."""
        if self.active_bits == 32:
            return None
        i = self.weight_bits.index(self.active_bits)
        # Version counters alone do not identify the ranges: ``.to(device)`` replaces the buffers with new
        # tensors whose counters restart at 0, and a later ``load_state_dict`` (or a few observations) brings
        # them back to the cached versions with other values. So the buffers themselves are compared too.
        buffers = (self.min_val, self.max_val, self.observed)
        key = (i, *(t._version for t in buffers))
        if key != self._qparams_key or any(a is not b for a, b in zip(buffers, self._qparams_buffers)):
            observed = bool(self.observed[i])
            self._qparams = act_qparams(self.min_val[i], self.max_val[i]) if observed else None
            self._qparams_key, self._qparams_buffers = key, buffers
        return self._qparams

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Update the active observer with the range of ``x``."""
        i = self.weight_bits.index(self.active_bits)
        lo, hi = x.detach().min().float(), x.detach().max().float()
        if bool(self.observed[i]):
            self.min_val[i].lerp_(lo, self.momentum)
            self.max_val[i].lerp_(hi, self.momentum)
        else:
            self.min_val[i] = lo
            self.max_val[i] = hi
            self.observed[i] = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active_bits == 32:
            return x
        if self.training:
            self.observe(x)
        q = self.qparams()
        if q is None:
            return x
        return torch.fake_quantize_per_tensor_affine(x, q[0], q[1], 0, 255)

    def to_static(self) -> nn.Module:
        """``ActQuant`` with the active observer's parameters, or ``Identity`` when inactive/uncalibrated."""
        q = self.qparams()
        return nn.Identity() if q is None else ActQuant(*q)

    def extra_repr(self) -> str:
        return f"weight_bits={self.weight_bits}, active_bits={self.active_bits}"
