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
import json
from pathlib import Path
from types import ModuleType
from typing import Any

SUPERNET_SPEC = "supernet.json"  # in a training run directory: how to rebuild the supernet

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


def space_by_name(name: str) -> Any:
    """The :class:`nas.SearchSpace` whose ``.name`` is ``name`` (as recorded in profiles, predictors and stores).

    Example:
        >>> space_by_name("mobilenetv3-small-quant").name
        'mobilenetv3-small-quant'
    """
    if name == "nb201":
        return get("nb201").space
    if name.startswith("mobilenetv3-"):
        preset, *flags = name[len("mobilenetv3-") :].split("-")
        unknown = set(flags) - {"quant", "sparse"}
        if not unknown:
            space = get("mobilenetv3").space(preset, quant="quant" in flags, sparsity="sparse" in flags)
            if space.name == name:
                return space
    raise ValueError(
        f"no built-in search space is named {name!r}; known: nb201, mobilenetv3-<preset>[-quant][-sparse]"
    )


def build_supernet(spec: dict[str, Any]) -> Any:
    """Build an untrained supernet from ``{"space": name, "kwargs": {...}}`` (the spec ``nas train`` records)."""
    module = get(str(spec.get("space")))
    if not hasattr(module, "supernet"):
        raise ValueError(f"space {spec.get('space')!r} is tabular and has no supernet")
    return module.supernet(**dict(spec.get("kwargs", {})))


def trained_spec(run_dir: str | Path) -> dict[str, Any]:
    """The supernet spec recorded in a training run directory."""
    path = Path(run_dir) / SUPERNET_SPEC
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {run_dir} is not a supernet run directory; create one with `nas train --out DIR`"
        )
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); it should be written by `nas train`") from None
    if not isinstance(spec, dict) or "space" not in spec:
        raise ValueError(f"{path} lacks the 'space' field; it should be written by `nas train`")
    return spec


def load_trained(run_dir: str | Path) -> Any:
    """Rebuild a trained supernet from its run directory (spec + final weights), in eval mode."""
    from nas.train import load_weights

    net = build_supernet(trained_spec(run_dir))
    load_weights(net, run_dir)
    return net.eval()
