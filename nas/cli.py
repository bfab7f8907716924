"""The ``nas`` command: train, profile, fit, search, report and export from the shell.

Every subcommand is a thin layer over the Python API; ``nas <command> --help`` explains each one.

A day with the tool::

    nas train   --space mobilenetv3 --data mnist --epochs 10 --out runs/sn
    nas profile --space mobilenetv3 --supernet runs/sn --samples 300 --out runs/my-cpu.csv
    nas fit     runs/my-cpu.csv --out runs/my-cpu.json
    nas search  --space mobilenetv3 --supernet runs/sn --target runs/my-cpu.json --budget 100 \\
                --store sqlite:///runs/search.db
    nas report  runs/search.db --out runs/report
    nas export  runs/search.db --target my-cpu --max-latency 4ms --format onnx --out runs/model
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.atomic import write_text

__all__ = ["main"]

SIDECAR_SUFFIX = ".nas.json"  # beside a SQLite store: how the CLI built the run (space, supernet, targets)


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------------------------ helpers
def parse_duration_ms(text: str) -> float:
    """``"4ms"``, ``"4"`` (ms), ``"0.5s"``, ``"800us"`` -> milliseconds.

    Example:
        >>> parse_duration_ms("0.5s"), parse_duration_ms("800us"), parse_duration_ms("4")
        (500.0, 0.8, 4.0)
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(ms|s|us|µs)?\s*", str(text))
    if not m:
        raise CliError(f"cannot read {text!r} as a latency; write e.g. 4ms, 0.5s or 800us")
    value, unit = float(m.group(1)), m.group(2) or "ms"
    return value * {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}[unit]


def parse_constraint(text: str) -> tuple[str, str, float]:
    """``"latency@raspi4<=5ms"`` -> ``("latency@raspi4", "<=", 5.0)``; ``"accuracy>=90"`` likewise."""
    m = re.fullmatch(r"\s*([^<>=\s]+)\s*(<=|>=)\s*(.+)", text)
    if not m:
        raise CliError(f"cannot read constraint {text!r}; write e.g. 'latency@raspi4<=5ms' or 'accuracy>=90'")
    metric, op, bound = m.groups()
    value = parse_duration_ms(bound) if metric.startswith("latency") else float(bound)
    return metric, op, value


def store_url(text: str) -> str:
    """A store URL from a URL or a plain path (``runs/search.db`` -> ``sqlite:///runs/search.db``)."""
    return text if "://" in text else f"sqlite:///{text}"


