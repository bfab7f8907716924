"""Elastic transformer layers (AutoFormer-style weight sharing): attention, pre-norm block, patch embedding.

As in AutoFormer (Chen et al., ICCV 2021) every head has a fixed width ``head_dim``; a subnet uses the first
``num_heads`` heads of the q, k and v projections and the first ``embed_dim`` channels of every
embedding-sized tensor (projections, layer norms, position embedding, class token). The MLP's hidden width
is ``int(embed_dim * mlp_ratio)``, its first channels. Each layer's ``to_static`` copies the active slices
into the plain modules of :mod:`nas.static` and ``torch.nn`` (``SelfAttention``, ``nn.Linear``,
``nn.LayerNorm``, ``PatchTokens``) that compute the same function and export to ONNX as plain MatMul /
Softmax / LayerNorm nodes.

Example:
    >>> import torch
    >>> attn = ElasticMultiheadSelfAttention(embed_dim=32, num_heads=4, head_dim=8)
    >>> attn.set_active(num_heads=2)
    >>> x = torch.randn(2, 5, 24)  # 5 tokens of the first 24 embedding channels
    >>> static = attn.to_static(embed_dim=24)
    >>> bool((static(x) - attn(x)).abs().max() < 1e-6), tuple(static.qkv.weight.shape)
    (True, (48, 24))
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas.ops.elastic import (
    ElasticLayerNorm,
    ElasticLinear,
    _check_size,
    _param_state,
    _SliceCache,
    _SliceCachingModule,
)
from nas.static import PatchTokens, Residual, SelfAttention, attend
from nas.supernet import LayerSpec

__all__ = ["ElasticMultiheadSelfAttention", "ElasticPatchEmbed", "ElasticTransformerBlock", "mlp_hidden"]


def mlp_hidden(embed_dim: int, mlp_ratio: float) -> int:
    """Hidden width of a transformer MLP: ``int(embed_dim * mlp_ratio)`` (AutoFormer's rule).

    Example:
        >>> mlp_hidden(48, 3.5)
        168
    """
    return int(embed_dim * float(mlp_ratio))


class ElasticMultiheadSelfAttention(_SliceCachingModule):
    """Multi-head self-attention whose number of heads and embedding width shrink at run time.

    The max-size q/k/v projection (``qkv_weight``: ``3 * max_heads * head_dim`` rows, queries then keys then
    values, head-major) and output projection are stored once. A subnet with ``h`` heads on ``e`` embedding
    channels (read from the input, like every elastic layer) uses the first ``h`` heads of each of q, k and v
    and the first ``e`` input columns, and projects back to the same ``e`` channels; the head width and the
    ``1 / sqrt(head_dim)`` scale never change.

    Args:
        embed_dim: largest embedding width.
        num_heads: largest number of heads.
        head_dim: width of every head (AutoFormer: 64).
        bias: learn biases of both projections.

    Example:
        >>> attn = ElasticMultiheadSelfAttention(16, num_heads=3, head_dim=4)
        >>> attn.set_active(num_heads=1)
        >>> tuple(attn(torch.randn(2, 7, 12)).shape)
        (2, 7, 12)
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int = 64, bias: bool = True):
        super().__init__()
        if min(embed_dim, num_heads, head_dim) < 1:
            raise ValueError(
                f"ElasticMultiheadSelfAttention: embed_dim={embed_dim}, num_heads={num_heads} and "
                f"head_dim={head_dim} must all be >= 1"
            )
        self.max_embed_dim = int(embed_dim)
        self.max_heads = int(num_heads)
        self.head_dim = int(head_dim)
        inner = self.max_heads * self.head_dim
        self.qkv_weight = nn.Parameter(torch.empty(3 * inner, self.max_embed_dim))
        self.qkv_bias = nn.Parameter(torch.empty(3 * inner)) if bias else None
        self.proj_weight = nn.Parameter(torch.empty(self.max_embed_dim, inner))
        self.proj_bias = nn.Parameter(torch.empty(self.max_embed_dim)) if bias else None
        self.active_heads = self.max_heads
        self._cache = _SliceCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialisation of both max-size projections."""
        for w, b in ((self.qkv_weight, self.qkv_bias), (self.proj_weight, self.proj_bias)):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            if b is not None:
                nn.init.uniform_(b, -1 / math.sqrt(w.shape[1]), 1 / math.sqrt(w.shape[1]))
        self._cache.clear()

    def set_active(self, num_heads: int | None = None) -> None:
        """Choose the number of heads (the embedding width comes with the input)."""
        if num_heads is not None:
            self.active_heads = _check_size(
                "ElasticMultiheadSelfAttention", "num_heads", num_heads, self.max_heads
            )

    def _slices(self, embed_dim: int, heads: int) -> tuple[torch.Tensor, ...]:
        e, width, inner = embed_dim, heads * self.head_dim, self.max_heads * self.head_dim
        # Rows of the first `heads` heads of q, of k and of v: one slice per third of the stacked weight.
        qkv_w = self.qkv_weight.view(3, inner, self.max_embed_dim)[:, :width, :e].reshape(3 * width, e)
        qkv_b = None if self.qkv_bias is None else self.qkv_bias.view(3, inner)[:, :width].reshape(-1)
        proj_w = self.proj_weight[:e, :width]
        proj_b = None if self.proj_bias is None else self.proj_bias[:e]
        return qkv_w, qkv_b, proj_w, proj_b

    def active_weights(self, embed_dim: int) -> tuple[torch.Tensor | None, ...]:
        """``(qkv_weight, qkv_bias, proj_weight, proj_bias)`` of the active heads for ``embed_dim`` channels
        (cached contiguous copies while no gradient is recorded)."""
        e = _check_size("ElasticMultiheadSelfAttention", "embed_dim", embed_dim, self.max_embed_dim)
        params = (self.qkv_weight, self.qkv_bias, self.proj_weight, self.proj_bias)
        if not _SliceCache.usable(*params):
            return self._slices(e, self.active_heads)
        key = (e, self.active_heads, *(s for p in params for s in _param_state(p)))
        cached = self._cache.get(key)
        if cached is None:
            slices = tuple(None if t is None else t.contiguous() for t in self._slices(e, self.active_heads))
            cached = self._cache.put(key, slices)
        return cached

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv_w, qkv_b, proj_w, proj_b = self.active_weights(x.shape[-1])
        return F.linear(attend(F.linear(x, qkv_w, qkv_b), self.active_heads, self.head_dim), proj_w, proj_b)

    @torch.no_grad()
    def to_static(self, embed_dim: int) -> SelfAttention:
        """A plain :class:`nas.static.SelfAttention` holding copies of the active slices."""
        e = _check_size("ElasticMultiheadSelfAttention", "embed_dim", embed_dim, self.max_embed_dim)
        static = SelfAttention(e, self.active_heads, self.head_dim, bias=self.qkv_bias is not None)
        qkv_w, qkv_b, proj_w, proj_b = self._slices(e, self.active_heads)
        static.qkv.weight.copy_(qkv_w)
        static.proj.weight.copy_(proj_w)
        if qkv_b is not None:
            static.qkv.bias.copy_(qkv_b)
            static.proj.bias.copy_(proj_b)
        return static.to(self.qkv_weight.device)

    @torch.no_grad()
    def head_importance(self) -> torch.Tensor:
        """L1 norm of each head's columns of the output projection (what the head contributes)."""
        return self.proj_weight.abs().view(self.max_embed_dim, self.max_heads, self.head_dim).sum((0, 2))

    @torch.no_grad()
    def sort_heads(self) -> torch.Tensor:
        """Reorder the heads by :meth:`head_importance`, most important first; returns the order.

        Each head moves with its q, k and v rows and its output-projection columns, so the max-size
        attention computes the same function (heads are interchangeable) while fewer heads keep the most
        important ones.
        """
        order = torch.argsort(self.head_importance(), descending=True)
        inner = self.max_heads * self.head_dim
        qkv = self.qkv_weight.view(3, self.max_heads, self.head_dim, self.max_embed_dim)
        self.qkv_weight.copy_(qkv[:, order].reshape(3 * inner, self.max_embed_dim))
        if self.qkv_bias is not None:
            self.qkv_bias.copy_(self.qkv_bias.view(3, self.max_heads, self.head_dim)[:, order].reshape(-1))
        proj = self.proj_weight.view(self.max_embed_dim, self.max_heads, self.head_dim)
        self.proj_weight.copy_(proj[:, order].reshape(self.max_embed_dim, inner))
        self._cache.clear()
        return order

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.max_embed_dim}, num_heads={self.max_heads}, head_dim={self.head_dim}, "
            f"bias={self.qkv_bias is not None}, active_heads={self.active_heads}"
        )


