"""Measure an exported subnet the way a target's latencies were measured, and compare with the prediction.

A search prices subnets with a target's latencies (a profile from ``nas profile``, or a predictor ``nas fit``
made from one); :func:`measure_export` times the model an export wrote with the settings that target records
(backend, precision, batch size, threads, clock, input channels, repeats), on this machine, through
:func:`nas.hw.measure.profile`, and records the result in the export's ``manifest.json``.

:func:`measurement_settings` reads those settings from a profile's metadata (or a predictor's
``provenance["device"]``) and refuses, before anything is measured or exported, a target whose latencies nas
cannot reproduce (a published table measured with TensorFlow Lite, a predictor that records no provenance), a
backend this machine lacks, or an input channel count the model does not take.

Example:
    >>> measurement_settings({"backend": "torch", "batch_size": 1, "threads": 2})["clock"]
    'wall'
"""

from __future__ import annotations

import datetime
import importlib.util
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.atomic import write_text

__all__ = [
    "MANIFEST_KEY",
    "RECORDED_KEYS",
    "machine_difference",
    "measure_export",
    "measurement_settings",
    "quantization_difference",
]

#: The manifest entry :func:`measure_export` writes.
MANIFEST_KEY = "measured_latency"
#: Profile metadata worth keeping to measure like the profile later (``nas search`` records these per target):
#: the settings a latency depends on, the measurement effort, and which machine it was.
RECORDED_KEYS = (
    "device",
    "hardware",
    "backend",
    "cpu",
    "gpu",
    "batch_size",
    "precision",
    "threads",
    "clock",
    "in_channels",
    "warmup",
    "repeats",
    "rounds",
    "int8_quantize",
    "measured_at",
)
# The statistic of the repeats that each profile column holds (nas fit --metric picks one to predict).
_STATISTICS = {"latency_ms": "median", "latency_p10_ms": "p10", "latency_min_ms": "min"}
# The measurement effort when a target does not record its own (a predictor fitted before `nas fit` recorded
# it): the defaults of `nas profile`.
_DEFAULT_EFFORT = {"warmup": 3, "repeats": 30, "rounds": 3}