def sidecar_path(url: str) -> Path | None:
    """Where ``nas search`` records how it built a SQLite-stored run (``None`` for other stores)."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :] + SIDECAR_SUFFIX)
    return None


def target_label(target: str) -> str:
    """Name of a target in objective names: a file's stem (``runs/my-cpu.json`` -> ``my-cpu``), or the name."""
    name = Path(target).name
    for suffix in (".csv.gz", ".csv", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return target


# ------------------------------------------------------------------------------------------------ spaces
# What --preset takes, written out: reading each module's PRESETS would import torch for `nas --help`
# (tests/test_resnet.py checks the text against the modules).
# Written out, not read from the modules: `nas --help` would import torch with them. A test checks it.
_PRESET_HELP = (
    "small (the default; 24-32 px inputs, MNIST/CIFAR-sized) or imagenet (mobilenetv3 160-224 px, resnet "
    "128-224 px), for mobilenetv3 and resnet; narrow (small at half width) for mobilenetv3; small or tiny "
    "(AutoFormer-T, 224 px) for vit; a space of your own takes what its supernet()/space() accept; "
    "`nas spaces` lists each space's presets"
)


def load_space_module(name: str) -> Any:
    import search_spaces

    try:
        return search_spaces.get(name)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _supernet_kwargs(args: argparse.Namespace, num_classes: int, in_channels: int) -> dict[str, Any]:
    """Keyword arguments of the space's ``supernet()`` from the command's options (recorded in supernet.json).

    Built-in spaces get exactly what they always got; a module of the user's gets ``num_classes`` and
    ``in_channels`` when its ``supernet()`` takes them, and an option it does not take (``--preset``,
    ``--quant``, ...) is refused by name rather than dropped.
    """
    import search_spaces

    if args.space == "mobilenetv3":  # what it has always recorded (a resumed run compares the spec)
        kwargs: dict[str, Any] = {"preset": args.preset or "small"}
        if hasattr(args, "quant"):  # nas train: the whole recipe of the network
            kwargs.update(
                num_classes=num_classes, in_channels=in_channels, quant=args.quant, sparsity=args.sparsity
            )
            if args.kernel_transform:
                kwargs["kernel_transform"] = True
        else:
            kwargs["in_channels"] = in_channels
        return kwargs
    preset = args.preset
    if preset is None and search_spaces.is_builtin(args.space):
        # Record the default preset, so that a later --preset naming it agrees with the run's supernet.json.
        preset = search_spaces.default_preset(args.space)
    options = {
        "preset": preset,
        "quant": getattr(args, "quant", False) or None,
        "sparsity": getattr(args, "sparsity", False) or None,
        "kernel_transform": getattr(args, "kernel_transform", False) or None,
    }
    try:
        return search_spaces.supernet_kwargs(
            args.space,
            {k: v for k, v in options.items() if v is not None},
            {"num_classes": num_classes, "in_channels": in_channels},
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _refuse_options_the_supernet_decides(args: argparse.Namespace, spec: Mapping[str, Any]) -> None:
    """Refuse a ``--space``, ``--preset`` or ``--in-channels`` that contradicts the ``--supernet``'s own.

    The trained supernet decides what is measured or searched; an option saying otherwise would be silently
    ignored (or recorded with the run and believed later). Options left unset (``None``) agree with anything.
    """
    kwargs = spec.get("kwargs", {})
    trained = {
        "space": spec.get("space"),
        "preset": kwargs.get("preset"),
        "in_channels": kwargs.get("in_channels"),
    }
    given = {k: getattr(args, k, None) for k in trained}
    differ = [k for k, v in given.items() if v is not None and trained[k] is not None and v != trained[k]]
    if given["preset"] is not None and trained["preset"] is None:
        differ.append("preset")  # a space without presets
    if differ:
        said = ", ".join(f"--{k.replace('_', '-')} {given[k]}" for k in differ)
        was = ", ".join(f"--{k.replace('_', '-')} {trained[k]}" for k in differ)
        raise CliError(
            f"{args.supernet} is a supernet trained with {was}, not {said}; use {was} (the supernet decides "
            "them) or pass the --supernet you meant"
        )


def _supernet_or_none(args: argparse.Namespace) -> Any:
    if not getattr(args, "supernet", None):
        return None
    import search_spaces

    return search_spaces.load_trained(args.supernet)


# ------------------------------------------------------------------------------------------------ targets
def _latency_function(space: Any, space_name: str, target: str) -> Callable[[Any], float]:
    """A ``cfg -> ms`` function for a target: a predictor file, a profile file, a built-in profile or (for
    nb201) a device of the benchmark table."""
    import numpy as np

    import hw_profiles

    path = Path(target)
    if path.suffix == ".json" and path.is_file():
        import predictors

        pred = predictors.load(path)
        try:
            # Checked now: a predictor of another space would fail every evaluation, after its accuracy cost.
            pred.check(space.features(space.max()), space)
        except ValueError as exc:
            raise CliError(f"target {target}: {exc}") from None
        from nas.hw.cli_hooks import describe_provenance

        fitted_on = describe_provenance(pred.provenance)
        print(
            f"nas search: target {target}: "
            + (
                f"predicts {fitted_on}"
                if fitted_on
                else "a predictor that does not record what it was fitted on"
            ),
            file=sys.stderr,
        )
        return lambda cfg: float(np.asarray(pred.predict(space.features(cfg)[None, :])).reshape(-1)[0])
    if space_name == "nb201":
        from search_spaces import nb201

        device = target.removeprefix("nb201-")
        if device in nb201.DEVICES:
            return lambda cfg: nb201.latency(cfg, device)
    if path.name.endswith((".csv", ".csv.gz")) and path.is_file():
        from nas.hw.profiles import Profile

        try:
            return _profile_predictor(Profile.load(path), space, target, path)
        except ValueError as exc:  # e.g. an empty profile: say which target it was
            raise CliError(f"target {target}: {exc}") from None
    if target in hw_profiles.available():
        try:
            return _profile_predictor(
                hw_profiles.load(target), space, target, hw_profiles.path_of(target), profile_name=target
            )
        except ValueError as exc:
            raise CliError(f"target {target}: {exc}") from None
    if path.name.endswith((".json", ".csv", ".csv.gz")) and not path.is_file():
        raise CliError(
            f"target {target}: no such file"
            + (" (a folder)" if path.is_dir() else "")
            + "; a predictor comes from `nas fit PROFILE --out FILE.json`, a profile from `nas profile --out FILE.csv`"
        )
    raise CliError(
        f"target {target!r} is neither a predictor (.json) nor a profile file (.csv) nor a built-in profile; "
        f"built-in profiles: {', '.join(hw_profiles.available())}"
        + (
            "; nb201 devices: edgegpu, raspi4, edgetpu, pixel3, eyeriss, fpga"
            if space_name == "nb201"
            else ""
        )
    )


def _target_record(target: str, space_name: str) -> dict[str, Any] | None:
    """Where a target's latencies come from and how they were measured, as ``nas export --measure`` needs it:
    ``{"source", "metric", "metadata"}`` (metadata empty when the target records none: an nb201 device, a
    predictor without provenance), or ``None`` when ``target`` names nothing here. Resolved in the order of
    :func:`_latency_function`.

    Example:
        >>> _target_record("raspi4", "nb201")
        {'source': 'raspi4', 'metric': 'latency_ms', 'metadata': {}}
    """
    import hw_profiles
    from nas.hw.export_check import RECORDED_KEYS
    from nas.hw.profiles import meta_path

    path = Path(target)
    if path.suffix == ".json" and path.is_file():
        import predictors

        provenance = predictors.load(path).provenance
        device = provenance.get("device") or {}
        metadata = {k: device[k] for k in RECORDED_KEYS if k in device}
        return {
            "source": str(path.resolve()),
            "metric": provenance.get("metric", "latency_ms"),
            "metadata": metadata,
        }
    if space_name == "nb201":
        from search_spaces import nb201

        if target.removeprefix("nb201-") in nb201.DEVICES:
            return {"source": target, "metric": "latency_ms", "metadata": {}}
    if path.name.endswith((".csv", ".csv.gz")) and path.is_file():
        source = str(path.resolve())
    elif target in hw_profiles.available():
        path, source = hw_profiles.path_of(target), target
    else:
        return None
    try:
        recorded = json.loads(meta_path(path).read_text())["metadata"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = {}
    metadata = {k: recorded[k] for k in RECORDED_KEYS if k in recorded} if isinstance(recorded, dict) else {}
    return {"source": source, "metric": "latency_ms", "metadata": metadata}


def _profile_predictor(
    profile: Any, space: Any, target: str, path: Path, profile_name: str | None = None
) -> Callable[[Any], float]:
    """Measured latency where the profile has the config, else the predictor ``nas fit`` would fit on it.

    The same rows (degenerate configs left out), kind, held-out split and provenance as ``nas fit PROFILE``
    (:func:`nas.hw.cli_hooks.fit_profile` with its defaults), so a profile target prices the configs it lacks as
    the predictor file made from it would. The rows are checked now; the fit itself (tens of seconds for
    ``auto`` on a few hundred rows, minutes on thousands) waits until the search first needs a latency, so a
    command refused before the search starts does not pay for it.
    """
    from nas.hw.cli_hooks import fit_profile, fit_rows

    if profile.space != space.name:
        raise ValueError(f"profile is for space {profile.space!r}, not {space.name!r}")
    measured = {c.key: float(v) for c, v in zip(profile.configs, profile.latencies)}
    rows = fit_rows(profile, space)

    def build() -> Callable[[Any], float]:
        import numpy as np

        print(
            f"nas search: target {target}: fitting a latency predictor on {len(rows.y):,} of its configs, as "
            "`nas fit` does, for the configs it did not measure",
            file=sys.stderr,
        )
        fitted = fit_profile(rows, space, path, profile_name=profile_name)
        print(f"nas search: target {target}: {_describe_fit(fitted)}", file=sys.stderr)
        pred = fitted.predictor

        def latency_ms(cfg: Any) -> float:
            key = space.canonical(cfg).key
            if key in measured:
                return measured[key]
            return float(np.asarray(pred.predict(space.features(cfg)[None, :])).reshape(-1)[0])

        return latency_ms

    return _BuiltOnFirstCall(build, f"latency of {target}")


def _describe_fit(fitted: Any) -> str:
    """What a profile target's predictor was fitted on, in one line (kind, rows, held-out score).

    Example:
        >>> from types import SimpleNamespace as NS
        >>> fit = NS(predictor=NS(kind="gbdt", provenance={"rows": 300, "rows_fitted": 259, "train": 194,
        ...     "test": 65, "left_out": {"disconnected": 41}, "held_out": {"within_10pct": 0.923}}))
        >>> _describe_fit(fit)
        'fitted gbdt on 194 of its 300 configs (41 degenerate left out: disconnected), held-out within 10%: 92% of 65'
    """
    prov = fitted.predictor.provenance
    text = f"fitted {getattr(fitted.predictor, 'kind', '?')} on {prov['train']:,} of its {prov['rows']:,} configs"
    if prov["left_out"]:
        reasons = ", ".join(prov["left_out"])
        text += f" ({sum(prov['left_out'].values()):,} degenerate left out: {reasons})"
    if "within_10pct" in prov["held_out"]:
        text += f", held-out within 10%: {prov['held_out']['within_10pct']:.0%} of {prov['test']:,}"
    return text


class _BuiltOnFirstCall:
    """A ``cfg -> float`` function built by ``build()`` on its first call (thread-safe), then kept.

    Unlike :class:`nas.search.LazyFunction`, pickling it (Ray ships objectives to its actors) builds it here and
    ships the result, so an expensive build (a predictor fit) runs once, not once per actor. A build that fails
    fails every later call with the same error instead of running again.
    """

    def __init__(self, build: Callable[[], Callable[[Any], float]], description: str):
        import threading

        self._build, self.description = build, description
        self._fn: Callable[[Any], float] | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def built(self) -> Callable[[Any], float]:
        with self._lock:
            if self._fn is None:
                if self._error is not None:
                    raise self._error
                try:
                    self._fn = self._build()
                except Exception as exc:
                    self._error = exc
                    raise
            return self._fn

    def __call__(self, cfg: Any) -> float:
        return self.built()(cfg)

    def __getstate__(self) -> dict[str, Any]:
        return {"fn": self.built(), "description": self.description}

    def __setstate__(self, state: dict[str, Any]) -> None:
        fn = state["fn"]
        self.__init__(lambda: fn, state["description"])
        self._fn = fn

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description})"


# ------------------------------------------------------------------------------------------------ commands
# Generic, so the help needs no update per space (and building the parser imports no space module).
def cmd_spaces(args: argparse.Namespace) -> int:
    import search_spaces

    for name, desc in search_spaces.available().items():
        print(f"{name:14s} {desc}")
        presets = search_spaces.presets(name)
        if presets:
            print(f"{'':14s} --preset {' | '.join(presets)} (default {presets[0]})")
        recipe = search_spaces.training_recipe(name)
        if recipe:
            shown = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in recipe.items())
            print(f"{'':14s} nas train defaults: {shown}")
    print(
        "(or --space some.module of your own that defines space and supernet(); see examples/custom_space.py)"
    )
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    import hw_profiles

    for name in hw_profiles.available():
        p = hw_profiles.load(name)
        meta = p.metadata
        print(
            f"{name:18s} space={p.space:12s} rows={len(p):6d} device={meta.get('device')} ({meta.get('source', '')})"
        )
        print(f"{'':18s} file={hw_profiles.path_of(name)}")
    return 0


def add_sampling_arguments(parser: Any) -> None:
    """Add ``--low-res-bias``, ``--attentive`` (how random subnets are drawn) and ``--min-weight`` to a parser."""
    parser.add_argument(
        "--low-res-bias",
        type=float,
        default=0.0,
        help="favour low resolutions for the random subnets: weight (R - i) ** BIAS for the i-th smallest of "
        "R resolutions (default 0 = uniform; 0.5-1 lifts low-resolution subnets)",
    )
    parser.add_argument(
        "--attentive",
        type=int,
        default=0,
        metavar="K",
        help="AttentiveNAS worst-up sampling: draw K more candidates per random subnet and train the one with "
        "the highest loss on the batch (default 0 = off; costs K no-grad forwards on 32 images each)",
    )
    parser.add_argument(
        "--min-weight",
        type=float,
        default=1.0,
        metavar="W",
        help="loss weight of the min subnet in sandwich steps, relative to the random subnets' 1 (default 1; "
        "below 1 the min subnet, trained every step, claims less of the weights every subnet shares)",
    )


def sampling_options(args: Any) -> dict[str, Any]:
    """Strategy options from :func:`add_sampling_arguments`' flags; only those set, so that runs checkpointed
    before an option existed still resume (their stored settings lack it)."""
    options = {"low_resolution_bias": args.low_res_bias, "attentive": args.attentive}
    options = {k: v for k, v in options.items() if v}
    if args.min_weight != 1.0:
        options["min_weight"] = args.min_weight
    return options


