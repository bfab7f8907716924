"""nas: hardware-aware neural architecture search.

The light core (search-space DSL) imports eagerly; torch-based pieces load on first use so that
``import nas`` stays fast in Ray workers and command-line tools.

Example:
    >>> import nas
    >>> space = nas.SearchSpace("toy", [nas.Choice("k", (3, 5))])
    >>> space.sample(0) in (nas.Config({"k": 3}), nas.Config({"k": 5}))
    True
"""

from __future__ import annotations

import importlib
from typing import Any

from nas.space import Choice, Config, InvalidConfigError, SearchSpace

__version__ = "0.1.0"

# name -> (module, attribute); resolved lazily by __getattr__.
_LAZY = {
    "Supernet": ("nas.supernet", "Supernet"),
    "load_exported": ("nas.export", "load_exported"),
    "resize_to": ("nas.supernet", "resize_to"),
    "LayerSpec": ("nas.supernet", "LayerSpec"),
}
# Submodules reachable as attributes (``nas.metrics.macs``) without importing them all up front.
# ``nas.export`` is the module nas/export.py, made callable: ``nas.export(net, cfg, out_dir)`` exports.
_SUBMODULES = (
    "export",
    "metrics",
    "search",
    "hw",
    "data",
    "train",
    "pareto",
    "report",
    "evaluation",
    "semi_structured",
)

__all__ = ["Choice", "Config", "InvalidConfigError", "SearchSpace", "__version__", "export", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"nas.{name}")
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