class ElasticTransformerBlock(nn.Module):
    """Pre-norm transformer block with elastic embedding width, heads and MLP ratio.

    ``x + attn(ln1(x))`` then ``x + fc2(gelu(fc1(ln2(x))))``. The embedding width is set with
    :meth:`set_active` (the MLP's output must match the residual stream) and checked against the input.

    Example:
        >>> block = ElasticTransformerBlock(32, num_heads=4, head_dim=8, mlp_ratios=(3, 4))
        >>> block.set_active(embed_dim=24, num_heads=2, mlp_ratio=3)
        >>> x = torch.randn(2, 5, 24)
        >>> static = block.to_static()
        >>> bool((static(x) - block(x)).abs().max() < 1e-5), static.mlp.body.fc1.out_features
        (True, 72)
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int = 64,
        mlp_ratios: Sequence[float] = (4.0,),
        bias: bool = True,
    ):
        super().__init__()
        self.mlp_ratios = tuple(sorted({float(r) for r in mlp_ratios}))
        if not self.mlp_ratios or self.mlp_ratios[0] <= 0:
            raise ValueError(f"ElasticTransformerBlock: mlp_ratios must be positive, got {mlp_ratios!r}")
        self.max_embed_dim = int(embed_dim)
        self.ln1 = ElasticLayerNorm(embed_dim)
        self.attn = ElasticMultiheadSelfAttention(embed_dim, num_heads, head_dim, bias=bias)
        self.ln2 = ElasticLayerNorm(embed_dim)
        self.fc1 = ElasticLinear(embed_dim, mlp_hidden(embed_dim, self.mlp_ratios[-1]), bias=bias)
        self.fc2 = ElasticLinear(self.fc1.max_out_features, embed_dim, bias=bias)
        self.active_embed_dim = self.max_embed_dim
        self.active_mlp_ratio = self.mlp_ratios[-1]

    def set_active(
        self, embed_dim: int | None = None, num_heads: int | None = None, mlp_ratio: float | None = None
    ) -> None:
        """Choose the embedding width, the number of heads and the MLP ratio (``None`` keeps a setting)."""
        if embed_dim is not None:
            self.active_embed_dim = _check_size(
                "ElasticTransformerBlock", "embed_dim", embed_dim, self.max_embed_dim
            )
        if mlp_ratio is not None:
            if float(mlp_ratio) not in self.mlp_ratios:
                raise ValueError(
                    f"ElasticTransformerBlock: mlp_ratio={mlp_ratio!r} is not allowed; "
                    f"use one of {self.mlp_ratios}"
                )
            self.active_mlp_ratio = float(mlp_ratio)
        self.attn.set_active(num_heads=num_heads)
        self.fc1.set_active(out_features=self.active_hidden)
        self.fc2.set_active(out_features=self.active_embed_dim)

    @property
    def active_hidden(self) -> int:
        return mlp_hidden(self.active_embed_dim, self.active_mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.active_embed_dim:
            raise ValueError(
                f"ElasticTransformerBlock: input has {x.shape[-1]} channels but the active embed_dim is "
                f"{self.active_embed_dim}; set_active(embed_dim={x.shape[-1]}) first"
            )
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    @torch.no_grad()
    def to_static(self) -> nn.Sequential:
        """``Sequential(attn=Residual(norm, attn), mlp=Residual(norm, fc1, act, fc2))`` of plain layers."""
        e = self.active_embed_dim
        attn = nn.Sequential(OrderedDict(norm=self.ln1.to_static(e), attn=self.attn.to_static(e)))
        mlp = nn.Sequential(
            OrderedDict(
                norm=self.ln2.to_static(e),
                fc1=self.fc1.to_static(e),
                act=nn.GELU(),
                fc2=self.fc2.to_static(self.active_hidden),
            )
        )
        return nn.Sequential(OrderedDict(attn=Residual(attn), mlp=Residual(mlp)))

    def layer_specs(
        self,
        tokens: int,
        name: str = "",
        embed_dim: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float | None = None,
    ) -> list[LayerSpec]:
        """Specs of the block on ``tokens`` tokens, in the order a trace of :meth:`to_static` records them.

        Settings left as ``None`` are the active ones; passing them describes another setting without
        touching the layers.
        """
        e = self.active_embed_dim if embed_dim is None else int(embed_dim)
        h = self.attn.active_heads if num_heads is None else int(num_heads)
        hidden = mlp_hidden(e, self.active_mlp_ratio if mlp_ratio is None else mlp_ratio)
        width, n, bias = h * self.attn.head_dim, int(tokens), self.fc1.bias is not None
        seq = {"in_h": n, "out_h": n}
        return [
            LayerSpec("ln", e, e, bias=True, name=f"{name}.attn.body.norm", **seq),
            LayerSpec("linear", e, 3 * width, bias=bias, name=f"{name}.attn.body.attn.qkv", **seq),
            LayerSpec("attention", width, width, groups=h, name=f"{name}.attn.body.attn.attend", **seq),
            LayerSpec("linear", width, e, bias=bias, name=f"{name}.attn.body.attn.proj", **seq),
            LayerSpec("add", e, e, name=f"{name}.attn", **seq),
            LayerSpec("ln", e, e, bias=True, name=f"{name}.mlp.body.norm", **seq),
            LayerSpec("linear", e, hidden, bias=bias, name=f"{name}.mlp.body.fc1", **seq),
            LayerSpec("act", hidden, hidden, act="gelu", name=f"{name}.mlp.body.act", **seq),
            LayerSpec("linear", hidden, e, bias=bias, name=f"{name}.mlp.body.fc2", **seq),
            LayerSpec("add", e, e, name=f"{name}.mlp", **seq),
        ]

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Reorder heads (:meth:`ElasticMultiheadSelfAttention.sort_heads`) and MLP hidden channels (by the
        L1 norm of their ``fc2`` columns), most important first; the max-size block computes the same."""
        self.attn.sort_heads()
        order = torch.argsort(self.fc2.weight.abs().sum(0), descending=True)
        self.fc1.weight.copy_(self.fc1.weight.index_select(0, order))
        if self.fc1.bias is not None:
            self.fc1.bias.copy_(self.fc1.bias.index_select(0, order))
        self.fc2.weight.copy_(self.fc2.weight.index_select(1, order))
        self.fc1._cache.clear()
        self.fc2._cache.clear()