def measurement_settings(
    metadata: Mapping[str, Any],
    input_shape: Sequence[int] | None = None,
    metric: str = "latency_ms",
    what: str = "the target",
) -> dict[str, Any]:
    """The settings to measure with as ``metadata`` (a profile's, or a predictor's ``provenance["device"]``) says.

    Checked here, so that a caller can refuse before it does any work: the backend must be one nas measures
    with (``torch``, ``onnxruntime``, ``cuda``: a published table measured with another tool is not) and must
    run on this machine, ``metric`` must be a latency statistic, and the recorded input channels must be those
    of ``input_shape`` (``(batch, channels, height, width)``) when given. Settings the metadata lacks take the
    defaults of ``nas profile`` (fp32, batch 1, wall clock, 30 repeats in 3 rounds, 3 warm-up calls; threads:
    the library's default).

    Raises:
        ValueError: naming ``what`` and the missing or unusable setting.
        nas.hw.BackendUnavailableError: the backend cannot run here (``cuda`` without a GPU, no onnxruntime).

    Example:
        >>> s = measurement_settings({"backend": "torch", "threads": 1, "repeats": 4, "rounds": 2})
        >>> s["backend"], s["batch_size"], s["threads"], s["repeats"], s["statistic"]
        ('torch', 1, 1, 4, 'median')
        >>> measurement_settings({"backend": "TensorFlow Lite"}, what="target raspi4")
        Traceback (most recent call last):
        ...
        ValueError: target raspi4 was measured with 'TensorFlow Lite', which nas cannot run (it measures with torch, onnxruntime or cuda)
    """
    import torch

    from nas.hw.measure import BACKENDS, BackendUnavailableError, check_settings, input_channels

    backend = metadata.get("backend")
    if backend is None:
        raise ValueError(f"{what} does not record the backend its latencies were measured with")
    if backend not in BACKENDS:
        raise ValueError(
            f"{what} was measured with {backend!r}, which nas cannot run (it measures with "
            f"{', '.join(BACKENDS[:-1])} or {BACKENDS[-1]})"
        )
    if metric not in _STATISTICS:
        raise ValueError(
            f"{what} predicts {metric!r}, not a latency statistic nas measures ({', '.join(_STATISTICS)})"
        )
    settings: dict[str, Any] = {
        "backend": backend,
        "precision": metadata.get("precision", "fp32"),
        "batch_size": int(metadata.get("batch_size", 1)),
        "threads": metadata.get("threads"),
        "clock": metadata.get("clock", "wall"),
        "in_channels": metadata.get("in_channels"),
        **{k: int(metadata.get(k, v)) for k, v in _DEFAULT_EFFORT.items()},
        "metric": metric,
        "statistic": _STATISTICS[metric],
    }
    if backend == "cuda" and not torch.cuda.is_available():  # check_settings' advice is for `nas profile`
        raise BackendUnavailableError(
            f"{what} was measured with backend 'cuda', but this machine has no CUDA GPU "
            f"(torch.cuda.is_available() is False, torch {torch.__version__}); measure on a machine with one"
        )
    check_settings(
        backend,
        precision=settings["precision"],
        clock=settings["clock"],
        threads=settings["threads"],
        batch_size=settings["batch_size"],
        repeats=settings["repeats"],
        rounds=settings["rounds"],
        warmup=settings["warmup"],
    )
    if backend == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
        raise BackendUnavailableError(
            f"{what} was measured with backend 'onnxruntime', which is not installed here (pip install "
            "onnxruntime)"
        )
    channels = input_channels(tuple(input_shape)) if input_shape is not None else None
    if settings["in_channels"] is not None and channels is not None and settings["in_channels"] != channels:
        raise ValueError(
            f"{what} was measured on {settings['in_channels']}-channel inputs, but this model takes "
            f"{channels}-channel ones"
        )
    return settings


def quantization_difference(metadata: Mapping[str, Any], here: Mapping[str, Any]) -> str | None:
    """How the int8 graph measured ``here`` was quantized differently from the one ``metadata`` records
    (``int8_quantize``: a vit int8 profile from before attention graphs were quantized weight ops only), in
    words; ``None`` when alike, for fp32, or when the target does not record it.

    Example:
        >>> quantization_difference({"int8_quantize": "all"}, {"int8_quantize": "weights"})
        "int8 graphs quantized as 'weights' (what nas does now), not 'all' as the target's were"
    """
    theirs, ours = metadata.get("int8_quantize"), here.get("int8_quantize")
    if theirs is None or ours is None or theirs == ours:
        return None
    return f"int8 graphs quantized as {ours!r} (what nas does now), not {theirs!r} as the target's were"


def machine_difference(metadata: Mapping[str, Any], here: Mapping[str, Any]) -> str | None:
    """How this machine (``here``: :func:`nas.hw.device_metadata`) differs from the one ``metadata`` was
    measured on, in words; ``None`` when it is the same model of CPU (of GPU, for ``cuda``) or cannot be told.

    Example:
        >>> machine_difference({"backend": "torch", "cpu": "Cortex-A72"}, {"cpu": "AMD EPYC 7B13"})
        "CPU 'AMD EPYC 7B13', not 'Cortex-A72'"
    """
    key = "gpu" if metadata.get("backend") == "cuda" else "cpu"
    theirs, ours = metadata.get(key), here.get(key)
    if theirs is None or ours is None or theirs == ours:
        return None
    return f"{key.upper()} {ours!r}, not {theirs!r}"


