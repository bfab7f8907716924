"""nas.train on Ray Train: one epoch with two data-parallel workers (gloo) on a local Ray instance."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest
import torch
from train_tiny import TinySupernet, tiny_data

from nas.train import load_weights, train_supernet

ray = pytest.importorskip("ray")


@pytest.mark.ray
def test_two_workers_one_epoch(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    # Ray workers unpickle the test's supernet class: they need this folder on their import path.
    here = os.path.dirname(os.path.abspath(__file__))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    # A cluster recorded by `ray start` (here a dead one): Ray attached to it without an address, and refused
    # num_cpus. A Ray temp folder of the test's own, its paths short for Ray's sockets.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    os.makedirs(os.path.join(ray_tmp, "ray"))
    with open(os.path.join(ray_tmp, "ray", "ray_current_cluster"), "w") as f:
        f.write("127.0.0.1:1")
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    before = torch.get_num_threads()
    torch.manual_seed(0)
    net = TinySupernet()
    init = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        result = train_supernet(
            net,
            tiny_data(256),
            epochs=1,
            batch_size=32,
            lr=0.1,
            out_dir=tmp_path,
            num_workers=2,
            progress=False,
            channels_last=False,
        )
    finally:
        torch.set_num_threads(before)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not ray.is_initialized()  # the instance started for training was shut down
    assert result.steps == 4  # 256 examples / 2 workers / batch 32
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["settings"]["world"] == 2 and summary["steps"] == 4
    # Ray Train's experiment folder (a storage marker, its bookkeeping) is not left in the run folder
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.safetensors",
        "metrics.jsonl",
        "supernet.safetensors",
        "train.json",
    ]
    trained = load_weights(TinySupernet(), tmp_path).state_dict()
    assert all(torch.equal(trained[k], v) for k, v in net.state_dict().items())
    assert any(not torch.equal(init[k], trained[k]) for k in init if k.endswith("weight"))


@pytest.mark.ray
def test_more_workers_than_the_cluster_has_cpus_is_refused(tmp_path, monkeypatch):
    """Ray Train waited forever for CPUs that a cluster of 1 CPU does not have."""
    here = os.path.dirname(os.path.abspath(__file__))  # for the workers to unpickle TinySupernet
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    ray.init(address="local", num_cpus=1, object_store_memory=80 * 1024**2, include_dashboard=False)
    try:
        with pytest.raises(ValueError, match=r"2 training workers need 2 CPUs .* has 1"):
            train_supernet(
                TinySupernet(), tiny_data(64), epochs=1, out_dir=tmp_path, num_workers=2, progress=False
            )
    finally:
        ray.shutdown()


def test_training_on_an_address_nothing_answers_at_fails_at_once(tmp_path, monkeypatch):
    """ray.init retries a dead address for about 12 minutes; the launcher checks it first."""
    import socket

    with socket.socket() as s:  # a port that was just free: nothing listens at it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail("ray.init was called"))
    with pytest.raises(ConnectionError, match=f"cannot reach a Ray cluster at '127.0.0.1:{port}'"):
        train_supernet(
            TinySupernet(), tiny_data(64), epochs=1, batch_size=16, out_dir=tmp_path, progress=False,
            num_workers=2, ray_address=f"127.0.0.1:{port}",
        )  # fmt: skip
