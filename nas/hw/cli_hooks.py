"""What ``nas profile`` and ``nas fit`` do, as plain functions the CLI (and scripts) call.

* :func:`run_profile` samples random subnets, measures them with :func:`nas.hw.measure.profile` and saves the
  profile atomically. It resumes: when ``out_path`` already holds a profile of the same space (and backend,
  batch size, precision), only the configs it lacks are measured and the two tables are merged.
* :func:`run_fit` fits a latency predictor on a profile, prints held-out metrics next to the profile's noise
  floor (median CV of the repeats) and saves the predictor as JSON.

``nas.hw`` never imports ``search_spaces``: the space of a profile comes from the ``space`` argument, from a
``resolve_space(name)`` callable the CLI passes in, or from the plain dimensions recorded in the profile's
metadata by :func:`nas.hw.measure.profile`.

Example:
    >>> import tempfile, os
    >>> from torch import nn
    >>> from nas import Choice, SearchSpace
    >>> space = SearchSpace("toy", [Choice("w", (2, 4, 8))])
    >>> class Toy:  # the supernet protocol: space, extract, input_shape
    ...     space = space
    ...     def extract(self, cfg): return nn.Conv2d(3, cfg["w"], 3)
    ...     def input_shape(self, cfg, batch_size=1): return (batch_size, 3, 8, 8)
    >>> out = os.path.join(tempfile.mkdtemp(), "toy.csv")
    >>> p = run_profile(Toy(), "torch", 3, out, repeats=2, rounds=1, progress=False, verbose=False)
    >>> len(p)
    3
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.hw.profiles import Profile
from nas.space import Config, InvalidConfigError

__all__ = [
    "FitRows",
    "Fitted",
    "describe_provenance",
    "fit_profile",
    "fit_rows",
    "resolve_profile_space",
    "run_fit",
    "run_profile",
]

# Settings that change what a latency means: a profile measured with one of them is only extended with the same
# value (the thread count changes a CPU latency as much as the backend does: 1 vs 2 threads is up to 2x; 1- and
# 3-channel inputs are different networks). Each maps to the option that sets it.
_RESUME_KEYS = {
    "backend": "--backend",
    "batch_size": "--batch-size",
    "precision": "--precision",
    "clock": "--clock",
    "threads": "--threads",
    "in_channels": "--in-channels",
    "device": "--device-name",
}
# The machine itself: latencies of another CPU or GPU model never share a profile (no option changes it).
_MACHINE_KEYS = ("cpu", "gpu")
# The libraries whose version a backend's latencies depend on: another version may run other kernels (oneDNN,
# MLAS, cuDNN). onnxruntime runs the graph torch's exporter writes, and another torch may write another graph
# (other op decompositions, fused or not), so both are checked for it.
_BACKEND_LIBRARIES = {"torch": ("torch",), "cuda": ("torch", "cuda"), "onnxruntime": ("onnxruntime", "torch")}
# Settings that only change the measurement effort; extending with other values is allowed and each run's
# values are recorded in metadata["runs"] (and the per-row ``repeats`` column).
_EFFORT_KEYS = ("repeats", "rounds", "warmup")


def _check_extension(
    path: Path,
    old: Profile,
    net: Any,
    backend: str,
    batch_size: int,
    precision: str,
    clock: str,
    threads: int | None,
    device_name: str | None,
    verbose: bool,
    settings: dict[str, Any],
) -> None:
    """Refuse to extend ``old`` with latencies that mean something else; say when only the effort differs.

    Compared with what ``old.metadata`` records (a key it lacks is not checked): the settings of
    ``_RESUME_KEYS`` (the device name only when ``device_name`` is given; without it the file's name is kept),
    the CPU and GPU model of this machine, the versions of the libraries ``backend`` runs on
    (``_BACKEND_LIBRARIES``) and the input channels of ``net``.
    """
    from nas.hw.measure import device_metadata, input_channels, memory_format_for

    here = device_metadata(backend, threads)  # threads=None: torch's default here, as the run will record it
    wanted: dict[str, Any] = {
        "backend": backend,
        "batch_size": int(batch_size),
        "precision": precision,
        "clock": clock,
        "threads": here["threads"],
        "device": device_name,
    }
    if hasattr(net, "input_shape"):
        cfg = net.space.canonical(net.space.max())
        wanted["in_channels"] = input_channels(tuple(net.input_shape(cfg, int(batch_size))))
    meta = old.metadata
    where = str(path)
    for key, flag in _RESUME_KEYS.items():
        if key in meta and wanted.get(key) is not None and meta[key] != wanted[key]:
            raise ValueError(
                f"{where!r} was measured with {key}={meta[key]!r} but this run uses {key}={wanted[key]!r}; "
                f"latencies of different settings must not share a profile: extend it with {key}={meta[key]!r} "
                f"({flag} {meta[key]}) or write to another file (--out)"
            )
    # Profiles from before the layout was recorded measured conv nets channels-last on every backend.
    layout, measured_in = memory_format_for(backend), meta.get("memory_format", "channels_last")
    if "backend" in meta and layout != measured_in:
        raise ValueError(
            f"{where!r} was measured in the {measured_in} layout, and {backend} now measures in the {layout} layout "
            "(the other kernels run): write to another file (--out)"
        )
    for key in _MACHINE_KEYS:
        if meta.get(key) is not None and here.get(key) is not None and meta[key] != here[key]:
            raise ValueError(
                f"{where!r} was measured on {key} {meta[key]!r} but this machine's {key} is {here[key]!r}; a "
                "profile holds one machine's latencies: write this one's to another file (--out)"
            )
    _check_library_versions(where, meta, backend, here.get("versions", {}))
    if precision == "int8" and meta.get("precision") == "int8":
        _check_int8_choice(where, meta, net, int(batch_size))
    if "in_channels" not in meta and wanted.get("in_channels") is not None and verbose:
        print(
            f"note: {path} does not record its input channels (measured before nas recorded them); this run "
            f"measures {wanted['in_channels']}-channel inputs"
        )
    differ = [k for k in _EFFORT_KEYS if k in meta and meta[k] != _effective(settings, k)]
    if differ and verbose:
        print(
            "note: this run measures with "
            + ", ".join(f"{k}={_effective(settings, k)} (the file: {meta[k]})" for k in differ)
            + "; allowed (the effort, not the meaning, of a latency), recorded per run in the metadata"
        )


def _check_int8_choice(where: str, meta: dict[str, Any], net: Any, batch_size: int) -> None:
    """Refuse to extend an int8 profile whose graphs were quantized otherwise than this net's would be now.

    ``export_onnx_int8`` quantizes only the weight ops of a graph with attention and every op of the others
    (its ``auto``); int8 profiles measured before nas recorded the choice quantized every op type (``all``).
    """
    if not (hasattr(net, "extract") and hasattr(net, "input_shape")):
        return  # a plain builder: no config to ask; the measured profile records the choice
    import torch

    from nas.export import int8_choice

    cfg = net.space.canonical(net.space.max())
    now = int8_choice(net.extract(cfg).eval(), torch.randn(tuple(net.input_shape(cfg, batch_size))))
    before = meta.get("int8_quantize", "all")
    if before != now:
        how = "" if "int8_quantize" in meta else " (every op type: the profile predates nas recording it)"
        raise ValueError(
            f"{where!r} holds int8 latencies of graphs quantized as {before!r}{how}, but nas now quantizes this "
            f"space's graphs as {now!r} (weight ops only for a graph with attention); latencies of graphs "
            "quantized differently must not share a profile: write to another file (--out)"
        )


def _check_library_versions(where: str, meta: dict[str, Any], backend: str, here: dict[str, Any]) -> None:
    """Refuse to extend a profile measured with another version of a library ``backend`` runs on.

    A profile that does not record a library's version (measured before nas recorded it) is not checked for it.
    """
    was_recorded = meta.get("versions")
    if not isinstance(was_recorded, dict):
        return
    for lib in _BACKEND_LIBRARIES.get(backend, ()):
        was, now = was_recorded.get(lib), here.get(lib)
        if was is not None and now is not None and str(was) != str(now):
            raise ValueError(
                f"{where!r} was measured with {lib} {was} but this machine has {lib} {now}; latencies of "
                f"different {lib} versions are not comparable (other kernels): write this run's to a new "
                f"profile file (--out), or measure with {lib} {was}"
            )


def _effective(settings: dict[str, Any], key: str) -> int:
    """The value of a measurement-effort setting as :func:`nas.hw.measure.profile` records it (repeats are
    rounded up to a multiple of rounds)."""
    if key == "repeats":
        return math.ceil(settings["repeats"] / settings["rounds"]) * settings["rounds"]
    return int(settings[key])


def _sample_configs(space: Any, n: int, seed: int, exclude: set[str]) -> list[Config]:
    """``n`` distinct random configs of ``space`` not in ``exclude`` (fewer if the space is that small)."""
    rng = np.random.default_rng(seed)
    out: list[Config] = []
    keys = set(exclude)
    tries = 0
    # Sampling with a fixed seed keeps a resumed run's new configs the same as an uninterrupted run's.
    while len(out) < n and tries < 50 * max(n, 1) + 1000:
        tries += 1
        cfg = space.canonical(space.sample(rng))
        if cfg.key not in keys:
            keys.add(cfg.key)
            out.append(cfg)
    return out


def run_profile(
    net: Any,
    backend: str = "torch",
    samples: int = 300,
    out_path: str | Path = "profile.csv",
    batch_size: int = 1,
    threads: int | None = None,
    seed: int = 0,
    *,
    warmup: int = 3,
    repeats: int = 30,
    rounds: int = 3,
    precision: str = "fp32",
    chunk: int = 50,
    max_cached: int = 64,
    progress: bool = True,
    verbose: bool = True,
    device_name: str | None = None,
    clock: str = "wall",
) -> Profile:
    """Measure ``samples`` random subnets of ``net`` into ``out_path``, resuming a partial file.

    The target set is the first ``samples`` distinct configs drawn with ``seed``. Configs already in the file are
    kept; the missing ones are measured in chunks of ``chunk`` and the file is re-saved atomically after each
    chunk, so an interrupted run loses at most one chunk. A file measured with a different backend, batch size,
    precision, clock, thread count, torch / onnxruntime version (see ``_check_extension``), or for another
    space, is refused rather than mixed.

    Returns the full profile as saved.
    """
    space = net.space
    from nas.hw.measure import check_settings, profile

    settings = {
        "precision": precision,
        "clock": clock,
        "threads": threads,
        "batch_size": batch_size,
        "repeats": repeats,
        "rounds": rounds,
        "warmup": warmup,
        "max_cached": max_cached,
    }
    # Bad settings fail before the output file is read or anything is printed.
    check_settings(backend, **settings)
    path = Path(out_path)
    if not path.name.endswith(
        (".csv", ".csv.gz")
    ):  # Profile.save would refuse it after the first chunk's work
        raise ValueError(f"profile path {str(path)!r} must end in .csv or .csv.gz")
    if not isinstance(samples, int | np.integer) or samples < 0 or (samples == 0 and not path.exists()):
        raise ValueError(f"samples must be >= 1 to create {str(path)!r}, got {samples!r}")
    old: Profile | None = None
    if path.exists():
        old = Profile.load(path)
        if old.space != space.name:
            raise ValueError(
                f"{str(path)!r} holds a profile of space {old.space!r}, not {space.name!r}; "
                "choose another --out or the matching space"
            )
        _check_extension(
            path, old, net, backend, batch_size, precision, clock, threads, device_name, verbose, settings
        )
    targets = _sample_configs(space, samples, seed, exclude=set())
    have = {c.key for c in old.configs} if old is not None else set()
    missing = [c for c in targets if c.key not in have]
    if verbose:
        print(
            f"{len(targets) - len(missing)} of {len(targets)} configs already in {path}; measuring {len(missing)}"
        )
    current = old
    for start in range(0, len(missing), max(1, chunk)):
        part = missing[start : start + max(1, chunk)]
        new = profile(net, part, backend=backend, seed=seed + start, progress=progress, **settings)
        if device_name:
            new.metadata["device"] = device_name
        current = new if current is None else _merge(current, new)
        current.save(path)
        if verbose:
            print(f"saved {len(current)} configs to {path}")
    assert current is not None  # samples >= 1, or an existing file
    return current


# What metadata["runs"] records of each measurement run that went into a profile.
_RUN_KEYS = (
    "measured_at",
    "duration_s",
    "threads",
    "median_cv",
    *_EFFORT_KEYS,
    "device",
    "cpu",
    "gpu",
    "versions",
)


def _merge(old: Profile, new: Profile) -> Profile:
    """Rows of ``old`` then rows of ``new`` (new configs only); metadata records both measurement runs.

    ``metadata["runs"]`` lists each run's date, duration, settings (``_RUN_KEYS``) and config count. The
    top-level ``repeats``, ``rounds`` and ``warmup`` stay only while every run used the same value; otherwise
    they are removed and ``runs`` (and the per-row ``repeats`` column) say what each row got. The extra columns
    are those of either run, NaN in the rows of a run that did not record one.
    """
    have = {c.key for c in old.configs}
    rows = [i for i, c in enumerate(new.configs) if c.key not in have]
    add = new.subset(rows)
    meta = dict(old.metadata)
    runs = list(meta.get("runs", []))
    if not runs:
        runs.append({k: old.metadata.get(k) for k in _RUN_KEYS if k in old.metadata})
        runs[-1]["configs"] = len(old)
    runs.append({k: new.metadata.get(k) for k in _RUN_KEYS if k in new.metadata})
    runs[-1]["configs"] = len(add)
    meta["runs"] = runs
    for key in _EFFORT_KEYS:
        if key in meta and any(r.get(key, meta[key]) != meta[key] for r in runs):
            del meta[key]
    cv = np.concatenate([old.latency_cv, add.latency_cv])
    if np.isfinite(cv).any():
        meta["median_cv"] = float(np.nanmedian(cv))
    # Every column of either run, missing values NaN: a profile measured before nas recorded the fast tail
    # (latency_min_ms, latency_p10_ms) keeps the new rows' values instead of dropping them.
    missing_old, missing_add = np.full(len(old), np.nan), np.full(len(add), np.nan)
    extras = {
        k: np.concatenate([old.extras.get(k, missing_old), add.extras.get(k, missing_add)])
        for k in [*old.extras, *(k for k in add.extras if k not in old.extras)]
    }
    return Profile(
        old.space,
        old.configs + add.configs,
        np.concatenate([old.latency_ms, add.latency_ms]),
        np.concatenate([old.latency_iqr_ms, add.latency_iqr_ms]),
        cv,
        np.concatenate([old.repeats, add.repeats]),
        extras,
        meta,
    )


def resolve_profile_space(profile: Profile, resolve_space: Callable[[str], Any] | None = None) -> Any:
    """The search space of a profile: ``resolve_space(profile.space)`` or (when that is not given or returns
    ``None``) the dimensions recorded in its metadata.

    Raises ``ValueError`` saying what to pass when neither is available.
    """
    space = resolve_space(profile.space) if resolve_space is not None else None
    if space is not None:
        if getattr(space, "name", None) != profile.space:
            raise ValueError(
                f"resolve_space({profile.space!r}) returned space {getattr(space, 'name', space)!r}; "
                "it must return the space the profile was measured in"
            )
        return space
    record = profile.metadata.get("space_dims")
    if record is None:
        raise ValueError(
            f"profile of space {profile.space!r} does not record its dimensions (only profiles measured by "
            "nas.hw.measure.profile do); name the module that defines the space (`nas fit --space MODULE`), or "
            "in Python pass run_fit(space=<SearchSpace>) or resolve_space=<name -> SearchSpace>"
        )
    from nas.hw.measure import space_from_record

    return space_from_record(profile.space, record)


# Above this median CV of the repeats, the median of one config's repeats moves by about that much between
# runs, so a median-latency predictor cannot be checked to within 10% (profile_mobilenetv3 in
# benchmarks/RESULTS.md).
NOISY_PROFILE_CV = 0.10
# Fewer training configs than this rarely pin down a predictor of a supernet's dozens of features.
FEW_TRAINING_CONFIGS = 100
# The two latency columns a noisy profile's fit is compared on, each mapped to the other.
LATENCY_COLUMNS = {"latency_ms": "latency_p10_ms", "latency_p10_ms": "latency_ms"}
# How much better (held-out within 10%) the other column must fit before the hint says to switch, and how many
# held-out configs that comparison needs (with 8, one config moves the score by 0.125).
COLUMN_SWITCH_MARGIN = 0.05
FEW_TEST_CONFIGS = 30


def _fit_hints(
    median_cv: float,
    metric: str,
    n_train: int,
    compared: dict[str, float] | None = None,
    n_test: int = 100,
) -> list[str]:
    """Advice printed after a fit when the profile is too noisy or too small to fit well.

    ``compared`` maps latency columns (the fitted ``metric`` and its alternative, median or 10th percentile) to
    the held-out within-10% of the same predictor kind fitted on the same split: which column is the stable
    one depends on the machine (on one shared VM the fast tail was, on another the median), so the advice
    follows the numbers instead of a rule. With fewer than ``FEW_TEST_CONFIGS`` held-out configs the two
    scores differ by chance too often to pick a column, and the hint says so.

    Example:
        >>> _fit_hints(0.15, "latency_ms", 30)[0].startswith("the repeats vary by 15%")
        True
        >>> hint = _fit_hints(0.15, "latency_ms", 300, {"latency_ms": 0.64, "latency_p10_ms": 0.99})[0]
        >>> "refit with --metric latency_p10_ms" in hint
        True
        >>> _fit_hints(0.03, "latency_ms", 300)
        []
    """
    hints = []
    if metric in LATENCY_COLUMNS and median_cv > NOISY_PROFILE_CV:
        quiet = (
            "measure on a quiet machine, or with `nas profile --clock thread_cpu --threads 1`, which keeps other "
            "jobs out of the numbers"
        )
        other = LATENCY_COLUMNS[metric]
        if compared and metric in compared and other in compared:
            scores = f"held-out within 10%: {metric} {compared[metric]:.2f}, {other} {compared[other]:.2f}"
            if n_test < FEW_TEST_CONFIGS:
                advice = f"too few held-out configs ({n_test}) to choose between them"
            elif compared[other] >= compared[metric] + COLUMN_SWITCH_MARGIN:
                advice = f"refit with --metric {other}"
            else:
                advice = f"{metric} is the better column here"
            hints.append(
                f"the repeats vary by {median_cv:.0%} (median CV), so single latencies are partly noise; "
                f"{scores} (same kind, same split): {advice}; for a cleaner profile {quiet}"
            )
        else:
            hints.append(
                f"the repeats vary by {median_cv:.0%} (median CV), so single latencies are partly noise; "
                f"compare a fit of --metric {other}, and for a cleaner profile {quiet}"
            )
    if n_train < FEW_TRAINING_CONFIGS:
        hints.append(
            f"only {n_train} training configs; measure more (`nas profile --samples 300 --out SAME.csv` adds "
            "to the file) for a predictor that generalises"
        )
    return hints


def _compare_latency_columns(
    prof: Profile,
    space: Any,
    X: np.ndarray,
    metric: str,
    score: float,
    train: np.ndarray,
    test: np.ndarray,
    kind: str,
    seed: int,
) -> dict[str, float]:
    """``{metric: score, other: s}``: held-out within-10% of ``kind`` fitted on the other latency column.

    ``X``, ``train`` and ``test`` are :func:`run_fit`'s: features of the rows where ``metric`` is known (as
    :meth:`Profile.to_arrays` keeps them) and the split over those rows; rows where the other column is missing
    are left out of its fit and test. Returns ``{}`` when the profile has no other column or too few rows where
    it is known.
    """
    import predictors

    other = LATENCY_COLUMNS[metric]
    try:
        known, values = np.isfinite(prof.metric(metric)), prof.metric(other)
    except KeyError:
        return {}
    values = values[known]
    tr, te = train[np.isfinite(values[train])], test[np.isfinite(values[test])]
    if len(tr) < 4 or len(te) < 1:
        return {}
    pred = predictors.fit(
        X[tr], values[tr], kind=kind, seed=seed, feature_names=space.feature_names, space=space
    )
    return {metric: float(score), other: float(predictors.evaluate(pred, X[te], values[te])["within_10pct"])}


# Profile metadata copied into a predictor's provenance: what a latency number depends on, and where it came from.
_PROVENANCE_DEVICE_KEYS = (
    "device",
    "hardware",
    "method",
    "backend",
    "cpu",
    "gpu",
    "batch_size",
    "precision",
    "threads",
    "clock",
    "in_channels",
    "dataset",
    # the measurement effort, so that `nas export --measure` repeats a predictor's profile as it was measured
    "warmup",
    "repeats",
    "rounds",
    "int8_quantize",
    "measured_at",
)


def describe_provenance(provenance: dict[str, Any]) -> str:
    """One line saying what a predictor was fitted on (``""`` for a predictor without provenance).

    Example:
        >>> describe_provenance({"metric": "latency_ms", "profile_name": "raspi4", "space": "nb201",
        ...     "device": {"device": "raspi4", "backend": "TensorFlow Lite", "batch_size": 1},
        ...     "rows_fitted": 15284, "rows": 15625, "fitted_at": "2025-01-01T00:00:00+00:00"})
        'latency_ms of raspi4, space nb201, device raspi4 (TensorFlow Lite, batch size 1), 15,284 of 15,625 rows, fitted 2025-01-01T00:00:00+00:00'
    """
    if not provenance:
        return ""
    dev = provenance.get("device") or {}
    parts = [
        f"{provenance.get('metric')} of {provenance.get('profile_name') or provenance.get('profile')}",
        f"space {provenance.get('space')}",
    ]
    details = [str(dev[k]) for k in ("hardware", "gpu", "cpu", "backend") if dev.get(k)]
    details += [
        f"{k.replace('_', ' ')} {dev[k]}"
        for k in ("batch_size", "precision", "threads", "in_channels")
        if k in dev
    ]
    if dev.get("device"):
        parts.append(f"device {dev['device']}" + (f" ({', '.join(details)})" if details else ""))
    if "rows_fitted" in provenance and "rows" in provenance:
        parts.append(f"{provenance['rows_fitted']:,} of {provenance['rows']:,} rows")
    if provenance.get("fitted_at"):
        parts.append(f"fitted {provenance['fitted_at']}")
    return ", ".join(parts)


class _FitProgress:
    """``predictors.fit``'s progress callback as a rich bar on stderr, with its news printed above the bar."""

    def __init__(self, enabled: bool):
        self._bar: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold]nas fit"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("models"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task("fit", total=None)

    def __enter__(self) -> _FitProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(f"nas fit: {text}", highlight=False, markup=False, soft_wrap=True)

    def __call__(self, done: int, total: int, message: str | None) -> None:
        if self._bar is None:
            return
        if message:
            self.message(message)
        self._bar.update(self._task, completed=done, total=total or None)

    @property
    def callback(self) -> Any:
        """What ``predictors.fit(progress=...)`` takes (``None`` when disabled: no work per model)."""
        return self if self._bar is not None else None


