"""A tiny conv supernet for fast training tests (width, depth, kernel and resolution are space dims)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.space import Choice, SearchSpace
from nas.supernet import Supernet


class TinySupernet(Supernet):
    """stem conv (kernel 3|5, width 4|8) -> up to 2 conv blocks (depth 1|2) -> pool -> linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        space = SearchSpace(
            "tiny",
            [
                Choice("resolution", (12, 16)),
                Choice("depth", (1, 2)),
                Choice("kernel", (3, 5)),
                Choice("width", (4, 8)),
            ],
        )
        super().__init__(space)
        self.in_channels = in_channels
        self.stem = nn.Conv2d(in_channels, 8, 5, padding=2, bias=False)
        self.bns = nn.ModuleList([nn.BatchNorm2d(8) for _ in range(3)])
        self.blocks = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1, bias=False) for _ in range(2)])
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(8 * 4, num_classes)  # 2x2 pooled map keeps where things are
        self.activate(space.max())

    def _set_active(self, cfg):
        self.k, self.w, self.d = int(cfg["kernel"]), int(cfg["width"]), int(cfg["depth"])

    def _bn(self, i, x):
        # Same update rule as nn.BatchNorm2d (momentum=None means a cumulative average), on the first w channels.
        bn, w = self.bns[i], self.w
        factor = 0.0
        if self.training:
            bn.num_batches_tracked += 1
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        return F.batch_norm(
            x,
            bn.running_mean[:w],
            bn.running_var[:w],
            bn.weight[:w],
            bn.bias[:w],
            self.training,
            factor,
            bn.eps,
        )

    def forward(self, x):
        off = (5 - self.k) // 2
        weight = self.stem.weight[: self.w, :, off : off + self.k, off : off + self.k]
        x = F.relu(self._bn(0, F.conv2d(x, weight, padding=self.k // 2, stride=2)))
        for i in range(self.d):
            x = x + F.relu(self._bn(i + 1, F.conv2d(x, self.blocks[i].weight[: self.w, : self.w], padding=1)))
        x = self.drop(F.adaptive_avg_pool2d(x, 2).flatten(1))
        return F.linear(x, self.head.weight[:, : self.w * 4], self.head.bias)

    def input_shape(self, cfg, batch_size=1):
        r = int(self.space.canonical(cfg)["resolution"])
        return (batch_size, self.in_channels, r, r)

    def elastic_groups(self):
        return {
            "resolution": ("resolution",),
            "depth": ("depth",),
            "kernel": ("kernel",),
            "width": ("width",),
        }

    @torch.no_grad()
    def sort_channels(self):
        # importance of stem output channels = L1 norm of the weights that read them in the next layer
        head = self.head.weight.view(len(self.head.weight), 8, 4)
        importance = self.blocks[0].weight.abs().sum((0, 2, 3)) + head.abs().sum((0, 2))
        order = torch.argsort(importance, descending=True)
        self.stem.weight.copy_(self.stem.weight[order])
        for bn in self.bns:
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[order])
        for b in self.blocks:
            b.weight.copy_(b.weight[order][:, order])
        self.head.weight.copy_(head[:, order].reshape(len(head), -1))


class TinyNoBatchNorm(TinySupernet):
    """TinySupernet with a per-channel scale in place of batch norm, and no dropout: a step's update then does
    not depend on how its batch is split among data-parallel workers."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__(num_classes, in_channels)
        self.drop.p = 0.0

    def _bn(self, i, x):
        return x * self.bns[i].weight[: self.w, None, None]


def tiny_data(n: int = 256, seed: int = 0, size: int = 16):
    """Synthetic 10-class images: class c brightens its own 4x4 patch of a noisy image."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.randn(n, 1, size, size, generator=g) * 0.5
    for c in range(10):
        r, col = divmod(c, 4)
        x[y == c, :, r * 4 : r * 4 + 4, col * 4 : col * 4 + 4] += 2.0
    return torch.utils.data.TensorDataset(x, y)
