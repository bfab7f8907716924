"""Your own search space and supernet: define it, train it once, search it, export the chosen subnet.

A supernet is a torch module over a :class:`nas.SearchSpace` that computes whichever subnet is active. Build it
from the elastic layers in ``nas.ops`` (they slice their max-size weights to the active size) and implement
five methods: ``_set_active`` (set the layers for a config), ``forward``, ``extract`` (the subnet as plain torch
layers), ``input_shape`` and ``elastic_groups``. ``layer_specs`` (MACs, parameters, per-layer latency tables)
then comes from tracing the extracted subnet; ``sort_channels`` (channel re-sorting) is needed by the
``progressive`` and ``delayed`` strategies.

This one is a small conv net for scikit-learn's 8x8 digits: a stem, then 1-3 blocks, each with its own kernel
size (3 or 5) and width (8, 16 or 24 channels), then pooling and a linear classifier (6 + 6^2 + 6^3 = 258
distinct subnets: a block's choices count only when it is active). It is trained with the sandwich rule and
in-place distillation, searched for the accuracy / MACs trade-off with NSGA-II, and the cheapest subnet within a
point of the best accuracy is exported (safetensors + ONNX; about 40 s on a 2-core CPU)::

    .venv/bin/python examples/custom_space.py --epochs 20 --budget 40 --out runs/custom

The module also defines ``space`` and ``supernet``, so the shell pipeline takes it as ``--space`` (from the
repository root; any importable module of yours works the same way)::

    nas train  --space examples.custom_space --data digits --epochs 20 --out runs/custom-sn
    nas search --space examples.custom_space --supernet runs/custom-sn --objective macs --budget 40 \\
               --store runs/custom.db
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import nas
from nas import data, metrics, search
from nas.evaluation import evaluate_subnet
from nas.ops.elastic import ElasticBatchNorm2d, ElasticConv2d, ElasticLinear, ElasticSequential
from nas.space import Choice, Config, SearchSpace
from nas.static import GlobalAvgPool
from nas.supernet import Supernet
from nas.train import train_supernet

WIDTHS = (8, 16, 24)
KERNELS = (3, 5)
MAX_DEPTH = 3
STEM = 16


def digits_space() -> SearchSpace:
    """Depth 1-3; per block a kernel and a width (a block's choices matter only when it is active)."""
    dims = [Choice("depth", tuple(range(1, MAX_DEPTH + 1)))]
    for b in range(MAX_DEPTH):
        active_when = {"depth": tuple(range(b + 1, MAX_DEPTH + 1))}
        dims += [
            Choice(f"block{b}.kernel", KERNELS, when=active_when),
            Choice(f"block{b}.width", WIDTHS, when=active_when),
        ]
    return SearchSpace("digits-convnet", dims)


class DigitsSupernet(Supernet):
    """stem (3x3, 16 channels) -> ``depth`` elastic blocks (conv k x k, BN, ReLU) -> global pool -> linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__(digits_space())
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, STEM, 3, padding=1, bias=False), nn.BatchNorm2d(STEM), nn.ReLU()
        )
        blocks = []
        for b in range(MAX_DEPTH):
            c_in = STEM if b == 0 else max(WIDTHS)
            conv = ElasticConv2d(c_in, max(WIDTHS), kernel_sizes=KERNELS)
            blocks.append(nn.Sequential(conv, ElasticBatchNorm2d(max(WIDTHS)), nn.ReLU()))
        self.blocks = ElasticSequential(blocks, depths=tuple(range(1, MAX_DEPTH + 1)))
        self.pool = GlobalAvgPool(keepdim=False)
        self.head = ElasticLinear(max(WIDTHS), num_classes)
        self.activate(self.space.max())

    def _set_active(self, cfg: Config) -> None:
        self.blocks.set_active(int(cfg["depth"]))
        for b in range(int(cfg["depth"])):
            # The conv slices its input channels from whatever comes in; the BN follows the conv's output.
            self.blocks[b][0].set_active(out_channels=cfg[f"block{b}.width"], kernel=cfg[f"block{b}.kernel"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))))

    @torch.no_grad()
    def extract(self, cfg: Mapping[str, Any]) -> nn.Module:
        import copy

        with self.activated(cfg):
            layers: list[nn.Module] = [copy.deepcopy(self.stem)]
            channels = STEM
            for conv, bn, _relu in self.blocks.active_blocks():
                width = conv.active_out_channels
                layers.append(nn.Sequential(conv.to_static(channels), bn.to_static(width), nn.ReLU()))
                channels = width
            layers += [GlobalAvgPool(keepdim=False), self.head.to_static(channels)]
        return nn.Sequential(*layers).train(self.training)

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Most important block channels first, so narrow subnets keep them (for ``progressive``/``delayed``).

        Every block writes its output into the same channel positions (the head reads whichever block is
        last), so one order serves all blocks: a channel's importance is the L1 norm of the weights that read
        it downstream (the next blocks' convs and the head), as Once-for-All ranks channels.
        """
        convs = [block[0] for block in self.blocks]
        importance = self.head.weight.abs().sum(0) + sum(c.weight.abs().sum((0, 2, 3)) for c in convs[1:])
        order = torch.argsort(importance, descending=True)
        for b, (conv, bn, _relu) in enumerate(self.blocks):
            conv.permute_channels(order, dim=0)
            if b > 0:
                conv.permute_channels(order, dim=1)
            bn.permute_channels(order)
        self.head.weight.copy_(self.head.weight[:, order])

    def input_shape(self, cfg: Mapping[str, Any], batch_size: int = 1) -> tuple[int, ...]:
        return (int(batch_size), self.in_channels, 8, 8)

    def elastic_groups(self) -> dict[str, tuple[str, ...]]:
        names = self.space.names
        return {
            "depth": ("depth",),
            "kernel": tuple(n for n in names if n.endswith(".kernel")),
            "width": tuple(n for n in names if n.endswith(".width")),
        }


# The two names that make this module usable from the command line (`nas train --space examples.custom_space
# --data digits ...`, `nas search --space examples.custom_space --supernet RUN ...`): see search_spaces.get.
space = digits_space


def supernet(num_classes: int = 10, in_channels: int = 1) -> DigitsSupernet:
    """The untrained supernet (``nas train`` passes the data's classes and channels)."""
    return DigitsSupernet(num_classes, in_channels)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--budget", type=int, default=40, help="subnets evaluated by the search")
    p.add_argument(
        "--within", type=float, default=1.0, help="accuracy points below the best an export may be"
    )
    p.add_argument("--out", default="runs/custom")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)

    torch.manual_seed(args.seed)
    train, val = data.train_val_split(data.digits(), 0.2, seed=0)
    net = DigitsSupernet()
    trained = train_supernet(
        net, train, val_data=val, strategy="sandwich", epochs=args.epochs, batch_size=64, lr=0.01,
        optimizer="adamw", n_random=2, out_dir=out / "supernet", overwrite=True, seed=args.seed, progress=False,
    )  # fmt: skip
    print(f"trained {trained.steps} steps; validation: {trained.history[-1] if trained.history else {}}")

    objectives = [
        search.Objective("accuracy", lambda c: evaluate_subnet(net, c, val, calib_data=train), "max"),
        search.Objective("macs", lambda c: float(metrics.macs(net, c)), "min"),
    ]
    store = out / "search.db"
    store.unlink(missing_ok=True)  # the supernet was just retrained: earlier accuracies no longer hold
    result = search.run(
        net.space, objectives, algorithm="nsga2", budget=args.budget, seed=args.seed,
        store=f"sqlite:///{store}", progress=False,
    )  # fmt: skip
    front = result.pareto().sort_values("macs")
    print(front[["accuracy", "macs", "config"]].to_string(index=False))

    best = float(front["accuracy"].max())
    chosen_row = front[front["accuracy"] >= best - args.within].iloc[0]  # the cheapest one close to the best
    chosen = Config.from_json(chosen_row["config"])
    exported = nas.export(net, chosen, out / "model", bn_calib_data=train)  # batch norm as evaluated
    summary = {
        "chosen": json.loads(chosen.to_json()),
        "accuracy": float(chosen_row["accuracy"]),
        "macs": int(chosen_row["macs"]),
        "max_subnet": {"accuracy": evaluate_subnet(net, net.space.max(), val, calib_data=train)},
        "front_size": len(front),
        "export": str(exported),
        "files": sorted(p.name for p in exported.iterdir()),
    }
    summary["max_subnet"]["macs"] = metrics.macs(net, net.space.max())
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
