"""Hardware: the profile file format, on-device measurement, per-layer latency tables and the check of an
exported subnet's latency against its prediction.

Names resolve on first use, so ``import nas.hw`` stays light; add a measurement backend by adding a line to
``_LAZY``.

Example:
    >>> from nas.hw import Profile
    >>> Profile("toy", [{"k": 3}], [1.0]).latencies.tolist()
    [1.0]
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> (module, attribute)
_LAZY: dict[str, tuple[str, str]] = {
    "Profile": ("nas.hw.profiles", "Profile"),
    "ProfileFormatError": ("nas.hw.profiles", "ProfileFormatError"),
    "profile": ("nas.hw.measure", "profile"),
    "BackendUnavailableError": ("nas.hw.measure", "BackendUnavailableError"),
    "device_metadata": ("nas.hw.measure", "device_metadata"),
    "LatencyLUT": ("nas.hw.lut", "LatencyLUT"),
    "LUTMissingLayerError": ("nas.hw.lut", "LUTMissingLayerError"),
    "lut_feature": ("nas.hw.lut", "lut_feature"),
    "build_lut": ("nas.hw.lut", "build_lut"),
    "CLOCKS": ("nas.hw.measure", "CLOCKS"),
    "measure_export": ("nas.hw.export_check", "measure_export"),
    "measurement_settings": ("nas.hw.export_check", "measurement_settings"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'nas.hw' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
