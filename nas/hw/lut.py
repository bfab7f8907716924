"""Per-layer latency lookup tables (Once-for-All style).

Every distinct layer shape (:attr:`nas.supernet.LayerSpec.key`) that occurs in some subnets is built once as a
small standalone torch module and timed with :func:`nas.hw.measure.profile` (interleaved, fixed threads). A
network's latency is then predicted as the sum of its layers' latencies, mapped through a line
``scale * sum + overhead_ms`` fitted by least squares on a few whole-network measurements (the line absorbs
what single layers do not see: the model's Python call overhead, cache effects between layers, the cost of
going from layer to layer).

The table is saved as versioned JSON, written atomically, with the measurement metadata.

Example:
    >>> from search_spaces import mobilenetv3
    >>> net = mobilenetv3.supernet("small", in_channels=1)
    >>> cfgs = net.space.samples(3, seed=0)
    >>> lut = LatencyLUT.build(net, cfgs, threads=1, warmup=1, repeats=2, rounds=1, progress=False)
    >>> lut.predict(net, cfgs).shape
    (3,)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.atomic import write_bytes
from nas.space import Choice, Config, SearchSpace
from nas.supernet import LayerSpec

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LUT_FEATURE_NAMES",
    "LUTFormatError",
    "LUTMissingLayerError",
    "LatencyLUT",
    "build_lut",
    "layer_module",
    "lut_feature",
]

FORMAT = "nas-latency-lut"
FORMAT_VERSION = 1
# Groups of layer kinds whose summed table latency makes one feature each (see lut_feature).
# Transformer layers join the existing groups (attention's two matrix products with linear; layer norm and the
# position embedding with the elementwise layers) so the feature vector keeps its length and names.
_FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "conv": ("conv",),
    "dwconv": ("dwconv",),
    "se": ("se",),
    "linear": ("linear", "attention"),
    "elementwise": ("bn", "act", "add", "pool", "ln", "tokens"),
}
LUT_FEATURE_NAMES = ("lut_total_ms", *(f"lut_{g}_ms" for g in _FEATURE_GROUPS), "lut_layers")


class LUTMissingLayerError(KeyError):
    """A network has a layer shape the table never measured; the message names it and how to add it."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class LUTFormatError(ValueError):
    """A lookup-table file is missing, corrupted or not a lookup table."""