@dataclass(frozen=True)
class FitRows:
    """The rows of a profile a predictor is fitted on (see :func:`fit_rows`).

    ``profile`` holds the kept rows and ``X``, ``y`` their features and ``metric`` values (rows where the metric
    is missing dropped, as :meth:`Profile.to_arrays` does); ``rows`` counts the profile's rows before any were
    left out, and ``left_out`` the degenerate configs left out, by reason.
    """

    profile: Profile
    X: np.ndarray
    y: np.ndarray
    metric: str
    rows: int
    left_out: dict[str, int]


def fit_rows(
    prof: Profile,
    space: Any,
    *,
    metric: str = "latency_ms",
    keep_degenerate: bool = False,
    where: str = "the profile",
) -> FitRows:
    """The rows of ``prof`` that ``nas fit`` (and ``nas search --target PROFILE.csv``) fit a predictor on.

    Rows of configs the space calls degenerate (``space.degenerate_reason(cfg)``: NAS-Bench-201's disconnected
    cells, whose latency is that of an empty network) are left out unless ``keep_degenerate``. Raises
    ``ValueError`` naming ``where`` when a config does not fit the space or fewer than 4 rows are left: checked
    before any fitting, so a caller that fits later fails now. ``where`` names the profile in those errors.
    """
    left_out: dict[str, int] = {}
    kept = prof
    reason_of = getattr(space, "degenerate_reason", None)
    if reason_of is not None and not keep_degenerate:
        reasons = [reason_of(c) for c in prof.configs]
        for r in reasons:
            if r is not None:
                left_out[r] = left_out.get(r, 0) + 1
        if left_out:
            kept = prof.subset([i for i, r in enumerate(reasons) if r is None])
    try:
        X, y = kept.to_arrays(space, metric=metric)
    except InvalidConfigError as exc:
        raise InvalidConfigError(f"{where}: {exc}") from None
    if len(y) < 4:
        raise ValueError(f"{where} has {len(y)} usable rows; a predictor needs at least 4")
    return FitRows(kept, X, y, metric, len(prof), left_out)