class ElasticPatchEmbed(_SliceCachingModule):
    """Patches to tokens with an elastic embedding width and grid: a ``patch x patch`` convolution with
    stride ``patch``, an optional class token and a learned position embedding.

    The position embedding is stored for the largest grid; a smaller grid (a lower input resolution) uses it
    resized bicubically (``align_corners=False``, no antialiasing: DeiT's resize for a new resolution; timm's
    ``resample_abs_pos_embed`` antialiases by default, which gives other values when shrinking). The class
    token's position row is never resized. ``to_static`` bakes the resized, sliced embedding into a
    :class:`nas.static.PatchTokens`, so the extracted subnet does no resizing at run time.

    Example:
        >>> pe = ElasticPatchEmbed(1, 16, patch_size=4, max_grid=8)
        >>> pe.set_active(embed_dim=12)
        >>> tuple(pe(torch.randn(2, 1, 24, 24)).shape)  # 6 x 6 patches + the class token
        (2, 37, 12)
    """

    def __init__(
        self, in_channels: int, embed_dim: int, patch_size: int, max_grid: int, class_token: bool = True
    ):
        super().__init__()
        self.in_channels, self.max_embed_dim = int(in_channels), int(embed_dim)
        self.patch_size, self.max_grid = int(patch_size), int(max_grid)
        self.weight = nn.Parameter(torch.empty(embed_dim, in_channels, patch_size, patch_size))
        self.bias = nn.Parameter(torch.zeros(embed_dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        extra = 1 if class_token else 0
        self.pos_embed = nn.Parameter(torch.zeros(1, extra + self.max_grid**2, embed_dim))
        self.active_embed_dim = self.max_embed_dim
        self._pos_cache = _SliceCache()
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def set_active(self, embed_dim: int | None = None) -> None:
        if embed_dim is not None:
            self.active_embed_dim = _check_size(
                "ElasticPatchEmbed", "embed_dim", embed_dim, self.max_embed_dim
            )

    def position_embedding(self, grid: int) -> torch.Tensor:
        """``(1, tokens, embed_dim)``: the active channels for a ``grid x grid`` patch map.

        A resized embedding is cached while no gradient is recorded (evaluation, search, latency
        measurement), so that a lower resolution does not pay a bicubic resize on every forward.
        """
        e = self.active_embed_dim
        if grid == self.max_grid:
            return self.pos_embed[:, :, :e]
        if not _SliceCache.usable(self.pos_embed):
            return self._resized_position_embedding(grid, e)
        key = (e, grid, *_param_state(self.pos_embed))
        cached = self._pos_cache.get(key)
        if cached is None:
            cached = self._pos_cache.put(key, self._resized_position_embedding(grid, e))
        return cached

    def _resized_position_embedding(self, grid: int, e: int) -> torch.Tensor:
        extra = 0 if self.cls_token is None else 1
        pos = self.pos_embed[:, :, :e]
        patches = pos[:, extra:].reshape(1, self.max_grid, self.max_grid, e).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
        return torch.cat([pos[:, :extra], patches.permute(0, 2, 3, 1).reshape(1, grid * grid, e)], dim=1)

    def _grid(self, h: int, w: int) -> int:
        if h != w or h % self.patch_size or not 1 <= h // self.patch_size <= self.max_grid:
            raise ValueError(
                f"ElasticPatchEmbed: input of {h}x{w} pixels; expected a square input whose side is a "
                f"multiple of the patch size {self.patch_size}, at most {self.patch_size * self.max_grid}"
            )
        return h // self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid, e = self._grid(x.shape[-2], x.shape[-1]), self.active_embed_dim
        x = F.conv2d(x, self.weight[:e], self.bias[:e], stride=self.patch_size)
        tokens = x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token[:, :, :e].expand(x.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.position_embedding(grid)

    @torch.no_grad()
    def to_static(self, resolution: int) -> nn.Sequential:
        """``Sequential(conv=nn.Conv2d, tokens=PatchTokens)`` for square inputs of ``resolution`` pixels."""
        grid, e, p = self._grid(resolution, resolution), self.active_embed_dim, self.patch_size
        conv = nn.Conv2d(self.in_channels, e, p, stride=p)
        conv.weight.copy_(self.weight[:e])
        conv.bias.copy_(self.bias[:e])
        tokens = PatchTokens(e, grid, grid, class_token=self.cls_token is not None)
        tokens.pos_embed.copy_(self.position_embedding(grid))
        if self.cls_token is not None:
            tokens.cls_token.copy_(self.cls_token[:, :, :e])
        return nn.Sequential(OrderedDict(conv=conv, tokens=tokens)).to(self.weight.device)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.max_embed_dim}, patch_size={self.patch_size}, "
            f"max_grid={self.max_grid}, "
            f"class_token={self.cls_token is not None}, active_embed_dim={self.active_embed_dim}"
        )
