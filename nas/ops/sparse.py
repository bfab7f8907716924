"""Sparsity as a searchable per-layer policy: unstructured magnitude masks and N:M patterns.

A sparsity value is a density (fraction of weights kept: ``1.0`` dense, ``0.5``, ``0.25``) or an N:M pattern
string such as ``"2:4"`` (in every group of M consecutive weights of an output channel's flattened
``(in, kh, kw)`` weights, the N largest are kept). For linear layers and 1x1 convs that is the layout NVIDIA's
sparse tensor cores run (``nas.semi_structured``); for a k x k conv a group spans kernel taps and channels,
unlike TensorRT's per-tap channel groups, so such convs stay dense on the GPU (the pattern still sets their
compressed size and their accuracy in the search).

Masks are exact: an unstructured mask keeps exactly ``round(density * numel)`` weights (the largest by
magnitude), an N:M mask exactly N per group. They are computed from the current
weights; elastic layers cache them per active config together with the sliced weight.

Example:
    >>> import torch
    >>> w = torch.randn(8, 16)
    >>> int(sparsity_mask(w, 0.25).sum())
    32
    >>> sparsity_mask(w, "2:4").view(8, 4, 4).sum(-1).unique().tolist()
    [2.0]
"""

from __future__ import annotations

import torch

__all__ = ["SPARSITY_LEVELS", "apply_sparsity", "density_of", "parse_sparsity", "sparsity_mask"]

# Ordered from the smallest (sparsest) network to the largest (dense).
SPARSITY_LEVELS: tuple[float | str, ...] = (0.25, 0.5, "2:4", 1.0)


def parse_sparsity(value: float | str) -> tuple[float, tuple[int, int] | None]:
    """``(density, (n, m) or None)`` of a sparsity value; raises ``ValueError`` for anything else."""
    if isinstance(value, str):
        try:
            n, m = (int(p) for p in value.split(":"))
        except ValueError:
            raise ValueError(
                f"sparsity {value!r}: use a density in (0, 1] or an 'N:M' pattern like '2:4'"
            ) from None
        if not 0 < n <= m:
            raise ValueError(f"sparsity {value!r}: an N:M pattern needs 0 < N <= M")
        return n / m, (n, m)
    density = float(value)
    if not 0.0 < density <= 1.0:
        raise ValueError(
            f"sparsity {value!r}: a density must lie in (0, 1]; or use an 'N:M' pattern like '2:4'"
        )
    return density, None


def density_of(value: float | str) -> float:
    """Fraction of weights kept under a sparsity value."""
    return parse_sparsity(value)[0]


@torch.no_grad()
def sparsity_mask(weight: torch.Tensor, value: float | str) -> torch.Tensor:
    """A 0/1 mask (weight's dtype) with exactly the stated density or N:M pattern.

    N:M groups run along the flattened input dimensions (``in * kh * kw``) of each output channel, which must
    be divisible by M.
    """
    density, pattern = parse_sparsity(value)
    magnitude = weight.detach().abs()
    if pattern is not None:
        n, m = pattern
        per_channel = magnitude[0].numel() if weight.dim() > 1 else magnitude.numel()
        if per_channel % m:
            raise ValueError(
                f"sparsity {value!r}: {per_channel} weights per output channel are not divisible by {m}"
            )
        groups = magnitude.reshape(-1, m)
        keep = groups.topk(n, dim=1, sorted=False).indices
        mask = torch.zeros_like(groups).scatter_(1, keep, 1.0)
        return mask.reshape(weight.shape)
    if density >= 1.0:
        return torch.ones_like(weight)
    k = round(density * weight.numel())
    flat = magnitude.flatten()
    mask = torch.zeros_like(flat)
    if k > 0:
        mask[flat.topk(k, sorted=False).indices] = 1.0
    return mask.reshape(weight.shape)


def apply_sparsity(weight: torch.Tensor, value: float | str) -> torch.Tensor:
    """``weight * mask`` (gradients flow to the kept weights); the weight itself when dense."""
    density, pattern = parse_sparsity(value)
    if density >= 1.0 and pattern is None:
        return weight
    return weight * sparsity_mask(weight, value)
