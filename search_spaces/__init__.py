"""Built-in search spaces, one module each.

Each module exposes ``space(...)`` (the :class:`nas.SearchSpace`) and, for weight-sharing spaces,
``supernet(...)``. Modules load on first use so that listing spaces imports no torch.

Example:
    >>> import search_spaces
    >>> "nb201" in search_spaces.available()
    True
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> (module, one-line description). Add a module here to make it available to the CLI.
_BUILTIN: dict[str, tuple[str, str]] = {
    "mobilenetv3": (
        "search_spaces.mobilenetv3",
        "Once-for-All MobileNetV3: elastic depth/expand/kernel/resolution",
    ),
    "nb201": (
        "search_spaces.nb201",
        "NAS-Bench-201 cell space: 15,625 cells with known accuracy and latency",
    ),
}


def available() -> dict[str, str]:
    """Names of the built-in spaces with a one-line description each."""
    return {name: desc for name, (_, desc) in _BUILTIN.items()}


def get(name: str) -> ModuleType:
    """The module of a built-in space, e.g. ``get("mobilenetv3").supernet(preset="small")``."""
    try:
        module, _ = _BUILTIN[name]
    except KeyError:
        raise ValueError(f"unknown search space {name!r}; available: {', '.join(_BUILTIN)}") from None
    return importlib.import_module(module)