def cmd_train(args: argparse.Namespace) -> int:
    import search_spaces
    from nas import data as nas_data

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.workers <= 1:  # a device this machine lacks: said before the data is read or anything written
        from nas.train import resolve_device

        try:
            resolve_device(args.device)
        except ValueError as exc:
            raise CliError(f"--device: {exc}") from None
    data_name = _data_name(args.data)
    train, _ = _dataset(nas_data, data_name, args.data_root, "train")
    val, _ = _dataset(nas_data, data_name, args.data_root, "val")
    images, labels = train.tensors[:2]
    num_classes = 10 if data_name in BUILTIN_DATA else int(labels.max()) + 1  # built-ins: 10 classes
    spec = {
        "space": args.space,
        "kwargs": _supernet_kwargs(args, num_classes=num_classes, in_channels=int(images.shape[1])),
        "data": data_name,
        # absolute: nas search and nas export read the data from wherever they run
        "data_root": str(Path(args.data_root).resolve()) if args.data_root else None,
    }
    out = Path(args.out)
    _check_run_directory(out, spec, args.resume)
    import torch

    # The initial weights come from torch's global generator, whose state here is not fixed (unseeded, the
    # supernet's weights differed with PYTHONHASHSEED): two runs with one --seed started from other weights.
    torch.manual_seed(args.seed)
    net = search_spaces.build_supernet(spec)
    if not search_spaces.is_builtin(args.space):
        _check_exportable(net, args.space)
    new_dir = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / search_spaces.SUPERNET_SPEC, json.dumps(spec, indent=2))
    with _removed_if_nothing_trained(out, new_dir):
        _train(args, net, train, val, out)
    print(f"trained supernet in {out}")
    return 0


def _check_exportable(net: Any, space: str) -> None:
    """Extract, describe and cost the largest and smallest subnets of a supernet of the user's before training.

    ``nas search`` (MACs) and ``nas export`` (the architecture in the manifest) need them; a layer type they cannot
    handle would otherwise surface only after training and searching.
    """
    from nas import static

    for cfg in (net.space.max(), net.space.min()):
        try:
            model = net.extract(cfg)
            if not hasattr(model, "architecture"):
                static.describe(model)
            net.layer_specs(cfg)
        except (TypeError, ValueError) as exc:
            raise CliError(
                f"--space {space}: {type(net).__name__}, subnet {cfg.to_json()}: {exc} (checked before training: "
                "nas search and nas export need it)"
            ) from None


def _check_run_directory(out: Path, spec: dict[str, Any], resume: bool) -> None:
    """Refuse to touch a run directory whose supernet or data differ, or to start over on a trained run.

    The spec file says what the weights in ``out`` are (``nas search --supernet`` rebuilds the network and its
    data from it), so it is never rewritten to something else; and a fresh start would overwrite the run's
    checkpoint and weights, so it needs an empty (or new) directory.
    """
    import search_spaces
    from nas.train.checkpoint import CHECKPOINT, WEIGHTS
    from nas.train.trainer import settings_diff

    spec_file = out / search_spaces.SUPERNET_SPEC
    if spec_file.is_file():
        try:
            stored = json.loads(spec_file.read_text())
        except json.JSONDecodeError:
            stored = None
        if (
            isinstance(stored, dict)
            and stored.get("data_root")
            and not Path(stored["data_root"]).is_absolute()
        ):
            # Runs before roots were recorded absolute: resumed from where they were started, as documented.
            stored["data_root"] = str(Path(stored["data_root"]).resolve())
        if isinstance(stored, dict) and stored != json.loads(json.dumps(spec)):
            raise CliError(
                f"{out} holds a supernet trained with other settings ({settings_diff(stored, spec)}); "
                "use the same --space/--preset/--data options to resume it, or choose another --out"
            )
    if not resume and any((out / name).exists() for name in (CHECKPOINT, WEIGHTS)):
        raise CliError(
            f"{out} already holds a training run; add --resume to continue it, or choose another --out "
            "(delete the directory to start over)"
        )


@contextlib.contextmanager
def _removed_if_nothing_trained(out: Path, new_dir: bool) -> Iterator[None]:
    """Delete a run directory this command created when training fails before writing anything but its spec.

    A refused setting (``--epochs 0``) must not leave a directory that looks like a run; one with a
    checkpoint or a metrics log is kept, so ``--resume`` can continue it.
    """
    try:
        yield
    except BaseException:
        import search_spaces

        if new_dir and {p.name for p in out.iterdir()} <= {search_spaces.SUPERNET_SPEC}:
            shutil.rmtree(out, ignore_errors=True)
        raise


# `nas train`'s defaults of the settings a space's ``Supernet.training_recipe`` may replace.
TRAIN_DEFAULTS: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 3e-3,
    "weight_decay": 3e-5,
    "warmup_epochs": 0.5,
    "grad_clip": 5.0,
    "label_smoothing": 0.1,
    "distill_labels": 0.0,
}


def train_settings(args: argparse.Namespace, net: Any) -> dict[str, Any]:
    """The recipe settings of a ``nas train`` run: each option given on the command line, else the space's
    ``training_recipe``, else :data:`TRAIN_DEFAULTS`; says which came from the space's recipe.

    Example:
        >>> from types import SimpleNamespace
        >>> args = SimpleNamespace(**{**dict.fromkeys(TRAIN_DEFAULTS), "lr": 0.01})
        >>> net = SimpleNamespace(training_recipe={"lr": 1e-3, "weight_decay": 0.05})
        >>> s = train_settings(args, net)
        training recipe of SimpleNamespace: weight_decay=0.05
        >>> s["lr"], s["weight_decay"], s["optimizer"]
        (0.01, 0.05, 'adamw')
    """
    recipe = getattr(net, "training_recipe", {})
    settings, from_recipe = {}, []
    for name, default in TRAIN_DEFAULTS.items():
        given = getattr(args, name)
        if given is not None:
            settings[name] = given
        elif name in recipe:
            settings[name] = recipe[name]
            from_recipe.append(f"{name}={recipe[name]}")
        else:
            settings[name] = default
    if from_recipe:
        print(f"training recipe of {type(net).__name__}: {', '.join(from_recipe)}")
    return settings


def _train(args: argparse.Namespace, net: Any, train: Any, val: Any, out: Path) -> None:
    from nas.train import train_supernet

    train_supernet(
        net,
        train,
        val_data=val,
        strategy=args.strategy,
        epochs=args.epochs,
        batch_size=args.batch_size,
        **train_settings(args, net),
        augment={"shift": True, "none": False}.get(args.augment, args.augment),
        n_random=args.n_random,
        strategy_options=sampling_options(args),
        distill=not args.no_distill,
        out_dir=str(out),
        resume=args.resume,
        seed=args.seed,
        num_workers=args.workers,
        device=args.device,
    )


BUILTIN_DATA = ("mnist", "digits", "cifar10")


def _data_name(data: str) -> str:
    """A built-in dataset's name, or the absolute path of a ``.npz`` file (recorded in supernet.json, so later
    commands find it from any working directory)."""
    if data in BUILTIN_DATA:
        return data
    if data.endswith(".npz"):
        return str(Path(data).resolve())
    raise CliError(f"unknown dataset {data!r}; choose {', '.join(BUILTIN_DATA)}, or a .npz file of your own")


def held_out_split(name: str) -> dict[str, Any]:
    """How ``val`` is held out of a dataset's training images: ``train_val_split``'s fraction and seed.

    Recorded beside a search store, so that ``nas export`` re-estimates batch norm on the very images the search
    measured accuracy on even if these defaults change.

    Example:
        >>> held_out_split("mnist"), held_out_split("digits")
        ({'fraction': 0.1, 'seed': 0}, {'fraction': 0.2, 'seed': 0})
    """
    return {"fraction": 0.2 if name == "digits" else 0.1, "seed": 0}  # digits: 1,797 images, no test split


def _dataset(
    nas_data: Any, name: str, root: str | None, split: str, held_out: Mapping[str, Any] | None = None
) -> tuple[Any, str]:
    """(dataset, description) of the train / val / test split of a named dataset (or a ``.npz`` file).

    ``val`` is a fixed, stratified share of the training images held out from ``train`` (``held_out``, by
    default :func:`held_out_split`: 10%, digits 20%), so searches rank subnets on images the supernet never
    trained on and the test set stays untouched.
    """
    split_of = dict(held_out or held_out_split(name))

    def part(images: Any) -> Any:
        train, val = nas_data.train_val_split(images, split_of["fraction"], seed=split_of["seed"])
        if split == "val" and not len(val):  # checked before training: else it fails once trained, unclearly
            raise CliError(
                f"{name}: no image is left to hold out for validation: every class has a single training image "
                "(a class keeps at least one for training); give at least two images of some class"
            )
        return train if split == "train" else val

    if name.endswith(".npz"):
        if split == "test":
            return nas_data.npz(name, "test"), f"{name} test"
        return part(nas_data.npz(name, "train")), f"{Path(name).name} {split}"
    if name == "mnist":
        if split == "test":
            return nas_data.mnist("test"), "MNIST test"
        return part(nas_data.mnist("train")), f"MNIST {split}"
    if name == "digits":
        return part(nas_data.digits()), f"sklearn digits {split}"
    if name == "cifar10":
        if not root:
            raise CliError(
                "--data cifar10 needs --data-root pointing at the folder with cifar-10-batches-bin"
            )
        if split == "test":
            return nas_data.cifar10(root, "test"), "CIFAR-10 test"
        return part(nas_data.cifar10(root, "train")), f"CIFAR-10 {split}"
    raise CliError(f"unknown dataset {name!r}; choose {', '.join(BUILTIN_DATA)}, or a .npz file of your own")