@dataclass(frozen=True)
class Fitted:
    """A predictor fitted by :func:`fit_profile`, with its split and held-out metrics (``{}`` when none)."""

    predictor: Any
    train: np.ndarray
    test: np.ndarray
    metrics: dict[str, float]


def fit_profile(
    rows: FitRows,
    space: Any,
    profile_path: str | Path,
    *,
    kind: str = "auto",
    test_fraction: float = 0.25,
    seed: int = 0,
    profile_name: str | None = None,
    progress: Callable[[int, int, str | None], None] | None = None,
) -> Fitted:
    """Fit a ``kind`` predictor on ``rows`` of the profile file ``profile_path``, as ``nas fit`` does.

    A random ``test_fraction`` of the rows (at least one, seeded; none for 0) is held out and scored; the
    predictor is the one fitted on the other rows, so the metrics describe exactly it. It records its provenance
    (``Predictor.provenance``): the profile (and ``profile_name``, a built-in profile's name), its checksum, the
    column, the device metadata, the space, the row counts, the held-out metrics and the date.
    """
    import datetime
    import hashlib

    import predictors

    n = len(rows.y)
    perm = np.random.default_rng(seed).permutation(n)
    n_test = 0 if test_fraction == 0 else max(1, round(n * float(test_fraction)))
    n_test = min(n_test, n - 2)
    test, train = perm[:n_test], perm[n_test:]
    pred = predictors.fit(
        rows.X[train],
        rows.y[train],
        kind=kind,
        seed=seed,
        feature_names=space.feature_names,
        space=space,
        progress=progress,
    )
    metrics: dict[str, float] = predictors.evaluate(pred, rows.X[test], rows.y[test]) if n_test else {}
    meta = rows.profile.metadata
    pred.provenance = {
        "profile": str(profile_path),
        **({"profile_name": profile_name} if profile_name else {}),
        "profile_sha256": hashlib.sha256(Path(profile_path).read_bytes()).hexdigest(),
        "metric": rows.metric,
        "space": rows.profile.space,
        "device": {k: meta[k] for k in _PROVENANCE_DEVICE_KEYS if k in meta},
        "rows": rows.rows,
        "left_out": rows.left_out,
        "rows_fitted": n,
        "train": len(train),
        "test": int(n_test),
        "seed": int(seed),
        # JSON has no NaN: Kendall's tau of a single held-out config is undefined, recorded as null. A count
        # (``n``) stays an int: float() would save it as 100.0.
        "held_out": {
            k: (v if isinstance(v, int) else float(v) if math.isfinite(v) else None)
            for k, v in metrics.items()
        },
        "fitted_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return Fitted(pred, train, test, metrics)


def run_fit(
    profile_path: str | Path,
    out_path: str | Path,
    kind: str = "auto",
    test_fraction: float = 0.25,
    seed: int = 0,
    *,
    space: Any = None,
    resolve_space: Callable[[str], Any] | None = None,
    metric: str = "latency_ms",
    verbose: bool = True,
    keep_degenerate: bool = False,
    progress: bool = False,
    profile_name: str | None = None,
) -> dict[str, Any]:
    """Fit a ``kind`` predictor on a profile, report held-out metrics and the noise floor, save the predictor.

    The rows are those of :func:`fit_rows` (degenerate configs left out unless ``keep_degenerate``; how many, by
    reason, is printed and returned as ``"left_out"``) and the fit, split and provenance those of
    :func:`fit_profile`: the predictor saved to ``out_path`` is the one fitted on the rows not held out, so the
    printed metrics describe exactly that file. ``metric`` picks the column to predict (``latency_ms`` =
    median; ``latency_p10_ms`` for the fast tail). ``progress`` shows the fit's progress (kinds compared, their
    scores, the choice) as a bar on stderr.

    Returns ``{"kind", "train", "test", "metrics": {...}, "noise": {"median_cv", "median_iqr_rel"}, "out",
    "left_out", "provenance"}``, plus ``"compared"`` (see :func:`_compare_latency_columns`) when the profile is
    noisy (median CV above ``NOISY_PROFILE_CV``) and a latency column was fitted: the other column's fit, so the
    hint can say which one this machine measures stably.
    """
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    import predictors

    if kind not in predictors.KINDS:  # before the profile is read and a progress bar drawn
        raise ValueError(f"unknown predictor kind {kind!r}; use one of {list(predictors.KINDS)}")
    prof = Profile.load(profile_path)  # ProfileFormatError names the file and the fault
    if space is None:
        space = resolve_profile_space(prof, resolve_space)
    where = repr(str(profile_path))
    rows = fit_rows(prof, space, metric=metric, keep_degenerate=keep_degenerate, where=where)
    left_out, prof = rows.left_out, rows.profile
    if verbose and left_out:
        reasons_text = ", ".join(f"{k} ({v:,})" for k, v in left_out.items())
        print(
            f"left out {sum(left_out.values()):,} of {rows.rows:,} configs the space calls degenerate: "
            f"{reasons_text}; --keep-degenerate fits them too"
        )
    with _FitProgress(progress) as bar:
        fitted = fit_profile(
            rows,
            space,
            profile_path,
            kind=kind,
            test_fraction=test_fraction,
            seed=seed,
            profile_name=profile_name,
            progress=bar.callback,
        )
        pred, metrics, train, n_test = fitted.predictor, fitted.metrics, fitted.train, len(fitted.test)
        cv = prof.latency_cv[np.isfinite(prof.latency_cv)]
        rel_iqr = prof.latency_iqr_ms / prof.latency_ms
        rel_iqr = rel_iqr[np.isfinite(rel_iqr)]
        noise = {
            "median_cv": float(np.median(cv)) if cv.size else math.nan,
            "median_iqr_rel": float(np.median(rel_iqr)) if rel_iqr.size else math.nan,
        }
        result: dict[str, Any] = {
            "kind": getattr(pred, "kind", kind),
            "train": len(train),
            "test": int(n_test),
            "metrics": metrics,
            "noise": noise,
            "out": str(Path(out_path)),
            "left_out": left_out,
        }
        if n_test and metric in LATENCY_COLUMNS and noise["median_cv"] > NOISY_PROFILE_CV:
            # A noisy profile: which latency column is predictable depends on the machine, so measure both.
            bar.message(f"fitting {result['kind']} on {LATENCY_COLUMNS[metric]} too, to compare the columns")
            result["compared"] = _compare_latency_columns(
                prof, space, rows.X, metric, metrics["within_10pct"], train, fitted.test, result["kind"], seed
            )
    result["provenance"] = pred.provenance
    out = Path(out_path)
    pred.save(out)
    if verbose:
        print(f"fitted {result['kind']} on {len(train)} configs of {prof.space!r}; held out {n_test}")
        print(f"  fitted on: {describe_provenance(pred.provenance)}")
        for k, v in metrics.items():
            print(f"  {k:>14}: {v:.4g}" if math.isfinite(v) else f"  {k:>14}: n/a ({n_test} held-out config)")
        if math.isnan(noise["median_cv"]):
            print("  noise floor: not reported by this profile")
        else:
            print(
                f"  noise floor: median CV of repeats {noise['median_cv']:.2%}, "
                f"median IQR/median {noise['median_iqr_rel']:.2%}"
            )
        hints = _fit_hints(noise["median_cv"], metric, len(train), result.get("compared"), n_test)
        for line in hints:  # NaN CV: no noise hint
            print(f"  hint: {line}")
        print(f"saved predictor to {out}")
    return result
