"""Built-in search spaces, one module each, and spaces of your own.

Each module exposes ``space(...)`` (the :class:`nas.SearchSpace`) and, for weight-sharing spaces,
``supernet(...)``. Modules load on first use so that listing spaces imports no torch.

A space of your own is any importable module with the same two names (``space`` a function or a
``SearchSpace``; ``supernet(num_classes=..., in_channels=...)`` to train it): pass its dotted path wherever a
space name goes (``nas train --space mypkg.myspace``). It is imported like ``python -m`` would, with the current
directory on the path; on a Ray cluster it must be importable on every worker. ``examples/custom_space.py`` is
one (``--space examples.custom_space`` from the repository root).

Example:
    >>> import search_spaces
    >>> "nb201" in search_spaces.available()
    True
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import sys
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
    "resnet": (
        "search_spaces.resnet",
        "Once-for-All ResNet: bottleneck blocks, elastic depth/expand/width/resolution",
    ),
    "vit": (
        "search_spaces.vit",
        "AutoFormer Vision Transformer: elastic embed width/depth/heads/MLP ratio/resolution",
    ),
    "nb201": (
        "search_spaces.nb201",
        "NAS-Bench-201 cell space: 15,625 cells with known accuracy and latency",
    ),
}


# Built-in spaces named "<space>-<preset>[-quant][-sparse]" (their space(preset, quant=, sparsity=)).
_PRESET_FAMILIES = ("mobilenetv3", "resnet")


def available() -> dict[str, str]:
    """Names of the built-in spaces with a one-line description each."""
    return {name: desc for name, (_, desc) in _BUILTIN.items()}


def presets(name: str) -> tuple[str, ...]:
    """The presets of a built-in space, its ``supernet()`` default first (empty for a space without presets).

    Imports the space's module (and torch with it).

    Example:
        >>> presets("vit")
        ('small', 'tiny')
    """
    module = get(name)
    names = tuple(getattr(module, "PRESETS", {}))
    default = default_preset(name)
    return (default, *(p for p in names if p != default)) if default in names else names


def training_recipe(name: str) -> dict[str, Any]:
    """The ``training_recipe`` of built-in space ``name``'s supernet class (settings ``nas train`` uses for the
    options not given; empty when the defaults suit it). Imports the space's module.

    Example:
        >>> training_recipe("mobilenetv3")
        {}
        >>> training_recipe("vit")["lr"]
        0.002
    """
    from nas.supernet import Supernet

    module = get(name)
    classes = [
        c
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, Supernet) and c.__module__ == module.__name__
    ]
    return dict(classes[0].training_recipe) if len(classes) == 1 else {}


def default_preset(name: str) -> str | None:
    """The ``preset`` that space ``name``'s ``supernet()`` uses by default (``None`` when it takes none).

    Example:
        >>> default_preset("mobilenetv3"), default_preset("nb201")
        ('small', None)
    """
    factory = getattr(get(name), "supernet", None)
    param = inspect.signature(factory).parameters.get("preset") if callable(factory) else None
    return param.default if param is not None and isinstance(param.default, str) else None


_MODULE_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def is_builtin(name: str) -> bool:
    """Whether ``name`` is a built-in space (else it is read as a module path)."""
    return name in _BUILTIN


def get(name: str) -> ModuleType:
    """The module of a space: a built-in name or the dotted path of a module of your own.

    Example: ``get("mobilenetv3").supernet(preset="small")``, ``get("mypkg.myspace").space()``.
    """
    if name in _BUILTIN:
        return importlib.import_module(_BUILTIN[name][0])
    return _user_module(name)


def _user_module(name: str) -> ModuleType:
    hint = (
        f"built-in: {', '.join(_BUILTIN)}; or the dotted path of a module of your own that defines space "
        "(and supernet() to train it), e.g. examples.custom_space"
    )
    if name.endswith(".py"):  # a file name: say which dotted path imports it
        path = Path(name).resolve()
        try:
            dotted = ".".join(path.with_suffix("").relative_to(Path.cwd()).parts)
        except ValueError:  # outside the working directory
            dotted = ""
        use = (
            f"--space {dotted}"
            if _MODULE_PATH.fullmatch(dotted)
            else f"--space {path.stem} from {path.parent}"
        )
        raise ValueError(
            f"search space {name!r} is a file name; a space of your own is given as an importable module's dotted "
            f"path (as python -m takes it): {use}"
        )
    if not _MODULE_PATH.fullmatch(name):
        raise ValueError(f"unknown search space {name!r}; {hint}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` does: modules beside the working directory import
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise ValueError(
                f"unknown search space {name!r}: no such module under {cwd} or on the path; {hint}"
            ) from None
        raise ValueError(f"search space module {name!r} failed to import: {exc}") from exc
    if not hasattr(module, "space"):
        raise ValueError(
            f"module {name!r} is not a search space: it defines no space (a function or a SearchSpace)"
        )
    return module


def _accepted(factory: Any, what: str, options: dict[str, Any], optional: dict[str, Any]) -> dict[str, Any]:
    """``options`` (each refused by name when ``factory`` does not take it) plus whichever of ``optional`` it
    takes: the keyword arguments to call a space's ``space()`` / ``supernet()`` with."""
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    refused = [k for k in options if not (takes_any or k in params)]
    if refused:
        flags = ", ".join("--" + k.replace("_", "-") for k in refused)  # the nas train options they come from
        raise ValueError(
            f"{what} takes no {', '.join(map(repr, refused))} argument; drop the matching option ({flags})"
        )
    kwargs = {**options, **{k: v for k, v in optional.items() if takes_any or k in params}}
    # A parameter without a default that is not passed would fail later as a bare TypeError.
    unfilled = [
        name
        for name, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and (p.kind is inspect.Parameter.POSITIONAL_ONLY or name not in kwargs)
    ]
    if unfilled:
        them = "it" if len(unfilled) == 1 else "them"
        passed = (
            f" (it passes {' and '.join(optional)}, taken from the data, where they are accepted); rename {them} or"
            if optional
            else ";"
        )
        raise ValueError(
            f"{what} needs {', '.join(map(repr, unfilled))}, which nas does not pass{passed} give {them} "
            f"{'a default' if len(unfilled) == 1 else 'defaults'}"
        )
    return kwargs