def _check_out_file(out: str, example: str) -> None:
    """Refuse an ``--out`` that names a folder where a file is written, before any work is done."""
    if Path(out).is_dir():
        raise CliError(f"--out {out} is a folder; give the file to write, e.g. {Path(out) / example}")


def cmd_profile(args: argparse.Namespace) -> int:
    from nas.hw.cli_hooks import run_profile
    from nas.hw.measure import BackendUnavailableError

    _check_out_file(args.out, "my-cpu.csv")
    if args.supernet:
        import search_spaces

        _refuse_options_the_supernet_decides(args, search_spaces.trained_spec(args.supernet))
    net = _supernet_or_none(args)
    if net is None:
        import search_spaces

        args.space = args.space or "mobilenetv3"
        args.in_channels = args.in_channels or 1
        module = load_space_module(args.space)
        if not hasattr(module, "supernet"):
            raise CliError(f"space {args.space!r} has no supernet to measure; it is a tabular benchmark")
        kwargs = _supernet_kwargs(args, num_classes=10, in_channels=args.in_channels)
        net = search_spaces.build_supernet({"space": args.space, "kwargs": kwargs})
    try:
        run_profile(
            net,
            backend=args.backend,
            samples=args.samples,
            out_path=args.out,
            batch_size=args.batch_size,
            threads=args.threads,
            seed=args.seed,
            clock=args.clock,
            precision=args.precision,
            warmup=args.warmup,
            repeats=args.repeats,
            rounds=args.rounds,
            device_name=args.device_name,
        )
    except BackendUnavailableError as exc:  # a RuntimeError, but about this machine: say so in one line
        raise CliError(str(exc)) from None
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from nas.hw.cli_hooks import run_fit

    _check_out_file(args.out, "my-cpu.json")
    if not args.out.endswith(".json"):  # nas search --target tells a predictor from a profile by the suffix
        raise CliError(
            f"--out {args.out}: a predictor file must end in .json (nas search --target reads it so)"
        )
    path = _profile_file(args.profile)
    run_fit(
        path,
        args.out,
        keep_degenerate=args.keep_degenerate,
        progress=not args.quiet,
        profile_name=args.profile if path != args.profile else None,
        kind=args.kind,
        test_fraction=args.test_fraction,
        seed=args.seed,
        resolve_space=_profile_space_resolver(args.space),
        metric=args.metric,
    )
    return 0


def _profile_file(name: str) -> str:
    """The profile file ``nas fit`` reads: ``name`` itself, or the table of the built-in profile so named.

    A file that exists wins; otherwise a built-in name (``nb201-raspi4``, or a device name only one built-in
    profile ends with, as ``nas search --target`` takes it) resolves to its table. A name that is neither is
    passed on, so the error names the missing file.
    """
    if Path(name).exists():
        return name
    import hw_profiles

    names = hw_profiles.available()
    if name in names or any(n.endswith(f"-{name}") for n in names):
        return str(hw_profiles.path_of(name))  # an ambiguous device name: the error lists the candidates
    return name


def _profile_space_resolver(module: str | None) -> Callable[[str], Any]:
    """``name -> SearchSpace`` for ``nas fit``: the module's space when ``--space`` names one, a built-in space by
    name, else ``None`` so that the dimensions recorded in the profile are used (said on stderr: a space whose
    module defines its own ``features()`` needs ``--space`` for the predictor to see them)."""
    import search_spaces

    def resolve(name: str) -> Any:
        try:
            return search_spaces.space_by_name(name, module=module)
        except ValueError:
            if module is not None:
                raise
            print(
                f"nas fit: space {name!r} is not built-in; using the dimensions the profile records (pass "
                "--space MODULE when its space defines its own features())",
                file=sys.stderr,
            )
            return None

    return resolve


def _objectives(args: argparse.Namespace, space: Any) -> tuple[list[Any], dict[str, Any]]:
    """Objectives of a CLI search, and the recipe recorded beside the store."""
    from nas import search

    objectives = []
    recipe: dict[str, Any] = {"space": args.space, "targets": {}}
    if args.space == "nb201":
        from search_spaces import nb201

        dataset = args.dataset or "cifar10"
        if dataset not in nb201.DATASETS:  # checked here: every evaluation would fail on it
            raise CliError(f"unknown nb201 dataset {dataset!r}; choose {', '.join(nb201.DATASETS)}")
        objectives.append(
            search.Objective(
                "accuracy",
                lambda cfg: nb201.accuracy(cfg, dataset),
                "max",
                expensive=True,
                graph_invariant=True,
            )
        )
        recipe["dataset"] = dataset
        # said, not refused: scripts may pass --device to every search
        if getattr(args, "device", None) is not None:
            print(
                f"nas search: --device {args.device} has no effect on an nb201 search (its accuracies are read "
                "from the benchmark table; no network runs)",
                file=sys.stderr,
            )
    else:
        if not args.supernet:
            raise CliError(f"searching {args.space!r} needs --supernet RUN_DIR (made by `nas train`)")
        import search_spaces

        run_dir = str(Path(args.supernet).resolve())
        spec = search_spaces.trained_spec(run_dir)
        # --dataset is checked (and a .npz path made absolute) before the search: a bad one would fail every
        # evaluation and spend the whole budget on errors.
        data_name = _data_name(args.dataset) if args.dataset else spec.get("data", "mnist")
        if data_name.endswith(".npz") and not Path(data_name).is_file():
            raise CliError(
                f"{data_name}: no such data file; pass --dataset with the .npz file to rank subnets on"
            )
        root = _search_data_root(args.data_root, data_name, spec)
        held_out = held_out_split(data_name)
        # Recorded so that `nas export` re-estimates batch norm on the images these accuracies were measured on.
        recipe.update(supernet=run_dir, dataset=data_name, data_root=root, held_out=held_out)
        objectives.append(
            search.accuracy(
                _SupernetLoader(run_dir, device=_evaluation_device(args)),
                _DataLoader(data_name, root, held_out),
                "accuracy",
            )
        )
    for target in args.target or []:
        label = target_label(target)
        if label in recipe["targets"]:
            raise CliError(
                f"--target {target} and --target {recipe['targets'][label]} both name the target {label!r} (a "
                "file's label is its name without .csv/.json): pass each target once, or rename one of the files"
            )
        fn = _latency_function(space, args.space, target)
        objectives.append(search.latency(label, fn))
        recipe["targets"][label] = target
        # what `nas export --measure` measures like: recorded now, as the file is then (and from any directory)
        recipe.setdefault("target_measurements", {})[label] = _target_record(target, args.space)
    for extra in args.objective or []:
        if extra not in ("macs", "params", "model_bytes"):
            raise CliError(f"unknown extra objective {extra!r}; choose macs, params or model_bytes")
        if args.space == "nb201":
            raise CliError("macs/params/model_bytes need a supernet; nb201 is a tabular benchmark")
        objectives.append(getattr(search, extra)(_SupernetLoader(recipe["supernet"])))
    if len(objectives) < 2:
        raise CliError("give at least one --target (or --objective macs) so there is a trade-off to search")
    return objectives, recipe


def _evaluation_device(args: argparse.Namespace) -> str:
    """``--device``, checked here unless Ray trials (which may run on other machines) resolve it."""
    device = getattr(args, "device", None) or "auto"
    if not (getattr(args, "backend", None) == "ray" or getattr(args, "ray_address", None)):
        from nas.train import resolve_device

        try:
            resolve_device(device)
        except ValueError as exc:
            raise CliError(f"--device: {exc}") from None
    return device


def _search_data_root(given: str | None, data_name: str, spec: Mapping[str, Any]) -> str | None:
    """The data root a search reads: ``--data-root``, else the supernet's own when it searches the supernet's
    data; absolute, so that ``nas export`` finds it from any working directory."""
    root = given or (spec.get("data_root") if data_name == spec.get("data") else None)
    return str(Path(root).resolve()) if root else None


class _SupernetLoader:
    """Picklable zero-argument loader (Ray actors call it once each), on ``device`` when one is given."""

    def __init__(self, run_dir: str, device: str | None = None):
        self.run_dir, self.device = run_dir, device

    def __call__(self) -> Any:
        import search_spaces

        net = search_spaces.load_trained(self.run_dir)
        if self.device is not None:
            from nas.train import resolve_device

            net.to(resolve_device(self.device))
        return net

    def __repr__(self) -> str:
        return f"supernet {self.run_dir}"


class _DataLoader:
    """Picklable loader of the held-out split used to rank subnets during search."""

    def __init__(self, name: str, root: str | None, held_out: Mapping[str, Any] | None = None):
        self.name, self.root, self.held_out = name, root, held_out

    def __call__(self) -> Any:
        from nas import data as nas_data

        return _dataset(nas_data, self.name, self.root, "val", self.held_out)[0]

    def __repr__(self) -> str:
        return f"{self.name} validation data"