# ------------------------------------------------------------------------------------------------ layers
class _Add(nn.Module):
    """Residual addition of two same-shaped tensors (timed as ``x + x``: same memory traffic)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x


def _activation(name: str) -> nn.Module:
    acts: dict[str, type[nn.Module]] = {
        "relu": nn.ReLU,
        "hswish": nn.Hardswish,
        "hsigmoid": nn.Hardsigmoid,
        "sigmoid": nn.Sigmoid,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "swish": nn.SiLU,
        "tanh": nn.Tanh,
        "leakyrelu": nn.LeakyReLU,  # timed at the default slope: the slope does not change the kernel's cost
        "elu": nn.ELU,
        "mish": nn.Mish,
    }
    try:
        return acts[name]()
    except KeyError:
        raise ValueError(f"layer activation {name!r} has no module here; known: {sorted(acts)}") from None


def _padding(spec: LayerSpec) -> int:
    """The padding that gives the spec's output size: ``kernel // 2`` ("same", the elastic layers' padding)
    when it does, else the smallest that does. Why: a traced layer of a user's own supernet (``padding=0``)
    would otherwise be timed on a larger output map than it computes."""
    k, stride = spec.dilation * (spec.kernel - 1) + 1, spec.stride  # the extent a dilated kernel covers

    def fits(pad: int) -> bool:
        out = [(size + 2 * pad - k) // stride + 1 for size in (spec.in_h, spec.in_w)]
        return out == [spec.out_h, spec.out_w]

    for pad in (k // 2, *range(k)):
        if fits(pad):
            return pad
    return k // 2


def layer_module(spec: LayerSpec, batch_size: int = 1) -> tuple[nn.Module, tuple[int, ...]]:
    """A standalone eval-mode module computing the layer ``spec`` and the input shape it takes.

    Quantization (``bits``) and sparsity (``density``) do not change an eager fp32 kernel, so the module is the
    dense float layer; they stay part of the key so a backend with integer or sparse kernels gets its own rows.

    Example:
        >>> m, shape = layer_module(LayerSpec("dwconv", 8, 8, 3, 2, 8, 16, 16, 8, 8))
        >>> shape, tuple(m(torch.zeros(shape)).shape)
        ((1, 8, 16, 16), (1, 8, 8, 8))
    """
    from nas.static import DotProductAttention, GlobalAvgPool, PatchTokens, SqueezeExcite

    b, k = int(batch_size), spec.kernel
    image: tuple[int, ...] = (b, spec.in_channels, spec.in_h, spec.in_w)
    tokens = spec.in_h * spec.in_w  # for layers on token sequences (B, N, C)
    if spec.kind in ("conv", "dwconv"):
        groups = spec.in_channels if spec.kind == "dwconv" else spec.groups
        module: nn.Module = nn.Conv2d(
            spec.in_channels,
            spec.out_channels,
            k,
            spec.stride,
            _padding(spec),
            dilation=spec.dilation,
            groups=groups,
            bias=spec.bias,
        )
    elif spec.kind == "linear":
        module = nn.Linear(spec.in_channels, spec.out_channels, bias=spec.bias)
        image = (b, tokens, spec.in_channels) if tokens > 1 else (b, spec.in_channels)
    elif spec.kind == "ln":
        module, image = nn.LayerNorm(spec.in_channels, bias=spec.bias), (b, tokens, spec.in_channels)
    elif spec.kind == "attention":
        heads = max(1, spec.groups)
        module = DotProductAttention(heads, spec.in_channels // heads)
        image = (b, tokens, 3 * spec.in_channels)
    elif spec.kind == "tokens":
        module = PatchTokens(spec.in_channels, spec.in_h, spec.in_w, class_token=spec.out_h > tokens)
    elif spec.kind == "se":
        module = SqueezeExcite(spec.in_channels, spec.out_channels)
    elif spec.kind == "bn":
        module = nn.BatchNorm2d(spec.out_channels)
    elif spec.kind == "act":
        module = _activation(spec.act)
    elif spec.kind == "pool":
        module = GlobalAvgPool()
    elif spec.kind == "add":
        module = _Add()
    else:
        raise ValueError(
            f"layer kind {spec.kind!r} ({spec.name or spec.key}) cannot be built; "
            "known: conv, dwconv, linear, se, bn, act, pool, add, ln, attention, tokens"
        )
    return module.eval(), image


# ------------------------------------------------------------------------------------------------ the table
def _specs(net: Any, cfg: Mapping[str, Any]) -> list[LayerSpec]:
    if not hasattr(net, "layer_specs"):
        raise TypeError(f"a lookup table needs a network with layer_specs(cfg), got {type(net).__name__}")
    return list(net.layer_specs(cfg))


class LatencyLUT:
    """Latency (ms) of each distinct layer shape, plus a fitted ``scale * sum + overhead_ms`` line.

    Args:
        table: layer key -> latency in ms.
        metadata: how the table was measured (device, backend, batch size, threads, versions...).
        scale, overhead_ms: the calibration line (1 and 0 until :meth:`calibrate` is called).

    Example:
        >>> lut = LatencyLUT({"act:relu|i8|o8|k1|s1|g1|4x4>4x4|nobias|w32|d1.0": 0.01}, {"backend": "torch"})
        >>> len(lut), lut.scale
        (1, 1.0)
    """

    def __init__(
        self,
        table: Mapping[str, float],
        metadata: Mapping[str, Any] | None = None,
        scale: float = 1.0,
        overhead_ms: float = 0.0,
    ):
        self.table: dict[str, float] = {str(k): float(v) for k, v in table.items()}
        bad = [k for k, v in self.table.items() if not (math.isfinite(v) and v >= 0)]
        if bad:
            raise ValueError(
                f"layer latencies must be finite and >= 0; {bad[0]!r} has {self.table[bad[0]]!r}"
            )
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.scale = float(scale)
        self.overhead_ms = float(overhead_ms)
        if not (math.isfinite(self.scale) and self.scale > 0 and math.isfinite(self.overhead_ms)):
            raise ValueError(
                f"the calibration line needs a finite scale > 0 and a finite overhead_ms; got scale={scale!r}, "
                f"overhead_ms={overhead_ms!r}"
            )

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return (
            f"LatencyLUT({len(self)} layers, device={self.metadata.get('device', '?')!r}, "
            f"scale={self.scale:.3g}, overhead_ms={self.overhead_ms:.3g})"
        )

    # -------------------------------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        net: Any,
        configs: Sequence[Mapping[str, Any]],
        backend: str = "torch",
        batch_size: int = 1,
        threads: int | None = None,
        warmup: int = 3,
        repeats: int = 30,
        rounds: int = 3,
        seed: int = 0,
        progress: bool = True,
        clock: str = "wall",
    ) -> LatencyLUT:
        """Measure every distinct layer of the given subnets once (interleaved) and return the table.

        The table is uncalibrated; call :meth:`calibrate` with a few whole-network latencies.
        """
        lut = cls({}, {})
        lut.extend(net, configs, backend, batch_size, threads, warmup, repeats, rounds, seed, progress, clock)
        return lut

    def missing(self, net: Any, configs: Sequence[Mapping[str, Any]]) -> dict[str, LayerSpec]:
        """Layer key -> spec of every layer of ``configs`` that the table lacks."""
        out: dict[str, LayerSpec] = {}
        for cfg in configs:
            for s in _specs(net, cfg):
                if s.key not in self.table and s.key not in out:
                    out[s.key] = s
        return out

    def extend(
        self,
        net: Any,
        configs: Sequence[Mapping[str, Any]],
        backend: str = "torch",
        batch_size: int = 1,
        threads: int | None = None,
        warmup: int = 3,
        repeats: int = 30,
        rounds: int = 3,
        seed: int = 0,
        progress: bool = True,
        clock: str = "wall",
    ) -> int:
        """Measure the layers of ``configs`` missing from the table; returns how many were added.

        Measurement settings must match the table's (a table mixes no backends, batch sizes, clocks or thread
        counts).
        """
        from nas.hw.measure import profile

        # threads=None measures with torch's current thread count, which is what the metadata records
        used_threads = int(threads) if threads is not None else torch.get_num_threads()
        for key, value in (
            ("backend", backend),
            ("batch_size", int(batch_size)),
            ("clock", clock),
            ("threads", used_threads),
        ):
            if key in self.metadata and self.metadata[key] != value:
                raise ValueError(
                    f"this table was measured with {key}={self.metadata[key]!r}; cannot add layers measured "
                    f"with {key}={value!r}"
                )
        todo = self.missing(net, configs)
        if not todo:
            return 0
        keys = tuple(sorted(todo))
        # Each layer is one value of a one-dimensional space, so the whole measuring machinery (interleaving,
        # threads, metadata, bounded model cache) is reused as is.
        layer_space = SearchSpace("layers", [Choice("layer", keys)])

        def build(cfg: Config) -> nn.Module:
            return layer_module(todo[str(cfg["layer"])], batch_size)[0]

        def shape(cfg: Config, b: int) -> tuple[int, ...]:
            return layer_module(todo[str(cfg["layer"])], b)[1]

        prof = profile(
            build,
            [Config({"layer": k}) for k in keys],
            backend=backend,
            batch_size=batch_size,
            threads=threads,
            warmup=warmup,
            repeats=repeats,
            rounds=rounds,
            seed=seed,
            progress=progress,
            space=layer_space,
            input_shape=shape,
            max_cached=256,
            clock=clock,
        )
        for cfg, ms in zip(prof.configs, prof.latencies):
            self.table[str(cfg["layer"])] = float(ms)
        meta = {k: v for k, v in prof.metadata.items() if k not in ("space_dims", "median_cv")}
        meta["layer_median_cv"] = prof.metadata.get("median_cv")
        if self.metadata:
            self.metadata.setdefault("extensions", []).append(
                {k: meta.get(k) for k in ("measured_at", "duration_s", "threads")} | {"layers": len(keys)}
            )
        else:
            self.metadata = meta
        return len(keys)

    # -------------------------------------------------------------------------------------- prediction
    def layer_latencies(self, net: Any, cfg: Mapping[str, Any]) -> list[tuple[LayerSpec, float]]:
        """Each layer of ``cfg`` with its table latency (ms); raises :class:`LUTMissingLayerError`."""
        out = []
        for s in _specs(net, cfg):
            ms = self.table.get(s.key)
            if ms is None:
                raise LUTMissingLayerError(
                    f"layer {s.name or '?'} with shape {s.key!r} is not in the lookup table "
                    f"({len(self)} layers, device {self.metadata.get('device', '?')!r}); measure it with "
                    "LatencyLUT.extend(net, configs) for configs like "
                    f"{Config(dict(cfg)).to_json()[:200]}"
                )
            out.append((s, ms))
        return out

    def raw_sum(self, net: Any, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Uncalibrated sum of layer latencies (ms) of each config."""
        return np.array(
            [sum(ms for _, ms in self.layer_latencies(net, c)) for c in configs], dtype=np.float64
        )

    def calibrate(
        self, net: Any, configs: Sequence[Mapping[str, Any]], latency_ms: Sequence[float] | np.ndarray
    ) -> dict[str, float]:
        """Fit ``latency = scale * layer_sum + overhead_ms`` by least squares on measured whole networks.

        One measurement fits the overhead only (scale 1). A negative fitted scale (nonsense: noise dominating)
        falls back to a pure overhead. Returns the fit and its relative residual spread.
        """
        y = np.asarray(latency_ms, dtype=np.float64).reshape(-1)
        s = self.raw_sum(net, configs)
        if len(s) != len(y) or len(y) == 0:
            raise ValueError(
                f"calibrate needs one latency per config; got {len(y)} latencies for {len(s)} configs"
            )
        bad = np.flatnonzero(~np.isfinite(y) | (y <= 0))
        if bad.size:  # a NaN would become the scale, and only saving the table would fail, on allow_nan
            raise ValueError(
                f"calibration latencies must be finite and > 0; latency {int(bad[0])} is {float(y[bad[0]])!r} "
                "(leave unmeasured configs out)"
            )
        if len(y) >= 2 and np.ptp(s) > 0:
            A = np.stack([s, np.ones_like(s)], axis=1)
            (scale, overhead), *_ = np.linalg.lstsq(A, y, rcond=None)
        else:
            scale, overhead = 1.0, float(np.mean(y - s))
        if scale <= 0:
            scale, overhead = 1.0, float(np.mean(y - s))
        self.scale, self.overhead_ms = float(scale), float(overhead)
        rel = (self.scale * s + self.overhead_ms) / y - 1.0
        self.metadata["calibration"] = {
            "configs": len(y),
            "scale": self.scale,
            "overhead_ms": self.overhead_ms,
            "median_abs_rel_error": float(np.median(np.abs(rel))),
        }
        return dict(self.metadata["calibration"])

    def predict(self, net: Any, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Predicted latency (ms) of each config: ``scale * sum(layer latencies) + overhead_ms``.

        Raises :class:`LUTMissingLayerError` naming the first layer shape the table lacks.
        """
        return self.scale * self.raw_sum(net, configs) + self.overhead_ms

    # -------------------------------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "scale": self.scale,
            "overhead_ms": self.overhead_ms,
            "metadata": self.metadata,
            "table": dict(sorted(self.table.items())),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the table as JSON, atomically."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"
        write_bytes(Path(path), text.encode())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatencyLUT:
        """Read a table written by :meth:`save`; raises :class:`LUTFormatError` naming the file and the fault."""
        path = Path(path)
        if not path.is_file():
            raise LUTFormatError(f"lookup table {str(path)!r} does not exist")
        try:
            d = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LUTFormatError(f"{str(path)!r} is not valid JSON: {exc}") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise LUTFormatError(
                f'{str(path)!r} is not a latency lookup table (expected "format": {FORMAT!r})'
            )
        if d.get("format_version") != FORMAT_VERSION:
            raise LUTFormatError(
                f"{str(path)!r}: format_version {d.get('format_version')!r} is not supported "
                f"(this version reads {FORMAT_VERSION})"
            )
        if not isinstance(d.get("table"), dict) or not isinstance(d.get("metadata"), dict):
            raise LUTFormatError(f"{str(path)!r}: 'table' and 'metadata' must be JSON objects")
        # JSON numbers only: float() would also take "0.5", true or "nan" and hide a hand-edited or foreign file,
        # and a missing field would surface as a bare KeyError message ("'scale'")
        numbers = {f"field {k!r}": d.get(k) for k in ("scale", "overhead_ms")}
        numbers.update({f"layer {k!r}": v for k, v in d["table"].items()})
        for what, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise LUTFormatError(
                    f"{str(path)!r}: {what} must be a number, got {value!r}; rebuild the table "
                    "(LatencyLUT.build / build_lut) or restore the saved file"
                )
        try:
            return cls(d["table"], d["metadata"], float(d["scale"]), float(d["overhead_ms"]))
        except (TypeError, ValueError) as exc:
            raise LUTFormatError(f"{str(path)!r}: {exc}") from None


def build_lut(
    net: Any,
    configs: Sequence[Mapping[str, Any]],
    backend: str = "torch",
    *,
    calibrate_on: Sequence[Mapping[str, Any]] | None = None,
    calibration_latencies_ms: Sequence[float] | np.ndarray | None = None,
    out_path: str | os.PathLike[str] | None = None,
    **measure: Any,
) -> LatencyLUT:
    """Measure every distinct layer of ``configs``, optionally calibrate and save; returns the table.

    ``measure`` goes to :meth:`LatencyLUT.build` (batch_size, threads, warmup, repeats, rounds, seed, progress,
    clock). Calibration needs whole-network latencies of ``calibrate_on`` (e.g. a few rows of a profile).

    Example:
        >>> from search_spaces import mobilenetv3
        >>> net = mobilenetv3.supernet("small", in_channels=1)
        >>> cfgs = net.space.samples(2, seed=0)
        >>> lut = build_lut(net, cfgs, threads=1, warmup=0, repeats=1, rounds=1, progress=False)
        >>> lut.predict(net, cfgs).shape
        (2,)
    """
    lut = LatencyLUT.build(net, configs, backend, **measure)
    if (calibrate_on is None) != (calibration_latencies_ms is None):
        raise ValueError("pass both calibrate_on and calibration_latencies_ms, or neither")
    if calibrate_on is not None:
        lut.calibrate(net, calibrate_on, calibration_latencies_ms)
    if out_path is not None:
        lut.save(out_path)
    return lut


def lut_feature(net: Any, cfg: Mapping[str, Any], lut: LatencyLUT) -> np.ndarray:
    """Layer-level features for learned predictors: the table's latency summed over the whole network and per
    layer group (conv, dwconv, se, linear, elementwise), and the layer count (names: ``LUT_FEATURE_NAMES``).

    Append them to ``space.features(cfg)`` so a learned model starts from the additive estimate and learns the
    interactions the sum misses.

    Example:
        >>> from search_spaces import mobilenetv3
        >>> net = mobilenetv3.supernet("small", in_channels=1)
        >>> cfg = net.space.min()
        >>> lut = LatencyLUT({s.key: 0.01 for s in net.layer_specs(cfg)})
        >>> f = lut_feature(net, cfg, lut)
        >>> len(f) == len(LUT_FEATURE_NAMES), bool(f[0] > 0)
        (True, True)
    """
    layers = lut.layer_latencies(net, cfg)
    groups = {g: 0.0 for g in _FEATURE_GROUPS}
    for spec, ms in layers:
        for g, kinds in _FEATURE_GROUPS.items():
            if spec.kind in kinds:
                groups[g] += ms
    total = sum(ms for _, ms in layers)
    return np.array([total, *groups.values(), float(len(layers))], dtype=np.float64)
