"""On-device latency measurement of static subnets into a :class:`nas.hw.profiles.Profile`.

:func:`profile` extracts each subnet as a plain model (eval mode, ``torch.inference_mode``; conv nets channels-last
on the CPU backends, NCHW on ``cuda``: :func:`memory_format_for`) and
times it with one of three backends:

* ``torch``: eager PyTorch on the CPU, ``time.perf_counter_ns`` around each forward call (or, with
  ``clock="thread_cpu"``, the CPU time of the calling thread: see below);
* ``onnxruntime``: the exported ONNX model (fp32, or int8 QDQ through :func:`nas.export.export_onnx_int8`) in a
  CPU ``InferenceSession``;
* ``cuda``: eager PyTorch on the GPU, timed with ``torch.cuda.Event`` pairs.

Latency drifts (thermal state, frequency scaling, other processes), so measurements are *interleaved*: every
config is visited once per round, rounds are shuffled independently, and each visit runs a short warm-up and a
few timed repeats. Drift then spreads over all configs as noise instead of biasing the configs measured late.
Thread counts are fixed for the whole run (``torch.set_num_threads`` / ``intra_op_num_threads``) and restored
afterwards.

On a machine shared with other jobs, wall-clock time includes the time the OS gave the core to someone else, and
the measured latency follows the load average instead of the network. ``clock="thread_cpu"`` (single-threaded
CPU backends only) times each call with ``time.thread_time_ns``: the CPU time this thread itself consumed, which
excludes preemption (cache and memory-bandwidth interference from neighbours still shows). It is the compute
cost of the network on this core, not its latency on an idle device; metadata records which clock was used.

At most ``max_cached`` built models are kept alive at once, so memory stays bounded for any number
of configs (models evicted from the cache are rebuilt on their next visit).

Example:
    >>> import torch
    >>> from torch import nn
    >>> def build(cfg):
    ...     return nn.Sequential(nn.Conv2d(3, cfg["width"], 3), nn.ReLU())
    >>> p = profile(build, [{"width": 4}, {"width": 8}], input_shape=(3, 16, 16), space="toy",
    ...             warmup=1, repeats=4, rounds=2, progress=False)
    >>> len(p), int(p.repeats[0]), p.metadata["backend"]
    (2, 4, 'torch')
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import platform
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.hw.profiles import Profile
from nas.space import Config

__all__ = [
    "BACKENDS",
    "CLOCKS",
    "PRECISIONS",
    "BackendUnavailableError",
    "cpu_model",
    "device_metadata",
    "input_channels",
    "latency_stats",
    "memory_format_for",
    "profile",
    "space_from_record",
    "space_record",
]

BACKENDS = ("torch", "onnxruntime", "cuda")
PRECISIONS = ("fp32", "int8")
CLOCKS = ("wall", "thread_cpu")

Builder = Callable[[Config], nn.Module]
ShapeLike = Sequence[int] | Callable[[Config, int], Sequence[int]]


class BackendUnavailableError(RuntimeError):
    """The requested measurement backend cannot run here (no GPU for ``cuda``, onnxruntime not installed)."""


# ------------------------------------------------------------------------------------------------ statistics
def latency_stats(samples_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Median, inter-quartile range and coefficient of variation (std / mean) of repeated timings in ms.

    Also the sample count ``n``, the fastest timing ``min_ms`` and the 10th percentile ``p10_ms``. Percentiles
    interpolate linearly between the sorted timings (numpy's default); the CV uses the population standard
    deviation (``ddof=0``), so one timing has CV 0.

    Example:
        >>> s = latency_stats([1.0, 2.0, 3.0, 4.0])
        >>> s["median_ms"], s["iqr_ms"], round(s["cv"], 3)
        (2.5, 1.5, 0.447)
    """
    x = np.asarray(samples_ms, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("latency_stats needs at least one timing")
    p10, q25, q50, q75 = np.percentile(x, [10, 25, 50, 75])
    mean = float(x.mean())
    cv = float(x.std() / mean) if mean > 0 else math.nan
    return {
        "median_ms": float(q50),
        "iqr_ms": float(q75 - q25),
        "cv": cv,
        "n": int(x.size),
        "min_ms": float(x.min()),
        "p10_ms": float(p10),
    }


# ------------------------------------------------------------------------------------------------ metadata
def cpu_model() -> str:
    """This machine's CPU model name (``/proc/cpuinfo``; ``platform.processor()`` is empty on most Linux systems)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def input_channels(shape: Sequence[int]) -> int | None:
    """The channel count of an image input ``(batch, channels, height, width)``, else ``None``.

    Recorded as ``in_channels`` in a profile's metadata: a 1-channel and a 3-channel net of one config differ
    in latency, and nothing else in the config or the space name tells them apart.

    Example:
        >>> input_channels((1, 3, 32, 32)), input_channels((1, 197, 192))
        (3, None)
    """
    return int(shape[1]) if len(shape) == 4 else None


def device_metadata(backend: str = "torch", threads: int | None = None) -> dict[str, Any]:
    """Facts about this machine and its libraries that a latency number depends on (JSON-able).

    Example:
        >>> m = device_metadata("torch", threads=1)
        >>> m["backend"], m["threads"], "torch" in m["versions"]
        ('torch', 1, True)
    """
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    if backend == "onnxruntime":
        with contextlib.suppress(ImportError):
            import onnxruntime

            versions["onnxruntime"] = onnxruntime.__version__
    with contextlib.suppress(ImportError):
        import nas

        versions["nas"] = str(getattr(nas, "__version__", "unknown"))
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count() or 1
    meta: dict[str, Any] = {
        "device": f"{platform.node() or 'host'}-{backend}",
        "backend": backend,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count() or 1,
        "cpus_usable": affinity,
        "threads": int(threads) if threads is not None else torch.get_num_threads(),
        "platform": platform.platform(),
        "versions": versions,
    }
    if backend == "cuda" and torch.cuda.is_available():
        meta["gpu"] = torch.cuda.get_device_name()
        meta["versions"]["cuda"] = str(torch.version.cuda)
        meta["device"] = f"{platform.node() or 'host'}-cuda-{meta['gpu']}"
    with contextlib.suppress(OSError, AttributeError):
        meta["load_average_start"] = [round(v, 2) for v in os.getloadavg()]
    return meta


def space_record(space: Any) -> list[dict[str, Any]] | None:
    """The dimensions of a plain :class:`nas.SearchSpace` as JSON (``None`` for subclasses or non-spaces).

    Recorded in profile metadata so that a predictor can be fitted on the profile later without importing the
    module that defined the space. Subclasses may compute their own features, which their dimensions alone
    cannot reproduce, so they are not recorded.
    """
    from nas.space import SearchSpace

    if type(space) is not SearchSpace:
        return None
    return [
        {
            "name": d.name,
            "values": list(d.values),
            "when": {k: list(v) for k, v in d.when.items()},
            "canonical": d.canonical,
        }
        for d in space.dims
    ]


def space_from_record(name: str, record: Sequence[Mapping[str, Any]]) -> Any:
    """Rebuild the plain :class:`nas.SearchSpace` saved by :func:`space_record`."""
    from nas.space import Choice, SearchSpace

    try:
        dims = [
            Choice(
                d["name"],
                tuple(d["values"]),
                {k: tuple(v) for k, v in dict(d["when"]).items()},
                d["canonical"],
            )
            for d in record
        ]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"space record of {name!r} is malformed: {exc!r}") from None
    return SearchSpace(name, dims)


# ------------------------------------------------------------------------------------------------ runners
class _Runner:
    """One prepared model on one backend: ``time(n)`` returns ``n`` latencies in ms."""

    clock: Callable[[], int] = time.perf_counter_ns

    def __call__(self) -> None:  # one untimed forward (warm-up)
        raise NotImplementedError

    def time(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = self.clock()
            self()
            out.append((self.clock() - t0) / 1e6)
        return out


class _TorchRunner(_Runner):
    def __init__(self, model: nn.Module, x: torch.Tensor):
        self.model, self.x = model, x

    def __call__(self) -> None:
        with torch.inference_mode():
            self.model(self.x)


class _CudaRunner(_Runner):
    def __init__(self, model: nn.Module, x: torch.Tensor):
        self.model, self.x = model.cuda(), x.cuda()

    def __call__(self) -> None:
        with torch.inference_mode():
            self.model(self.x)
        torch.cuda.synchronize()

    def time(self, n: int) -> list[float]:
        # CUDA events time the GPU work itself, not the host's launch overhead or Python's clock resolution.
        out = []
        with torch.inference_mode():
            for _ in range(n):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                self.model(self.x)
                end.record()
                end.synchronize()
                out.append(float(start.elapsed_time(end)))
        return out


class _OrtRunner(_Runner):
    def __init__(self, session: Any, x: np.ndarray):
        self.session, self.feed = session, {session.get_inputs()[0].name: x}

    def __call__(self) -> None:
        self.session.run(None, self.feed)


def _ort_session(
    model: nn.Module,
    x: torch.Tensor,
    precision: str,
    threads: int | None,
    work: Path,
    int8_choices: set[str],
) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError(
            "backend='onnxruntime' needs the onnxruntime package (pip install onnxruntime); "
            "use backend='torch' otherwise"
        ) from None
    from nas import export as nas_export

    path = work / "model.onnx"
    x_contig = x.contiguous()  # the ONNX graph takes a plain NCHW tensor
    if precision == "int8":
        # Calibrate on a few random batches of the measured shape: the scales only matter for accuracy, not
        # for which kernels run, and kernels are what latency depends on.
        gen = torch.Generator().manual_seed(0)
        calib = torch.randn((8, *x_contig.shape[1:]), generator=gen)
        chosen = nas_export.export_onnx_int8(model, path, calib)["int8_quantize"]
        int8_choices.add(chosen)
    else:
        nas_export._write_onnx(model, x_contig, path)
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1  # a sequential graph: extra inter-op threads only add contention
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Read the bytes so the temporary file can go right away (the session keeps its own copy).
    session = ort.InferenceSession(path.read_bytes(), opts, providers=["CPUExecutionProvider"])
    path.unlink(missing_ok=True)
    return session


# ------------------------------------------------------------------------------------------------ profile
def _resolve_net(
    net: Any, space: Any, input_shape: ShapeLike | None, batch_size: int
) -> tuple[Callable[[Config], nn.Module], Callable[[Config], tuple[int, ...]], str, Callable[[Any], Config]]:
    """(build, shape_of, space_name, canonical) for a Supernet or a plain ``cfg -> nn.Module`` builder."""
    if hasattr(net, "extract") and hasattr(net, "space"):
        net_space = net.space

        def shape_of(cfg: Config) -> tuple[int, ...]:
            if input_shape is not None:
                return _shape_from(input_shape, cfg, batch_size)
            return tuple(int(s) for s in net.input_shape(cfg, batch_size))

        name = space if isinstance(space, str) else getattr(net_space, "name", None)
        return net.extract, shape_of, str(name), net_space.canonical
    if not callable(net):
        raise TypeError(
            f"profile() needs a Supernet (with .extract and .space) or a callable cfg -> nn.Module, "
            f"got {type(net).__name__}"
        )
    if input_shape is None:
        raise ValueError(
            "profiling a plain builder needs input_shape=(C, H, W) or a callable (cfg, batch) -> shape"
        )
    if space is None:
        raise ValueError("profiling a plain builder needs space=<name> (or a SearchSpace) for the profile")
    name = space if isinstance(space, str) else getattr(space, "name", None)
    canonical = space.canonical if hasattr(space, "canonical") else Config
    return net, lambda cfg: _shape_from(input_shape, cfg, batch_size), str(name), canonical


def _shape_from(input_shape: ShapeLike, cfg: Config, batch_size: int) -> tuple[int, ...]:
    if callable(input_shape):
        return tuple(int(s) for s in input_shape(cfg, batch_size))
    return (int(batch_size), *(int(s) for s in input_shape))


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Fix torch's intra-op thread count for the block, then restore it (interop threads cannot be reset)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def memory_format_for(backend: str) -> str:
    """The layout conv nets are measured in: ``"channels_last"`` on the CPU backends (oneDNN's fast path; the
    ONNX graph itself takes NCHW), ``"contiguous"`` (NCHW, torch's default) on ``cuda``.

    Why not channels-last on a GPU: torch then runs every depthwise conv through cuDNN, whose releases from 9.10
    compile a kernel for each new shape (about 1.5 s each, NVIDIA/cudnn-frontend#1066): profiling 8 MobileNetV3
    subnets on an H200 took 18.9 s against 1.2 s on one CPU thread.

    Example:
        >>> memory_format_for("torch"), memory_format_for("cuda")
        ('channels_last', 'contiguous')
    """
    return "contiguous" if backend == "cuda" else "channels_last"


def check_settings(
    backend: str,
    *,
    precision: str = "fp32",
    clock: str = "wall",
    threads: int | None = 1,
    batch_size: int = 1,
    repeats: int = 30,
    rounds: int = 3,
    warmup: int = 10,
    max_cached: int = 1,
) -> None:
    """Raise ``ValueError`` (or :class:`BackendUnavailableError`) naming the first bad measurement setting.

    :func:`profile` calls it; callers that do work before measuring (``nas profile`` opens and checks the
    output file first) call it up front, so a bad setting fails before anything is printed or written.

    Example:
        >>> check_settings("torch", repeats=0)
        Traceback (most recent call last):
        ...
        ValueError: repeats must be an integer >= 1, got 0
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    if precision == "int8" and backend != "onnxruntime":
        raise ValueError(
            f"precision='int8' is measured with backend='onnxruntime' (QDQ int8 kernels; nas profile --backend "
            f"onnxruntime --precision int8); got backend={backend!r}"
        )
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; choose one of {list(CLOCKS)}")
    if clock == "thread_cpu" and (backend == "cuda" or threads != 1):
        raise ValueError(
            "clock='thread_cpu' counts only the calling thread's CPU time, so it needs a CPU backend "
            f"('torch' or 'onnxruntime') and threads=1 (nas profile --clock thread_cpu --threads 1); got "
            f"backend={backend!r}, threads={threads!r}"
        )
    if backend == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            "backend='cuda' needs a CUDA GPU, but torch.cuda.is_available() is False on this machine "
            f"(torch {torch.__version__}); measure with backend='torch' or 'onnxruntime' instead"
        )
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("repeats", repeats, 1),
        ("rounds", rounds, 1),
        ("warmup", warmup, 0),
        ("max_cached", max_cached, 1),
    ):
        if not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if threads is not None and (not isinstance(threads, int | np.integer) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")


def profile(
    net: Any,
    configs: Sequence[Mapping[str, Any]],
    backend: str = "torch",
    batch_size: int = 1,
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 30,
    rounds: int = 3,
    seed: int = 0,
    precision: str = "fp32",
    progress: bool = True,
    *,
    space: Any = None,
    input_shape: ShapeLike | None = None,
    max_cached: int = 64,
    order_log: list[int] | None = None,
    clock: str = "wall",
) -> Profile:
    """Measure the latency of each config's static subnet and return a :class:`Profile`.

    Args:
        net: a :class:`nas.supernet.Supernet` (``extract(cfg)``, ``input_shape(cfg, batch)``, ``space``) or a
            plain callable ``cfg -> nn.Module`` (then pass ``input_shape`` and ``space``).
        configs: the configs to measure (validated against the supernet's space; duplicates are measured once).
        backend: ``torch`` (CPU eager), ``onnxruntime`` (exported ONNX on the CPU) or ``cuda`` (GPU, CUDA events).
        batch_size: batch dimension of the timed input.
        threads: intra-op threads for the whole run (restored afterwards); ``None`` keeps the library default.
        warmup: untimed forward calls at every visit of a config (caches, allocator, lazy init).
        repeats: timed forward calls per config in total, split evenly over ``rounds`` (rounded up).
        rounds: interleaved passes over all configs, each in its own random order.
        seed: seeds the visiting order and the input tensor.
        precision: ``fp32``, or ``int8`` (``onnxruntime`` only: static QDQ quantization).
        progress: print one line per round to stderr.
        space: for a plain builder, the space name (or SearchSpace) recorded in the profile; for a supernet,
            an optional name overriding ``net.space.name``.
        input_shape: for a plain builder, ``(C, H, W)`` or ``(cfg, batch_size) -> full shape``.
        max_cached: models kept built at once; more configs than this are rebuilt on every visit.
        order_log: if given, the index (into the de-duplicated configs) of each visit is appended in visit order.
        clock: ``wall`` (elapsed time) or ``thread_cpu`` (CPU time of the calling thread; needs ``threads=1``
            and a CPU backend, so that all the work runs on the timed thread). Use ``thread_cpu`` on a busy
            shared machine, where wall time measures the load more than the network.

    Returns:
        A profile with per-config median latency (ms), IQR (ms), CV and repeat count, the extra columns
        ``latency_min_ms`` and ``latency_p10_ms`` (fastest and 10th-percentile repeat), and metadata describing the
        device, libraries, backend, batch size, input channels (``in_channels``, for image inputs), threads,
        precision and measurement settings.

    Example:
        >>> from search_spaces import mobilenetv3
        >>> net = mobilenetv3.supernet("small", in_channels=1)
        >>> p = profile(net, net.space.samples(2, seed=0), threads=1, repeats=2, rounds=1, progress=False)
        >>> len(p), p.metadata["threads"]
        (2, 1)
    """
    check_settings(
        backend,
        precision=precision,
        clock=clock,
        threads=threads,
        batch_size=batch_size,
        repeats=repeats,
        rounds=rounds,
        warmup=warmup,
        max_cached=max_cached,
    )

    build, shape_of, space_name, canonical = _resolve_net(net, space, input_shape, batch_size)
    unique: list[Config] = []
    seen: set[str] = set()
    for cfg in configs:
        c = canonical(cfg)
        if c.key not in seen:
            seen.add(c.key)
            unique.append(c)
    if not unique:
        raise ValueError("profile() got no configs to measure")

    per_round = math.ceil(repeats / rounds)
    rng = np.random.default_rng(seed)
    samples: list[list[float]] = [[] for _ in unique]
    cache: OrderedDict[int, _Runner] = OrderedDict()
    meta = device_metadata(backend, threads)
    meta["memory_format"] = memory_format_for(backend)
    int8_choices: set[str] = (
        set()
    )  # what export_onnx_int8 quantized (all / weights), recorded in the metadata
    t_start = time.perf_counter()
    was_training = getattr(net, "training", None)

    def runner_for(i: int, work: Path) -> _Runner:
        if i in cache:
            cache.move_to_end(i)
            return cache[i]
        cfg = unique[i]
        model = build(cfg)
        model.eval()
        shape = shape_of(cfg)
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=gen)
        if x.dim() == 4 and meta["memory_format"] == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        if backend == "torch":
            r: _Runner = _TorchRunner(model, x)
        elif backend == "cuda":
            r = _CudaRunner(model, x)
        else:
            session = _ort_session(model, x, precision, threads, work, int8_choices)
            r = _OrtRunner(session, x.contiguous().numpy())
        if clock == "thread_cpu":
            r.clock = time.thread_time_ns
        cache[i] = r
        while len(cache) > max_cached:
            cache.popitem(last=False)
        return r

    try:
        with _torch_threads(threads), tempfile.TemporaryDirectory(prefix="nas-profile-") as work:
            for rnd in range(rounds):
                order = rng.permutation(len(unique))
                t_round = time.perf_counter()
                for i in order:
                    i = int(i)
                    r = runner_for(i, Path(work))
                    for _ in range(warmup):
                        r()
                    samples[i].extend(r.time(per_round))
                    if order_log is not None:
                        order_log.append(i)
                if progress:
                    print(
                        f"[nas.hw.profile] round {rnd + 1}/{rounds}: {len(unique)} configs in "
                        f"{time.perf_counter() - t_round:.1f}s ({backend}, batch {batch_size}, "
                        f"threads {meta['threads']})",
                        file=sys.stderr,
                        flush=True,
                    )
            meta["threads"] = (
                int(threads) if threads is not None else torch.get_num_threads()
            )  # as actually used during the run
    finally:
        cache.clear()
        if was_training is not None and hasattr(net, "train"):
            net.train(was_training)

    stats = [latency_stats(s) for s in samples]
    channels = {input_channels(shape_of(c)) for c in unique}
    if len(channels) == 1 and None not in channels:
        meta["in_channels"] = channels.pop()
    if int8_choices:
        meta["int8_quantize"] = "+".join(sorted(int8_choices))
    record = space_record(getattr(net, "space", None) if space is None or isinstance(space, str) else space)
    if record is not None:
        meta["space_dims"] = record
    with contextlib.suppress(OSError, AttributeError):
        meta["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    meta.update(
        {
            "batch_size": int(batch_size),
            "precision": precision,
            "clock": clock,
            "warmup": int(warmup),
            "repeats": int(per_round * rounds),
            "rounds": int(rounds),
            "order": "interleaved: every round visits all configs in a fresh random order",
            "seed": int(seed),
            "duration_s": round(time.perf_counter() - t_start, 2),
            "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "median_cv": float(np.median([s["cv"] for s in stats])),
        }
    )
    return Profile(
        space_name,
        unique,
        [s["median_ms"] for s in stats],
        latency_iqr_ms=[s["iqr_ms"] for s in stats],
        latency_cv=[s["cv"] for s in stats],
        repeats=[s["n"] for s in stats],
        # On a shared machine other processes only ever add time, so the fast tail estimates the uncontended
        # latency; it is kept beside the median for users who want that target.
        extras={
            "latency_min_ms": [s["min_ms"] for s in stats],
            "latency_p10_ms": [s["p10_ms"] for s in stats],
        },
        metadata=meta,
    )
