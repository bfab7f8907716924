"""AutoFormer Vision Transformer: elastic embedding width, depth, heads, MLP ratio and resolution.

A weight-sharing ViT supernet after AutoFormer (Chen et al., "AutoFormer: Searching Transformers for Visual
Recognition", ICCV 2021): one embedding width for the whole network, a depth (number of blocks), and per block
the number of heads (fixed head width, so the attention's inner width is ``heads * head_dim``) and the MLP
ratio (hidden width ``int(embed_dim * mlp_ratio)``). Blocks are pre-norm (``x + attn(ln(x))``,
``x + mlp(ln(x))``, GELU); every subnet slices the first heads / channels of the max-size weights
(:mod:`nas.ops.transformer`).

Read-out: a class token, as in ViT, DeiT and AutoFormer; its final layer norm is applied to that token alone
(layer norm works per token, so this equals normalising every token and then taking the first, for less work).

Resolution: a patch-size convolution (kernel = stride = patch) makes ``resolution / patch`` patches per side.
The learned position embedding is stored for the largest grid; smaller grids use it resized bicubically (as
DeiT does for a new resolution) and the extracted subnet stores the resized copy, so it never resizes at run
time. Resolutions must be multiples of the patch size. ``small`` searches three resolutions; ``tiny`` keeps
AutoFormer's fixed 224 px (a one-value dimension).

Presets:
    ``small``: 24-32 px (MNIST, CIFAR), patch 4, embed width {48, 64, 96}, depth {4, 5, 6}, heads {2, 3, 4}
    of width 16, MLP ratio {3, 3.5, 4}: trains a few steps in seconds on a laptop CPU.
    ``tiny``: AutoFormer-T at 224 px, patch 16, embed width {192, 216, 240}, depth {12, 13, 14}, heads {3, 4}
    of width 64, MLP ratio {3.5, 4}.

Dimension names: ``resolution``, ``embed_dim``, ``depth``, ``block{i}.heads``, ``block{i}.mlp_ratio``
(blocks from 0); a block at or beyond the smallest depth is only active when ``depth`` exceeds its index.

MACs: patch convolution, every linear layer once per token, and attention's ``q k^T`` and ``scores @ v``
(``2 * tokens^2 * heads * head_dim``); layer norms, softmax, GELU, adds and position embeddings count 0.

Example:
    >>> import torch
    >>> from nas.supernet import resize_to
    >>> net = supernet("small", num_classes=10, in_channels=1).eval()
    >>> cfg = net.activate(net.space.sample(0))
    >>> x = resize_to(torch.randn(2, 1, 28, 28), cfg)
    >>> tuple(net(x).shape)
    (2, 10)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from nas.ops import ElasticLayerNorm, ElasticLinear, ElasticSequential
from nas.ops.transformer import ElasticMultiheadSelfAttention, ElasticPatchEmbed, ElasticTransformerBlock
from nas.space import Choice, Config, SearchSpace
from nas.static import TakeToken, finalize
from nas.supernet import LayerSpec, Supernet

__all__ = ["PRESETS", "Preset", "VisionTransformerSupernet", "space", "supernet"]


@dataclass(frozen=True)
class Preset:
    """Fixed structure and searchable values of a ViT supernet.

    Example:
        >>> PRESETS["small"].max_grid, PRESETS["tiny"].max_grid
        (8, 14)
    """

    name: str
    resolutions: tuple[int, ...]
    patch_size: int
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    head_dim: int

    def __post_init__(self) -> None:
        bad = [r for r in self.resolutions if r % self.patch_size]
        if bad:
            raise ValueError(
                f"vit preset {self.name!r}: resolutions {bad} are not multiples of the patch size "
                f"{self.patch_size}"
            )
        for field in ("resolutions", "embed_dims", "depths", "num_heads", "mlp_ratios"):
            values = getattr(self, field)
            if not values or tuple(sorted(set(values))) != tuple(values) or min(values) <= 0:
                raise ValueError(
                    f"vit preset {self.name!r}: {field}={values!r} must be positive, distinct and ascending"
                )

    @property
    def max_grid(self) -> int:
        """Patches per side at the largest resolution."""
        return self.resolutions[-1] // self.patch_size


PRESETS: dict[str, Preset] = {
    "small": Preset(
        name="small",
        resolutions=(24, 28, 32),
        patch_size=4,
        embed_dims=(48, 64, 96),
        depths=(4, 5, 6),
        num_heads=(2, 3, 4),
        mlp_ratios=(3.0, 3.5, 4.0),
        head_dim=16,
    ),
    # AutoFormer-T (Chen et al. 2021, Table 1): embed 192-240 step 24, depth 12-14, heads 3-4 of 64,
    # MLP ratio 3.5-4.
    "tiny": Preset(
        name="tiny",
        resolutions=(224,),
        patch_size=16,
        embed_dims=(192, 216, 240),
        depths=(12, 13, 14),
        num_heads=(3, 4),
        mlp_ratios=(3.5, 4.0),
        head_dim=64,
    ),
}


def _preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except (KeyError, TypeError):
        raise ValueError(f"unknown vit preset {preset!r}; use one of {sorted(PRESETS)}") from None


def space(preset: str | Preset = "small") -> SearchSpace:
    """The ViT search space of a preset.

    Example:
        >>> s = space("small")
        >>> s.names[:5]
        ('resolution', 'embed_dim', 'depth', 'block0.heads', 'block0.mlp_ratio')
        >>> s["block5.heads"].when, s.size
        ({'depth': (6,)}, 5373459)
    """
    p = _preset(preset)
    dims = [
        Choice("resolution", p.resolutions),
        Choice("embed_dim", p.embed_dims),
        Choice("depth", p.depths),
    ]
    for i in range(p.depths[-1]):
        # Blocks below the smallest depth always run; block i beyond it only when the depth exceeds i.
        when = {} if i < p.depths[0] else {"depth": tuple(d for d in p.depths if d > i)}
        dims.append(Choice(f"block{i}.heads", p.num_heads, when=when))
        dims.append(Choice(f"block{i}.mlp_ratio", p.mlp_ratios, when=when))
    return SearchSpace(f"vit-{p.name}", dims)


class VisionTransformerSupernet(Supernet):
    """The AutoFormer weight-sharing ViT supernet (see the module docstring).

    Layers: ``patch_embed`` (:class:`nas.ops.ElasticPatchEmbed`: patch conv, class token, position
    embedding), ``blocks`` (elastic depth of :class:`nas.ops.ElasticTransformerBlock`), ``norm`` and ``head``
    on the class token.
    """

    # `nas train`'s defaults (3e-3, weight decay 3e-5, warmup 0.5 epochs, pure in-place distillation) suit the
    # conv spaces; a ViT supernet trained with them stays near chance on MNIST (max / min subnet 11.5 / 10.4% on
    # 2,000 test images after 2 epochs). Measured on the 5,000 MNIST images, small preset, 12 epochs, 2 random
    # subnets per step, 1 thread: this recipe 93.35 / 89.9%; the same at lr 1e-3 89.6 / 78.8 (without the shift
    # augmentation 92.5 / 86.8); at lr 1e-3 with half the students' loss from the teacher (distill_labels 0.5)
    # 86.2 / 73.75: the teacher is slow to become worth copying, so the students learn from the labels.
    training_recipe = MappingProxyType(
        {
            "optimizer": "adamw",  # said, as train_supernet's own default is SGD
            "lr": 2e-3,
            "weight_decay": 0.05,
            "warmup_epochs": 1.0,
            "grad_clip": 1.0,
            "distill_labels": 1.0,
        }
    )

    def __init__(self, preset: str | Preset = "small", num_classes: int = 10, in_channels: int = 3):
        p = _preset(preset)
        super().__init__(space(p))
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")
        self.preset = p
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        e = p.embed_dims[-1]
        self.patch_embed = ElasticPatchEmbed(in_channels, e, p.patch_size, p.max_grid, class_token=True)
        blocks = [
            ElasticTransformerBlock(e, p.num_heads[-1], p.head_dim, p.mlp_ratios) for _ in range(p.depths[-1])
        ]
        self.blocks = ElasticSequential(blocks, p.depths)
        self.norm = ElasticLayerNorm(e)
        self.pool = TakeToken(0)
        self.head = ElasticLinear(e, num_classes)
        self._init_weights()
        self.activate(self.space.max())

    @torch.no_grad()
    def _init_weights(self) -> None:
        # The original ViT's initialisation (Dosovitskiy et al.; google-research/vision_transformer): Xavier-uniform
        # projections (q, k and v each on their own, as if three layers), zero biases, unit layer norms, and
        # a truncated normal (std 0.02) for the position embedding and class token; the patch convolution keeps
        # nn.Conv2d's. DeiT/AutoFormer's truncated normal (std 0.02) for every projection suits their 300-epoch
        # ImageNet runs but, at these widths (48-96), makes early attention nearly uniform: the max subnet alone
        # reached 31% on MNIST after 150 steps against 62% with this (AdamW, lr 1e-3, batch 64).
        for m in self.modules():
            if isinstance(m, ElasticLinear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, ElasticMultiheadSelfAttention):
                for part in m.qkv_weight.view(3, -1, m.max_embed_dim):
                    nn.init.xavier_uniform_(part)
                nn.init.xavier_uniform_(m.proj_weight)
                for b in (m.qkv_bias, m.proj_bias):
                    if b is not None:
                        b.zero_()
                m._cache.clear()
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
        nn.init.trunc_normal_(self.patch_embed.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.patch_embed.cls_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Parameters the trainer does not decay (timm's convention): position embedding and class token."""
        return {"patch_embed.pos_embed", "patch_embed.cls_token"}

    # --------------------------------------------------------------------------------------- activation
    def _set_active(self, cfg: Config) -> None:
        e, depth = int(cfg["embed_dim"]), int(cfg["depth"])
        self.patch_embed.set_active(embed_dim=e)
        self.blocks.set_active(depth)
        for i in range(depth):
            self.blocks[i].set_active(
                embed_dim=e,
                num_heads=int(cfg[f"block{i}.heads"]),
                mlp_ratio=float(cfg[f"block{i}.mlp_ratio"]),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.patch_embed(x))
        return self.head(self.norm(self.pool(x)))

    # --------------------------------------------------------------------------------------- subnets
    @torch.no_grad()
    def extract(self, cfg: Mapping[str, Any]) -> nn.Module:
        """A plain ``nn.Sequential`` computing subnet ``cfg``; its ``.architecture`` rebuilds it."""
        with self.activated(cfg) as canonical:
            e = int(canonical["embed_dim"])
            parts: OrderedDict[str, nn.Module] = OrderedDict()
            parts["patch_embed"] = self.patch_embed.to_static(int(canonical["resolution"]))
            parts["blocks"] = nn.Sequential(*(block.to_static() for block in self.blocks.active_blocks()))
            parts["pool"] = TakeToken(self.pool.index)
            parts["norm"] = self.norm.to_static(e)
            parts["head"] = self.head.to_static(e)
        model = finalize(nn.Sequential(parts))
        model.train(self.training)
        model.config_json = canonical.to_json()
        return model

    def input_shape(self, cfg: Mapping[str, Any], batch_size: int = 1) -> tuple[int, ...]:
        r = int(self.space.canonical(cfg)["resolution"])
        return (int(batch_size), self.in_channels, r, r)

    def elastic_groups(self) -> dict[str, tuple[str, ...]]:
        names = self.space.names
        return {
            "resolution": ("resolution",),
            "depth": ("depth",),
            "width": tuple(n for n in names if n == "embed_dim" or n.endswith((".heads", ".mlp_ratio"))),
        }

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Re-sort every block's heads and MLP hidden channels by importance (call before building the
        optimizer). The embedding channels are not re-sorted: they are shared by the patch embedding, every
        block's residual stream and the head (AutoFormer re-sorts nothing)."""
        for block in self.blocks:
            block.sort_channels()

    def layer_specs(self, cfg: Mapping[str, Any]) -> list[LayerSpec]:
        cfg = self.space.canonical(cfg)
        p = self.preset
        r, e = int(cfg["resolution"]), int(cfg["embed_dim"])
        grid = r // p.patch_size
        tokens = grid * grid + 1  # + the class token
        specs = [
            LayerSpec(
                "conv", self.in_channels, e, p.patch_size, p.patch_size, 1, r, r, grid, grid, bias=True,
                name="patch_embed.conv",
            ),
            LayerSpec("tokens", e, e, in_h=grid, in_w=grid, out_h=tokens, name="patch_embed.tokens"),
        ]  # fmt: skip
        for i in range(int(cfg["depth"])):
            specs += self.blocks[i].layer_specs(
                tokens,
                name=f"blocks.{i}",
                embed_dim=e,
                num_heads=int(cfg[f"block{i}.heads"]),
                mlp_ratio=float(cfg[f"block{i}.mlp_ratio"]),
            )
        specs += [
            LayerSpec("ln", e, e, bias=True, name="norm"),
            LayerSpec("linear", e, self.num_classes, bias=True, name="head"),
        ]
        return specs


def supernet(
    preset: str | Preset = "small", num_classes: int = 10, in_channels: int = 3
) -> VisionTransformerSupernet:
    """Build the ViT supernet of a preset (max subnet active).

    Example:
        >>> net = supernet("small", num_classes=10, in_channels=1)
        >>> net.input_shape(net.space.min(), batch_size=8)
        (8, 1, 24, 24)
    """
    return VisionTransformerSupernet(preset, num_classes=num_classes, in_channels=in_channels)