def measure_export(
    out_dir: str | Path,
    metadata: Mapping[str, Any],
    *,
    metric: str = "latency_ms",
    predicted_ms: float | None = None,
    max_latency_ms: float | None = None,
    target: str | None = None,
    record: bool = True,
) -> dict[str, Any]:
    """Time the model exported to ``out_dir`` with the settings ``metadata`` records, on this machine.

    The model is rebuilt from the export's own files (:func:`nas.export.load_exported`) and measured by
    :func:`nas.hw.measure.profile` as ``nas profile`` measured the target (see :func:`measurement_settings`;
    ``metric`` picks the statistic of the repeats a predictor fitted with ``nas fit --metric`` predicts). With
    ``record`` the result is added to the export's ``manifest.json`` (rewritten atomically) under
    ``"measured_latency"``.

    Returns:
        ``measured_ms`` (the statistic), ``median_ms``, ``iqr_ms``, ``n`` (timed calls), ``settings``,
        ``machine`` (this one: device, CPU, GPU), ``target_machine`` (as recorded), ``other_machine`` (how the
        two differ, or ``None``), ``other_quantization`` (how the measured int8 graph's quantization differs
        from the target's, or ``None``), and when given ``predicted_ms`` with ``difference`` (measured / predicted - 1),
        ``max_latency_ms`` with ``within_max_latency``, and ``target``.

    Example:
        >>> import tempfile, pathlib
        >>> from nas.export import export
        >>> from search_spaces import mobilenetv3
        >>> net = mobilenetv3.supernet("small", in_channels=1)
        >>> out = export(net, net.space.min(), pathlib.Path(tempfile.mkdtemp()) / "m", formats=("safetensors",))
        >>> m = measure_export(out, {"backend": "torch", "threads": 1, "repeats": 2, "rounds": 1, "warmup": 0},
        ...                    predicted_ms=1.0)
        >>> m["settings"]["threads"], m["n"], m["measured_ms"] > 0, "difference" in m
        (1, 2, True, True)
    """
    from nas.export import MANIFEST, load_exported, read_manifest
    from nas.hw.measure import profile

    out = Path(out_dir)
    manifest = read_manifest(out)
    shape = [int(s) for s in manifest["input_shape"]]
    settings = measurement_settings(
        metadata, shape, metric, what=f"target {target}" if target else "the target"
    )
    model = load_exported(out)
    measured = profile(
        lambda cfg: model,
        [manifest["config"]],
        backend=settings["backend"],
        batch_size=settings["batch_size"],
        threads=settings["threads"],
        warmup=settings["warmup"],
        repeats=settings["repeats"],
        rounds=settings["rounds"],
        precision=settings["precision"],
        clock=settings["clock"],
        progress=False,
        space=str(manifest.get("space", "export")),
        input_shape=shape[1:],
    )
    meta = measured.metadata
    value = {
        "latency_ms": float(measured.latency_ms[0]),
        "latency_p10_ms": float(measured.extras["latency_p10_ms"][0]),
        "latency_min_ms": float(measured.extras["latency_min_ms"][0]),
    }[metric]
    settings["threads"] = meta["threads"]  # as used (None: the library's default here)
    settings["in_channels"] = meta.get("in_channels", settings["in_channels"])
    if "int8_quantize" in meta:
        settings["int8_quantize"] = meta["int8_quantize"]
    result: dict[str, Any] = {
        **({"target": target} if target else {}),
        "measured_ms": value,
        "median_ms": float(measured.latency_ms[0]),
        "iqr_ms": float(measured.latency_iqr_ms[0]),
        "n": int(measured.repeats[0]),
        "settings": settings,
        "machine": {k: meta[k] for k in ("device", "cpu", "gpu") if k in meta},
        "target_machine": {k: metadata[k] for k in ("device", "hardware", "cpu", "gpu") if k in metadata},
        "other_machine": machine_difference(metadata, meta),
        "other_quantization": quantization_difference(metadata, meta),
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if predicted_ms is not None:
        result["predicted_ms"] = float(predicted_ms)
        result["difference"] = value / float(predicted_ms) - 1.0
    if max_latency_ms is not None:
        result["max_latency_ms"] = float(max_latency_ms)
        result["within_max_latency"] = value <= float(max_latency_ms)
    if record:
        manifest[MANIFEST_KEY] = result
        write_text(out / MANIFEST, json.dumps(manifest, indent=2))
    return result