def parse_key_values(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``["kappa=1.0", "predictor=sklearn-auto"]`` -> ``{"kappa": 1.0, "predictor": "sklearn-auto"}``.

    Example:
        >>> parse_key_values(["explore=0.3", "neighbours=false", "predictor=sklearn-auto"], "--searcher-option")
        {'explore': 0.3, 'neighbours': False, 'predictor': 'sklearn-auto'}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"{flag} takes KEY=VALUE, e.g. {flag} explore=0.3; got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def cmd_search(args: argparse.Namespace) -> int:
    from nas import search

    module = load_space_module(args.space)
    space = module.space if args.space == "nb201" else _search_space(args, module)
    objectives, recipe = _objectives(args, space)
    constraints = [search.Constraint(*parse_constraint(c)) for c in args.constraint or []]
    names = [o.name for o in objectives]
    for c in constraints:  # the library's error suggests fn=, which the shell cannot pass
        if c.metric not in names:
            raise CliError(
                f"--constraint {c.metric}{c.op}{c.bound:g} names no objective of this search; use one of "
                f"{', '.join(names)} (a target adds latency@NAME, --objective adds macs, params, ...)"
            )
    url = store_url(args.store) if args.store else None
    sidecar = sidecar_path(url) if url else None
    try:
        with _sidecar_written(sidecar, recipe, url):
            result = _run_search(args, search, space, objectives, constraints, url)
    except search.SearchFailedError as exc:  # a broken objective: its error, in one line
        raise CliError(str(exc)) from None
    targets = result.targets or [None]
    for target in targets:
        front = result.pareto(target=target)
        names = result.front_objectives(target)
        unpriced = result.lacking(target)
        why = f" ({unpriced} partial evaluations have no value for it: see the store's error column)"
        print(
            f"\nPareto front{' for ' + target if target else ''}: {len(front)} of {len(result)} evaluations"
            + (why if unpriced else "")
        )
        if front.empty:  # rather than pandas' "Empty DataFrame / Columns: [...] / Index: []"
            print(f"  no evaluation is on it: {_empty_front_reason(result, target)}")
        else:
            print(front[["key", *names]].to_string(index=False, max_rows=30))
    return 0


def _run_search(
    args: argparse.Namespace, search: Any, space: Any, objectives: list, constraints: list, url: str | None
) -> Any:
    return search.run(
        space,
        objectives,
        algorithm=args.algorithm,
        budget=args.budget,
        seed=args.seed,
        backend="ray" if args.ray_address or args.backend == "ray" else "local",
        ray_address=args.ray_address,
        max_concurrent=args.max_concurrent,
        store=url,
        resume=args.resume,
        constraints=constraints,
        batch_size=args.batch_size,
        progress=not args.quiet,
        searcher_options=parse_key_values(args.searcher_option, "--searcher-option") or None,
    )


@contextlib.contextmanager
def _sidecar_written(sidecar: Path | None, recipe: dict[str, Any], url: str | None) -> Iterator[None]:
    """Write the run's recipe beside its SQLite store, and take it back if the search recorded nothing.

    The recipe is written first so that an interrupted run can be exported and resumed. A search refused before
    its first evaluation (a bad ``--budget``, a ``--resume`` whose settings do not match the stored run) must
    leave the files as they were: no new sidecar, and an existing run's recipe not overwritten.
    """
    if sidecar is None or url is None:
        yield
        return
    before = sidecar.read_text() if sidecar.is_file() else None
    n_before = _stored_evaluations(url)
    write_text(sidecar, json.dumps(recipe, indent=2))
    try:
        yield
    except BaseException:
        if _stored_evaluations(url) == n_before:
            if before is None:
                sidecar.unlink(missing_ok=True)
            else:
                write_text(sidecar, before)
        raise


def _stored_evaluations(url: str) -> int | None:
    """How many evaluations a store holds: 0 when it does not exist yet, ``None`` when it cannot be read."""
    from nas.search.store import open_store

    try:
        store = open_store(url, create=False)
    except FileNotFoundError:
        return 0
    try:
        return len(store.records())
    except Exception:  # not a store (yet): search.run says what is wrong with it
        return None
    finally:
        store.close()


def _search_space(args: argparse.Namespace, module: Any) -> Any:
    if args.supernet:
        import search_spaces

        spec = search_spaces.trained_spec(args.supernet)
        # The supernet decides the space; a --space or --preset that says otherwise would be recorded with the
        # run (and believed) while another space is searched.
        _refuse_options_the_supernet_decides(args, spec)
        return search_spaces.build_supernet(spec).space
    import search_spaces

    try:
        return search_spaces.make_space(args.space, **({"preset": args.preset} if args.preset else {}))
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_report(args: argparse.Namespace) -> int:
    from nas.report import write_report

    index = write_report(store_url(args.store), args.out)
    print(f"report written to {index}")
    return 0


def _empty_front_reason(result: Any, target: str | None) -> str:
    """Why no evaluation of ``result`` is on ``target``'s front: how many failed, broke a constraint or lack a
    value of its objectives (a partial evaluation whose target could not price it)."""
    from nas.search.result import USABLE_STATUSES

    history = result.history
    usable = history["status"].isin(USABLE_STATUSES)
    failed = int((~usable).sum())
    infeasible = int((usable & ~history["feasible"].astype(bool)).sum())
    no_value = len(history) - failed - infeasible
    return (
        f"of {len(history)}, {failed} failed, {infeasible} broke a constraint and {no_value} lack a value of "
        f"{', '.join(result.front_objectives(target))}"
    )


def cmd_export(args: argparse.Namespace) -> int:
    import search_spaces
    from nas.export import ExportError, export, read_manifest
    from nas.search import SearchResult
    from nas.search.runner import space_fingerprint

    if args.tolerance is not None and not args.tolerance >= 0:
        raise CliError(f"--tolerance {args.tolerance:g} must be >= 0 (--no-verify skips the check)")
    url = store_url(args.store)
    result = SearchResult.load(url)
    sidecar = sidecar_path(url)
    recipe = json.loads(sidecar.read_text()) if sidecar and sidecar.is_file() else {}
    supernet_dir = args.supernet or recipe.get("supernet")
    if not supernet_dir:
        searched = str(result.meta.get("space") or recipe.get("space") or "")
        if search_spaces.is_builtin(searched) and not hasattr(search_spaces.get(searched), "supernet"):
            # nb201: accuracies and latencies are looked up, there are no weights; --supernet would not help
            raise CliError(
                f"this run searched {searched}, a tabular space (accuracies and latencies looked up, no "
                "supernet or weights), so there is no model to export; its fronts are in the store (nas report)"
            )
        raise CliError("this run has no supernet to export from; pass --supernet RUN_DIR (the one searched)")
    names = result.objective_names
    if "accuracy" not in names:
        raise CliError(
            f"nas export picks the most accurate subnet, but this run has no 'accuracy' objective (objectives: "
            f"{', '.join(names)}); export a config of your choice in Python with nas.export(net, cfg, out)"
        )
    target = target_label(args.target) if args.target else (result.targets[0] if result.targets else None)
    front = result.pareto(target=target)
    lat_col = f"latency@{target}" if target and f"latency@{target}" in names else None
    if args.max_latency and not lat_col:
        # Without a latency column there is nothing to bound: exporting the most accurate subnet regardless
        # would hand over a model that may break the bound the user asked for.
        raise CliError(
            f"--max-latency needs a latency target, but this run has none (objectives: "
            f"{', '.join(names)}); search with --target, or drop --max-latency"
        )
    bound = parse_duration_ms(args.max_latency) if args.max_latency else None
    measuring = _measurement_target(recipe, target, lat_col, args.store) if args.measure else None
    if front.empty:
        if not len(result.history):
            raise CliError(f"{args.store} holds no evaluations yet; run (or resume) the search first")
        raise CliError(
            f"no evaluation in {args.store} can be exported: {_empty_front_reason(result, target)} (the store's "
            "error column says why evaluations failed); fix the cause and search again"
        )
    if bound is not None:
        fastest = float(front[lat_col].min())
        front = front[front[lat_col] <= bound]
        if front.empty:
            raise CliError(
                f"no Pareto-optimal subnet for target {target!r} meets --max-latency {args.max_latency} (the "
                f"fastest takes {fastest:.3f} ms); relax the bound or search longer"
            )
    # Equally accurate subnets: the faster one (then the earlier one), not whichever a sort left first.
    keys = ["accuracy", lat_col, "order"] if lat_col else ["accuracy", "order"]
    best = front.sort_values(keys, ascending=[False] + [True] * (len(keys) - 1), kind="mergesort").iloc[0]
    cfg = result.configs(front.loc[[best.name]])[0]
    net = search_spaces.load_trained(supernet_dir)
    fingerprint = result.meta.get("space_fingerprint")
    if fingerprint and space_fingerprint(net.space) != fingerprint:
        # Caught here: otherwise the config fails deep in export() with a message about unknown dimensions.
        raise CliError(
            f"the supernet in {supernet_dir} is one of space {net.space.name!r}, not the space this run searched "
            f"({result.meta.get('space')!r}); pass the --supernet the search used"
        )
    if measuring is not None:  # refused now, before anything is written, when it cannot be measured here
        _check_measurable(measuring, net.input_shape(cfg, 1), target)
    formats = tuple(args.format)
    int8_data = _int8_calibration(supernet_dir, cfg, args.data_root) if "onnx-int8" in formats else {}
    bn_data = _bn_calibration_images(supernet_dir, recipe, args.data_root)
    # the file checks of export(): its default tolerance unless --tolerance / --no-verify says otherwise
    verify = {"verify_tolerance": None} if args.no_verify else {}
    if args.tolerance is not None:
        verify["verify_tolerance"] = args.tolerance
    try:
        out = export(net, cfg, args.out, formats=formats, bn_calib_data=bn_data, **int8_data, **verify)
    except ExportError as exc:  # e.g. --out is a directory of other files: one line, like any bad input
        raise CliError(str(exc)) from None
    shown = f", {lat_col}={best[lat_col]:.3f} ms" if lat_col else ""
    print(f"exported {cfg.key} (accuracy={best['accuracy']:.2f}{shown}) to {out}")
    if "onnx-int8" in formats:
        check = read_manifest(out)["verification"]
        agreement = check.get("int8_top1_agreement")
        if agreement is not None:
            # a small validation split holds fewer than INT8_IMAGES images: say how many were compared
            n = check.get("int8_samples", INT8_IMAGES)
            print(f"int8 ONNX agrees with the float model on {agreement:.1%} of {n} held-out images")
    sparse = read_manifest(out)["verification"].get("semi_structured_2to4")
    if sparse:
        print(semi_structured_summary(sparse))
    if measuring is not None:
        _measure_exported(out, measuring, target, float(best[lat_col]), bound, args.max_latency)
    return 0


def semi_structured_summary(entry: Mapping[str, Any]) -> str:
    """One line on an export's 2:4 layers (its manifest's ``semi_structured_2to4`` entry): how many, and on a GPU
    whether the sparse tensor cores made it faster than dense.

    Example:
        >>> semi_structured_summary({"eligible": ["a", "b"], "cuda": False})
        '2 layers follow 2:4 sparsity; they run sparse only on an NVIDIA GPU of compute capability 8.0+ (nas.semi_structured.to_semi_structured), the exported files stay dense'
    """
    n = len(entry.get("eligible", ()))
    head = f"{n} layer{'s' if n != 1 else ''} follow{'' if n != 1 else 's'} 2:4 sparsity"
    if not entry.get("cuda"):
        return (
            f"{head}; they run sparse only on an NVIDIA GPU of compute capability 8.0+ "
            "(nas.semi_structured.to_semi_structured), the exported files stay dense"
        )
    timings = entry.get("cuda_graph_latency_ms")
    how = "as CUDA graphs"
    if not isinstance(timings, Mapping):
        timings, how = entry.get("latency_ms") or {}, "eagerly"
    if not {"dense", "2:4"} <= set(timings):
        return f"{head} (see manifest.json)"
    dense, sparse = float(timings["dense"]), float(timings["2:4"])
    verdict = "faster" if sparse < dense else "slower: keep the dense model here"
    return (
        f"{head}; on {entry.get('device', 'this GPU')} {how}, 2:4 {sparse:.3f} ms vs dense {dense:.3f} ms "
        f"({dense / sparse:.2f}x, {verdict})"
    )


def _measurement_target(
    recipe: Mapping[str, Any], target: str | None, lat_col: str | None, store: str
) -> dict[str, Any]:
    """The record of how ``target``'s latencies were measured (see :func:`_target_record`), for ``--measure``.

    ``nas search`` records it beside a SQLite store; a run searched before it did is read from the target
    file the run names, as seen from here.
    """
    if lat_col is None or target is None:
        raise CliError(
            "--measure compares the exported subnet's latency with its target's, but this run has no latency "
            "target; search with --target, or drop --measure"
        )
    record = (recipe.get("target_measurements") or {}).get(target)
    if record is None and target in (recipe.get("targets") or {}):
        named = recipe["targets"][target]
        record = _target_record(named, str(recipe.get("space")))
        if record is None:
            raise CliError(
                f"--measure: target {target} is {named}, which is not there from this directory (the run was "
                "searched before nas recorded its targets' measurement settings); run nas export from the "
                "directory the search ran in"
            )
    if record is None:
        raise CliError(
            f"--measure needs the measurement settings of target {target}, which nas search records beside a "
            f"SQLite store (STORE{SIDECAR_SUFFIX}), and {store} has none; drop --measure, or time the export "
            "with nas.hw.measure_export(out, profile_metadata)"
        )
    return dict(record)


def _check_measurable(record: Mapping[str, Any], input_shape: Sequence[int], target: str) -> None:
    """Refuse ``--measure`` (one line, before exporting) for a target whose measurement cannot be repeated here."""
    from nas.hw.export_check import measurement_settings
    from nas.hw.measure import BACKENDS, BackendUnavailableError

    what = f"target {target} ({record['source']})"
    try:
        measurement_settings(record["metadata"], input_shape, record["metric"], what=what)
    except (BackendUnavailableError, ValueError) as exc:  # one line, whether about this machine or the target
        fix = ""
        if record["metadata"].get("backend") not in BACKENDS:
            fix = (
                "; it needs a target measured by `nas profile` (a profile .csv, or a predictor `nas fit` made "
                "from one), or drop --measure"
            )
        raise CliError(f"--measure: {exc}{fix}") from None


def _measure_exported(
    out: Path, record: Mapping[str, Any], target: str, predicted: float, bound: float | None, bound_text: str
) -> None:
    """Time the export as ``target``'s latencies were measured, print measured against predicted, record both
    in its manifest, and warn when the measurement breaks ``--max-latency`` (the export stands)."""
    from nas.hw.export_check import measure_export

    m = measure_export(
        out,
        record["metadata"],
        metric=record["metric"],
        predicted_ms=predicted,
        max_latency_ms=bound,
        target=target,
    )
    s = m["settings"]
    how = s["backend"] + (f" {s['precision']}" if s["precision"] != "fp32" else "")
    how += f", batch {s['batch_size']}, {s['threads']} thread{'s' if s['threads'] != 1 else ''}"
    how += f", {s['clock']} clock" if s["clock"] != "wall" else ""
    print(
        f"measured {m['measured_ms']:.3f} ms on this machine ({how}; {s['statistic']} of {m['n']}, IQR "
        f"{m['iqr_ms']:.3f} ms); predicted {predicted:.3f} ms ({m['difference']:+.1%})"
    )
    where = "this machine"
    if m["other_machine"]:
        where = "this machine, not on the target's device"
        print(
            f"nas export: note: target {target} was measured on another machine (this one has "
            f"{m['other_machine']}): the measured latency is this machine's, not the target device's",
            file=sys.stderr,
        )
    if m.get("other_quantization"):
        print(
            f"nas export: note: target {target}'s latencies are not of this graph: this measurement times "
            f"{m['other_quantization']}; re-profile the target with nas profile to compare like with like",
            file=sys.stderr,
        )
    if bound is not None and not m["within_max_latency"]:
        print(
            f"nas export: warning: the measured {m['measured_ms']:.3f} ms is above --max-latency {bound_text} (on "
            f"{where}); the export is still the subnet the prediction chose (predicted {predicted:.3f} ms)",
            file=sys.stderr,
        )


INT8_IMAGES = 256  # calibration images for the int8 export, and as many held-out ones to check it on


def _bn_calibration_images(supernet_dir: str, recipe: Mapping[str, Any], data_root: str | None = None) -> Any:
    """The images ``nas search`` re-estimated every subnet's batch norm on when it measured its accuracy: the
    held-out split of the search's dataset (the supernet's training data unless the search named another).

    The search's data root and held-out split come from its ``recipe``; a store from before searches recorded
    them falls back to the supernet's data root and the default split; ``data_root`` (``nas export
    --data-root``) overrides both. The exported subnet gets its batch norm re-estimated on them the same way, so
    that it is the model whose accuracy the store holds; the supernet's own running statistics mix every subnet
    it trained. ``None`` (with a note) when the run records no data to calibrate on.
    """
    import search_spaces
    from nas import data as nas_data

    spec = search_spaces.trained_spec(supernet_dir)
    name = recipe.get("dataset") or spec.get("data")
    root = data_root or (recipe["data_root"] if "data_root" in recipe else spec.get("data_root"))
    problem = f"{supernet_dir} records no training data" if not name else None
    if name:
        try:
            return _dataset(nas_data, name, root, "val", recipe.get("held_out"))[0]
        except (FileNotFoundError, CliError) as exc:
            problem = f"cannot read {name}: {exc}"
    print(
        f"nas export: note: {problem}; batch-norm statistics are exported as the supernet holds them, not "
        "re-estimated for this subnet as the search did (its accuracy may differ from the stored one)",
        file=sys.stderr,
    )
    return None


def _int8_calibration(supernet_dir: str, cfg: Any, data_root: str | None = None) -> dict[str, Any]:
    """``calib_data`` / ``eval_data`` for an int8 export: images of the data the supernet was trained on.

    Activation ranges calibrated on random noise would not fit real inputs, so the images come from the run's
    training split (calibration) and its held-out validation split (the agreement check), at the subnet's
    resolution; read from ``data_root`` (``nas export --data-root``) when given, else the supernet's.
    """
    import torch

    import search_spaces
    from nas import data as nas_data
    from nas.supernet import resize_to

    spec = search_spaces.trained_spec(supernet_dir)
    name = spec.get("data")
    if not name:
        raise CliError(
            f"{supernet_dir} does not record its training data, which the int8 export calibrates on; "
            "export onnx and quantize it with nas.export.export_onnx_int8(model, path, calib_inputs)"
        )
    picked = {}
    for split, key in (("train", "calib_data"), ("val", "eval_data")):
        images = _dataset(nas_data, name, data_root or spec.get("data_root"), split)[0].tensors[0]
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:INT8_IMAGES]
        batch = images[order].float()
        picked[key] = resize_to(batch, cfg) if "resolution" in cfg else batch
    return picked