def supernet_kwargs(
    name: str, options: dict[str, Any], optional: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The keyword arguments ``supernet()`` of space ``name`` is built with (what ``supernet.json`` records).

    Example:
        >>> supernet_kwargs("mobilenetv3", {"preset": "small"}, {"in_channels": 1, "colour": "red"})
        {'preset': 'small', 'in_channels': 1}
    """
    factory = getattr(get(name), "supernet", None)
    if not callable(factory):
        raise ValueError(f"space {name!r} has no supernet to train or measure (it defines no supernet())")
    return _accepted(factory, f"{name}.supernet()", options, optional or {})


def make_space(name: str, **options: Any) -> Any:
    """The :class:`nas.SearchSpace` of space ``name`` built with ``options`` (a module whose ``space`` is a
    ready ``SearchSpace`` takes none).

    Example:
        >>> make_space("mobilenetv3", preset="small").name
        'mobilenetv3-small'
    """
    factory = get(name).space
    if hasattr(factory, "dims"):  # already a SearchSpace
        if options:
            raise ValueError(f"space {name!r} is fixed and takes no {', '.join(map(repr, options))} option")
        return factory
    return factory(**_accepted(factory, f"{name}.space()", options, {}))


def space_by_name(name: str, module: str | None = None) -> Any:
    """The :class:`nas.SearchSpace` whose ``.name`` is ``name`` (as recorded in profiles, predictors and stores).

    Built-in spaces are found by name; a space of your own needs ``module``, the dotted path of the module that
    defines it (its ``space()`` with default arguments must carry that name).

    Example:
        >>> space_by_name("mobilenetv3-small-quant").name
        'mobilenetv3-small-quant'
        >>> space_by_name("resnet-imagenet-sparse").name
        'resnet-imagenet-sparse'
    """
    if module is not None and not is_builtin(module):
        space = make_space(module)
        if space.name != name:
            raise ValueError(
                f"module {module!r} defines space {space.name!r}, not {name!r} (the one recorded here)"
            )
        return space
    if name == "nb201":
        return get("nb201").space
    for family in _PRESET_FAMILIES:
        if name.startswith(family + "-"):
            preset, *flags = name[len(family) + 1 :].split("-")
            if not set(flags) - {"quant", "sparse"}:
                space = get(family).space(preset, quant="quant" in flags, sparsity="sparse" in flags)
                if space.name == name:
                    return space
    for builtin in _BUILTIN:  # spaces named <space>-<preset> (vit-small, ...): try the module's presets
        if builtin not in _PRESET_FAMILIES and name.startswith(builtin + "-"):
            module = get(builtin)
            for preset in getattr(module, "PRESETS", {}):
                space = module.space(preset)
                if space.name == name:
                    return space
    families = ", ".join(f"{f}-<preset>[-quant][-sparse]" for f in _PRESET_FAMILIES)
    raise ValueError(
        f"no built-in search space is named {name!r}; known: nb201, {families}, vit-<preset>; for a "
        "space of your own, name the module that defines it (nas fit --space mypkg.myspace)"
    )


def build_supernet(spec: dict[str, Any]) -> Any:
    """Build an untrained supernet from ``{"space": name, "kwargs": {...}}`` (the spec ``nas train`` records)."""
    module = get(str(spec.get("space")))
    if not hasattr(module, "supernet"):
        raise ValueError(f"space {spec.get('space')!r} is tabular and has no supernet")
    net = module.supernet(**dict(spec.get("kwargs", {})))
    from nas.supernet import Supernet

    if not isinstance(net, Supernet):
        raise ValueError(
            f"{spec.get('space')}.supernet() returned {type(net).__name__}, not a nas.Supernet; it must return "
            "the supernet (a subclass of nas.Supernet, see examples/custom_space.py)"
        )
    return net


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
