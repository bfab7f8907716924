"""Data-parallel supernet training on Ray Train (``TorchTrainer``; gloo on CPU, nccl on GPU).

Each worker runs the same training loop as a single process (:func:`nas.train.trainer._run`) on its shard of
every epoch's permutation (every ``world``-th example) and averages gradients with an all-reduce after each
step. Subnets are sampled from the step number, so every worker trains the same subnets. Worker 0 writes
checkpoints, the metrics log and the final weights to ``out_dir`` (which must be on a filesystem all workers
share when the cluster spans machines); the driver loads the final weights back into ``net``.

Ray is started locally (small object store, ``RAY_AUTH_MODE=disabled``) unless an address is given, and only
an instance started here is shut down.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["run_on_ray", "workers_use_gpu"]


def _worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    # Ray Train gives each GPU worker its own device (CUDA_VISIBLE_DEVICES) and says which one.
    device = ray.train.torch.get_device() if config["use_gpu"] else torch.device("cpu")
    sync = config["sync_cls"](rank, world)
    if not dist.is_initialized():  # pragma: no cover - Ray Train sets the process group up
        raise RuntimeError("Ray Train did not initialise torch.distributed")
    result = config["run"](
        config["net"],
        config["x"],
        config["y"],
        config["val"],
        config["cfg"],
        Path(config["out"]),
        config["resume"],
        config["progress"],
        sync,
        device=device,
    )
    # Every worker must report: in Ray Train v2 report() is a barrier across the workers (only rank 0's
    # metrics are kept); a report from rank 0 alone waits forever for the others.
    ray.train.report({"steps": result.steps, "seconds": result.seconds, **result.val_accuracy})


def workers_use_gpu(device: str, gpus: int, num_workers: int) -> bool:
    """Whether the workers train on GPUs (one each, nccl) rather than CPUs (gloo), for the ``device`` asked for.

    ``"auto"`` takes GPUs when the cluster has one per worker, and otherwise trains on CPUs with a warning when
    it has some (NCCL cannot share one GPU between two workers); ``"cuda"`` requires one per worker.

    Example:
        >>> workers_use_gpu("auto", 0, 2), workers_use_gpu("auto", 4, 2), workers_use_gpu("cpu", 4, 2)
        (False, True, False)
    """
    if device == "cpu":
        return False
    if gpus >= num_workers:
        return True
    if device == "cuda":
        fewer = {0: "", 1: "use num_workers=1 (without Ray), "}.get(
            gpus, f"use num_workers={gpus} or fewer, "
        )
        raise ValueError(
            f"device='cuda' with {num_workers} workers needs one GPU per worker, and the Ray cluster has {gpus}; "
            f"{fewer}or device='cpu'"
        )
    if gpus:
        warnings.warn(
            f"the Ray cluster has {gpus} GPU(s) for {num_workers} workers, and each worker needs its own: "
            f"training on CPUs (gloo). Use num_workers={gpus} to train on the GPUs (1: without Ray), or "
            "device='cpu' to silence this",
            stacklevel=3,
        )
    return False


def run_on_ray(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    val: Any,
    cfg: Any,
    out: Path,
    resume: bool,
    progress: bool,
    num_workers: int,
    address: str | None,
    run: Any,
    sync_cls: Any,
    device: str = "auto",
) -> Any:
    """Train with ``num_workers`` Ray Train workers; returns the worker-0 :class:`TrainResult`."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from nas.train.checkpoint import load_weights
    from nas.train.trainer import SUMMARY, TrainResult

    started_here = False
    address = address or os.environ.get("RAY_ADDRESS") or None  # Ray's own variable names a cluster too
    if not ray.is_initialized():
        if address:
            from nas.search.ray_backend import _check_reachable

            try:
                _check_reachable(address)  # ray.init would retry a dead address for ~12 minutes
            except ConnectionError as exc:
                raise ConnectionError(
                    f"cannot reach a Ray cluster at {address!r} ({exc}); start one (`ray start --head`) or fix the "
                    "address, or train without a Ray address"
                ) from None
            ray.init(address=address, runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}})
        else:
            # "local": a new instance. Without an address Ray attaches to the cluster `ray start` last recorded
            # in its temp folder (even one that has since died), and then refuses num_cpus.
            ray.init(
                address="local",
                num_cpus=num_workers + 1,  # the workers plus room for the Train controller
                object_store_memory=150 * 1024**2,
                include_dashboard=False,
                runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}},
            )
        started_here = True
    threads = max(1, (os.cpu_count() or 1) // num_workers)
    try:
        use_gpu = workers_use_gpu(device, int(ray.cluster_resources().get("GPU", 0)), num_workers)
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < num_workers:
            # Ray Train would wait for the missing CPUs forever, with no message.
            raise ValueError(
                f"{num_workers} training workers need {num_workers} CPUs (one each), and the Ray cluster has "
                f"{cpus:g}; ask for fewer workers or add nodes"
            )
        trainer = TorchTrainer(
            _worker,
            train_loop_config={
                "net": net,
                "x": x,
                "y": y,
                "val": val,
                "cfg": cfg,
                "out": str(out.resolve()),
                "resume": resume,
                "progress": progress,
                "run": run,
                "sync_cls": sync_cls,
                "threads": threads,
                "use_gpu": use_gpu,
            },
            scaling_config=ScalingConfig(
                num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}
            ),
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            run_config=RunConfig(name=f"nas-train-{out.name}", storage_path=str((out / "ray").resolve())),
        )
        result = trainer.fit()
    finally:
        if started_here:
            ray.shutdown()
    if result.error is not None:
        raise RuntimeError(f"Ray Train run failed: {result.error}") from result.error
    # Ray Train's own experiment folder holds only its storage marker and bookkeeping (our checkpoint, weights
    # and metrics are in `out`): a finished run does not keep it. A failed one does, for its error files.
    shutil.rmtree(out / "ray", ignore_errors=True)
    load_weights(net, out)
    net.activate(net.space.max())
    import json

    summary = json.loads((out / SUMMARY).read_text())
    metrics = result.metrics or {}
    return TrainResult(
        str(out),
        int(metrics.get("steps", summary["steps"])),
        cfg.epochs,
        float(summary["seconds"]),
        dict(summary.get("val_accuracy", {})),
        [],
    )