# ------------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas",
        description="Hardware-aware neural architecture search: train a weight-sharing supernet, profile "
        "devices, fit latency predictors, search Pareto fronts per target, export the chosen subnet.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("A day with the tool::", 1)[1] if __doc__ else None,
    )
    from nas import __version__

    parser.add_argument("--version", action="version", version=f"nas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A subcommand whose ``--help`` opens with what it does (the line ``nas --help`` lists it with)."""
        kwargs.setdefault("description", help[:1].upper() + help[1:] + ".")
        return sub.add_parser(name, help=help, **kwargs)

    p = command("spaces", help="list the built-in search spaces")
    p.set_defaults(func=cmd_spaces)
    p = command("profiles", help="list the built-in hardware profiles")
    p.set_defaults(func=cmd_profiles)

    p = command("train", help="train a weight-sharing supernet (resumable)")
    p.add_argument(
        "--space",
        default="mobilenetv3",
        help="built-in space with a supernet (default mobilenetv3), or the dotted path of a module of your own "
        "that defines space (a nas.SearchSpace, or a function returning one) and supernet() (e.g. "
        "examples.custom_space; imported from the working directory "
        "or the Python path)",
    )
    p.add_argument(
        "--preset",
        default=None,
        help=f"space preset: {_PRESET_HELP}",
    )
    p.add_argument(
        "--data",
        default="mnist",
        help="training data: mnist (bundled, default), digits (scikit-learn), cifar10 (needs --data-root), or "
        "a .npz file of your own with x_train, y_train (images N,H,W or N,C,H,W; integer labels 0..K-1) and "
        "optionally x_test, y_test; 10%% of the training images (digits, which has no test split: 20%%) are held out for "
        "validation and search",
    )
    p.add_argument("--data-root", help="folder with cifar-10-batches-bin (for --data cifar10)")
    p.add_argument("--strategy", default="sandwich", help="sandwich, progressive, delayed or uniform")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training images (default 10)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step, per worker (default 64)")
    p.add_argument(
        "--optimizer", default=None, choices=("adamw", "sgd"), help="default adamw (or the space's recipe)"
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate, after the warmup and before cosine decay (default 3e-3, suits adamw; sgd: "
        "~0.05; vit's recipe: 2e-3)",
    )
    p.add_argument(
        "--weight-decay", type=float, default=None, help="on conv/linear weights (default 3e-5; vit: 0.05)"
    )
    p.add_argument(
        "--warmup-epochs", type=float, default=None, help="linear learning-rate warmup (default 0.5; vit: 1)"
    )
    p.add_argument(
        "--grad-clip", type=float, default=None, help="gradient norm clipping (default 5; vit: 1; 0: none)"
    )
    p.add_argument(
        "--label-smoothing", type=float, default=None, help="on the max subnet's labels (default 0.1)"
    )
    p.add_argument(
        "--distill-labels",
        type=float,
        default=None,
        help="the labels' share of the other subnets' loss under in-place distillation, the teacher's soft "
        "predictions the rest (default 0: pure in-place distillation; vit: 1, its teacher learns slowly). "
        "Options left out here take the space's recipe (nas spaces lists it), else these defaults",
    )
    p.add_argument(
        "--augment",
        default="shift",
        choices=("shift", "affine", "none"),
        help="shift: whole-pixel shifts up to 2 px (default); affine: + rotation and zoom; none",
    )
    p.add_argument(
        "--n-random", type=int, default=2, help="random subnets per step besides max and min (default 2)"
    )
    p.add_argument(
        "--device",
        default="auto",
        help="where to train: auto (default: the GPU when CUDA is available, else the CPU), cpu, cuda or "
        "cuda:N; with --workers > 1, auto gives each worker a GPU when the Ray cluster has one per worker",
    )
    add_sampling_arguments(p)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-distill", action="store_true", help="no in-place distillation from the max subnet")
    p.add_argument("--quant", action="store_true", help="add per-layer weight bit-width dimensions")
    p.add_argument("--sparsity", action="store_true", help="add per-layer sparsity dimensions")
    p.add_argument(
        "--kernel-transform",
        action="store_true",
        help="Once-for-All kernel transformation matrices: smaller depthwise kernels are learned linear maps "
        "of the larger kernel's centre, not plain crops (mobilenetv3)",
    )
    p.add_argument("--workers", type=int, default=1, help="data-parallel workers on Ray Train (default 1)")
    p.add_argument("--seed", type=int, default=0, help="training seed (data order, subnet sampling)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics log, final weights)")
    p.set_defaults(func=cmd_train)

    p = command("profile", help="measure subnet latencies on this machine into a profile file")
    p.add_argument(
        "--space",
        default=None,
        help="built-in space, or the module path of your own (see nas train); default mobilenetv3, or the "
        "--supernet's space",
    )
    p.add_argument("--preset", default=None, help=f"space preset: {_PRESET_HELP}")
    p.add_argument(
        "--in-channels",
        type=int,
        default=None,
        help="input channels of the measured nets (default 1: MNIST; with --supernet, its own)",
    )
    p.add_argument(
        "--supernet",
        help="run directory of a trained supernet: its space, preset and input channels are measured (a "
        "--space, --preset or --in-channels that says otherwise is refused)",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime", "cuda"),
        help="torch: the extracted subnet in eager torch on this CPU (default); onnxruntime: its ONNX export "
        "(the int8 one with --precision int8); cuda: eager torch on this machine's GPU",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "int8"),
        help="int8: static QDQ quantization of the exported model (needs --backend onnxruntime)",
    )
    p.add_argument("--samples", type=int, default=300, help="random subnets to measure (default 300)")
    p.add_argument(
        "--repeats",
        type=int,
        default=30,
        help="timed forward calls per subnet, split evenly over --rounds and rounded up to a multiple of "
        "--rounds (10 with 3 rounds measures 12; the profile records the count used) (default 30)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved passes over all subnets, each in a new random order, so drift hits every subnet "
        "alike (default 3)",
    )
    p.add_argument(
        "--warmup", type=int, default=3, help="untimed calls at every visit of a subnet (default 3)"
    )
    p.add_argument(
        "--device-name",
        help="name recorded in the profile's metadata (default: HOSTNAME-BACKEND, e.g. myhost-torch; the CPU "
        "and GPU model are recorded beside it); an extended profile keeps its name",
    )
    p.add_argument("--batch-size", type=int, default=1, help="inputs per timed forward call (default 1)")
    p.add_argument("--threads", type=int, default=None, help="fixed thread count (default: all cores)")
    p.add_argument(
        "--clock",
        default="wall",
        choices=("wall", "thread_cpu"),
        help="wall: real latency (quiet machine); thread_cpu: CPU time of the timed thread, robust to other "
        "jobs on a shared machine (needs --threads 1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random subnets and the visiting order")
    p.add_argument(
        "--out",
        required=True,
        help="profile CSV; an existing one is extended (resume) with the same backend, batch size, precision, "
        "clock, threads, input channels, device name, CPU/GPU model and torch version (and onnxruntime or CUDA "
        "version for those backends) and, for int8, the same quantization of the graphs; other values are "
        "refused (write a new file), while other --repeats, "
        "--rounds or --warmup are allowed and recorded per run",
    )
    p.set_defaults(func=cmd_profile)

    p = command("fit", help="fit a latency predictor on a profile; prints held-out error")
    p.add_argument(
        "profile",
        help="profile CSV made by `nas profile`, or the name of a built-in profile (`nas profiles`, e.g. "
        "nb201-raspi4 or raspi4)",
    )
    p.add_argument(
        "--out", required=True, help="predictor file to write (.json, what nas search --target reads)"
    )
    p.add_argument(
        "--kind",
        default="auto",
        help="auto (default: the best of the others by 4-fold cross-validation, compared on 2,500 random "
        "training configs when there are more, then fitted on all), ridge, gbdt, mlp, lut or ensemble",
    )
    p.add_argument(
        "--metric",
        default="latency_ms",
        help="profile column to predict: latency_ms (median of the repeats, default), latency_p10_ms "
        "(10th percentile), latency_min_ms, or an extra such as energy_mj. On a noisy profile (median CV of "
        "the repeats above 10%%, common on shared or virtualised CPUs) the fit also scores the other of "
        "latency_ms / latency_p10_ms on the same split and the hint says which one this machine measures "
        "stably: it differs between machines",
    )
    p.add_argument(
        "--space",
        help="the module that defines the profile's space, when it is one of your own (e.g. examples.custom_space); "
        "built-in spaces are found from the name the profile records",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.25,
        help="share of the profile's configs held out to score the predictor (default 0.25; 0: none)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split and the fit")
    p.add_argument(
        "--keep-degenerate",
        action="store_true",
        help="also fit the configs the space calls degenerate, which are left out by default (nb201: cells "
        "whose output is disconnected from the input; their latency is that of an empty network)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress on stderr (kinds compared, their cross-validation scores, the choice, a bar)",
    )
    p.set_defaults(func=cmd_fit)

    p = command("search", help="multi-objective search; one Pareto front per --target")
    p.add_argument(
        "--space",
        required=True,
        help="built-in space (nas spaces), or the module path of your own (see nas train)",
    )
    p.add_argument("--preset", default=None, help=f"space preset: {_PRESET_HELP}")
    p.add_argument("--supernet", help="run directory of `nas train` (accuracy objective)")
    p.add_argument("--dataset", help="nb201: cifar10, cifar100 or imagenet16; else the supernet's data")
    p.add_argument(
        "--data-root",
        help="folder of the dataset when it is not bundled (cifar10; default: the supernet's, when searching its "
        "data); recorded beside the store for nas export",
    )
    p.add_argument(
        "--target",
        action="append",
        help="latency target (repeatable): predictor .json, profile .csv (its measured latencies; other configs "
        "get the predictor `nas fit` would fit on it), built-in profile name, or nb201 device",
    )
    p.add_argument("--objective", action="append", help="extra objective: macs, params or model_bytes")
    p.add_argument("--constraint", action="append", help="e.g. 'latency@raspi4<=5ms' (repeatable)")
    p.add_argument("--algorithm", default="linas", help="random, nsga2, agemoea, nsga3, tpe, gp or linas")
    p.add_argument("--budget", type=int, default=250, help="real evaluations, counted exactly (default 250)")
    p.add_argument("--seed", type=int, default=0, help="seed of the searcher (default 0)")
    p.add_argument(
        "--searcher-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument of the searcher (repeatable; VALUE read as JSON when it parses), e.g. "
        "'explore=0.3' or 'predictor=[\"gbdt-wl\",\"sklearn-gbdt\"]' for linas, 'pop_size=32' for nsga2; "
        "a resumed run needs the same options",
    )
    p.add_argument(
        "--batch-size", type=int, help="configs proposed per round (default: the searcher's own; linas: 10)"
    )
    p.add_argument(
        "--backend",
        default="local",
        choices=("local", "ray"),
        help="local: evaluate in this process (default); ray: as Ray Tune trials (a local Ray unless "
        "--ray-address)",
    )
    p.add_argument(
        "--ray-address", help="Ray cluster address (implies --backend ray); 'auto' for the local one"
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=1,
        help="evaluations at once (default 1): threads of this process, each with its own copy of the supernet, "
        "or Ray trials with --backend ray / --ray-address",
    )
    p.add_argument(
        "--device",
        # None, not "auto": an nb201 search tells a --device given (which it ignores, said on stderr) from none
        default=None,
        help="where subnets' accuracy is measured: auto (default: the GPU when CUDA is available, else the CPU), "
        "cpu, cuda or cuda:N; Ray trials resolve auto on the machine they run on; no effect on an nb201 search "
        "(its accuracies come from the benchmark table)",
    )
    p.add_argument("--store", help="sqlite:///path.db, postgresql://..., or a path (default: in memory)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run held in --store to --budget (a larger --budget extends a finished run; the other "
        "options must be the same)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_search)

    p = command("report", help="Pareto plots, hypervolume curves and an HTML page for a search store")
    p.add_argument("store", help="sqlite:///runs/search.db or runs/search.db")
    p.add_argument(
        "--out",
        required=True,
        help="report directory; a new report there removes the plots of the last one that it does not rewrite "
        "(listed in its report_files.json), never other files; a folder holding an index.html or summary.json "
        "that no report wrote is refused",
    )
    p.set_defaults(func=cmd_report)

    p = command(
        "export",
        help="export the most accurate Pareto-optimal subnet within a latency bound",
        description="Export the most accurate Pareto-optimal subnet of a search (within --max-latency on "
        "--target). Its batch-norm statistics are re-estimated on the held-out images the search measured "
        "accuracy on, as the search did, so the exported model is the one whose accuracy the store holds.",
    )
    p.add_argument("store", help="the search store")
    p.add_argument("--target", help="hardware target of the front (default: the run's first)")
    p.add_argument(
        "--max-latency", help="latency bound on --target's front: 4ms, 0.5s or 800us (a bare number is ms)"
    )
    p.add_argument("--supernet", help="supernet run directory (default: the one the search used)")
    p.add_argument(
        "--data-root",
        help="folder of the data batch norm is re-estimated (and onnx-int8 calibrated) on, for cifar10; default: "
        "the one the search recorded, else the supernet's",
    )
    p.add_argument(
        "--format",
        action="append",
        default=None,
        choices=("safetensors", "torchscript", "onnx", "onnx-int8"),
        help="repeatable; default safetensors + onnx (model.safetensors and manifest.json are always written: "
        "nas.export.load_exported reads them). onnx-int8: QDQ int8 for onnxruntime, calibrated on "
        f"{INT8_IMAGES} training images of the supernet's data and checked on as many held-out ones (or all, "
        "when fewer)",
    )
    verify = p.add_mutually_exclusive_group()
    verify.add_argument(
        "--tolerance",
        type=float,
        metavar="X",
        help="the TorchScript and ONNX files are run on sample inputs and must give the model's outputs within "
        "X times their largest magnitude (+1e-6), or nothing is written (default 1e-4; correct exports "
        "measure about 1e-6; for 8-bit activations the ONNX file is compared with rounding removed, since one "
        "float rounding tie can move the logits by a few percent). The int8 ONNX is approximate by design: "
        "its agreement is reported, not checked. The manifest records the differences and the tolerance",
    )
    verify.add_argument(
        "--no-verify",
        action="store_true",
        help="write the files even when they differ from the model (the differences are still recorded)",
    )
    p.add_argument(
        "--measure",
        action="store_true",
        help="after exporting, time the exported subnet on this machine with the settings the target's "
        "latencies were measured with (backend, precision, batch size, threads, clock, input channels, repeats: "
        "from its profile, or from the profile a `nas fit` predictor records), print the measured against the "
        "predicted latency and record both in manifest.json (measured_latency). Refused before exporting when "
        "the target records no such settings (a built-in table, a predictor without provenance) or its backend "
        "cannot run here. On another machine than the target's the numbers are this machine's, and it says so. "
        "A measurement above --max-latency is a warning: the export stays the subnet the prediction chose and "
        "the exit status is 0",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_export)
    return parser


#: How to continue each resumable command after Ctrl-C (nas profile has no --resume: it extends its --out file).
RESUME_HINTS = {
    "train": "; rerun with --resume to continue",
    "search": "; rerun with --resume to continue",
    "profile": "; rerun the same command to measure the configs still missing (the profile is extended)",
}


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (writing to it raises ``BrokenPipeError``)."""
    import select

    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):  # closed or unusable otherwise: not a reader that went away
        return False
    # Nothing was left to flush (the failed write dropped it): ask the pipe. A pipe's write end whose reader
    # closed reports POLLERR; a terminal, a file or a live pipe does not.
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor (captured output), or no poll()
        return False


def _report_error(args: argparse.Namespace, exc: BaseException) -> int:
    """Bad input as one line on stderr, exit status 2 (called while handling ``exc``; ``NAS_DEBUG=1`` re-raises
    it for the traceback)."""
    if os.environ.get("NAS_DEBUG"):
        raise exc
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    print(f"nas {args.command}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nas`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "format", "unset") is None:
        from nas.export import DEFAULT_FORMATS  # one default for the command and the Python API

        args.format = list(DEFAULT_FORMATS)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError as exc:
        if not _stdout_closed():  # a connection of the command's own (a Ray or database socket): an error
            return _report_error(args, exc)
        # The reader went away (`nas profiles | head`): not bad input, so no "error: [Errno 32]" line (it is a
        # ConnectionError, caught below otherwise). Python would complain again flushing stdout at exit.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command a pipe cut short
    except (
        CliError,
        ValueError,
        FileNotFoundError,
        FileExistsError,
        IsADirectoryError,
        NotADirectoryError,
        KeyError,
        ConnectionError,
        NotImplementedError,
    ) as exc:
        # Bad input (InvalidConfigError, StoreMismatchError, ProfileFormatError... are ValueErrors; a supernet
        # of the user's that lacks a method the command needs raises NotImplementedError naming it; an --out
        # that is a file where a folder belongs, or the reverse, raises one of the path errors): one line,
        # no traceback; NAS_DEBUG=1 shows where it came from.
        return _report_error(args, exc)
    except KeyboardInterrupt:
        print(f"nas {args.command}: interrupted{RESUME_HINTS.get(args.command, '')}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
