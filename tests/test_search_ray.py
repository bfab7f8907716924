"""nas.search on Ray Tune: a two-node local cluster, a worker node lost mid-search."""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time

import pytest

from nas.search import Objective, open_store, run
from nas.space import Choice, Config, SearchSpace

pytestmark = pytest.mark.ray

SPACE = SearchSpace(
    "toy-ray", [Choice("w", (1, 2, 3, 4, 5, 6)), Choice("d", (1, 2, 3, 4)), Choice("k", (3, 5, 7))]
)


def slow_quality(c: Config, delay: float = 0.0) -> float:
    time.sleep(delay)
    return float(c["w"] * c["d"] + 0.1 * c["k"])


def cost(c: Config) -> float:
    return float(c["w"] * c["d"] * c["k"])


def objectives(delay: float) -> list[Objective]:
    return [Objective("quality", lambda c: slow_quality(c, delay), "max"), Objective("cost@x", cost, "min")]


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray import cloudpickle
    from ray.cluster_utils import Cluster

    os.environ["RAY_AUTH_MODE"] = "disabled"
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay short
    previous_tmpdir = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    # Worker processes cannot import this test module: ship its functions by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    mem = 100 * 1024 * 1024
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": mem, "include_dashboard": False},
    )
    workers = [
        c.add_node(num_cpus=1, object_store_memory=mem, node_ip_address=ip)
        for ip in ("127.0.0.2", "127.0.0.3")
    ]
    c.wait_for_nodes()  # on a loaded machine a node can register late; the tests need both from the start
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c, workers
    finally:
        ray.shutdown()
        c.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        if previous_tmpdir is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous_tmpdir
        shutil.rmtree(tmp, ignore_errors=True)  # session logs and sockets: dozens piled up in /tmp


def test_two_node_cluster_runs_two_trials_at_once(cluster, tmp_path):
    c, _ = cluster
    url = f"sqlite:///{tmp_path / 'ray.db'}"
    result = run(
        SPACE,
        objectives(1.0),  # long enough that the two trials overlap even on a loaded machine
        algorithm="nsga2",
        budget=10,
        backend="ray",
        ray_address=c.address,
        max_concurrent=2,
        store=url,
        progress=False,
    )
    h = result.history
    assert len(h) == 10 and h["key"].is_unique and (h["status"] == "ok").all()
    nodes = {w.split(":")[0] for w in h["worker"]}
    assert nodes == {"127.0.0.2", "127.0.0.3"}  # both worker nodes evaluated configs
    # Reused actors: far fewer worker processes than trials.
    assert len(set(h["worker"])) < 10
    assert open_store(url).count() == 10


def test_losing_a_worker_node_still_spends_the_budget_exactly(cluster, tmp_path):
    c, workers = cluster
    db = tmp_path / "ray-kill.db"
    url = f"sqlite:///{db}"
    budget = 12

    killed_at: list[float] = []

    def kill_when_running() -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                    if conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] >= 3:
                        break
            except sqlite3.Error:
                pass  # not created yet
            time.sleep(0.1)
        c.remove_node(workers[1], allow_graceful=False)
        killed_at.append(time.time())

    killer = threading.Thread(target=kill_when_running, daemon=True)
    killer.start()
    result = run(
        SPACE,
        objectives(0.4),
        algorithm="random",
        budget=budget,
        seed=3,
        backend="ray",
        ray_address=c.address,
        max_concurrent=2,
        store=url,
        progress=False,
        ray_options={"max_failures": 3},
    )
    killer.join(timeout=5)
    h = result.history
    assert len(h) == budget
    assert h["key"].is_unique
    assert (h["status"] == "ok").all()  # trials lost with the node were evaluated again, not stored as failed
    assert open_store(url).count() == budget
    assert killed_at, "the worker node was never killed"
    late = h[h["finished_at"] > killed_at[0] + 1.0]
    assert len(late) > 0  # the search went on after losing the node ...
    assert set(late["worker"].str.split(":").str[0]) == {"127.0.0.2"}  # ... on the surviving node


def test_an_address_nothing_answers_at_fails_at_once(monkeypatch):
    """ray.init retried such an address for about 12 minutes: a mistyped --ray-address looked like a hang."""
    ray = pytest.importorskip("ray")
    import socket

    from nas.search import ray_backend

    with socket.socket() as s:  # a port that was just free: nothing listens at it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # the module's cluster may be up already
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail("ray.init was called"))
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        start = time.time()
        with pytest.raises(
            ConnectionError, match=f"cannot reach a Ray cluster at '{address}'.*nothing answers"
        ):
            ray_backend._init_ray(address, None, None)
        assert time.time() - start < 10
    # Ray's own RAY_ADDRESS names the cluster when no address is given (Ray would refuse num_cpus for it).
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(ConnectionError, match=f"cannot reach a Ray cluster at '127.0.0.1:{port}'"):
        ray_backend._init_ray(None, None, None)


def test_tune_folders_of_killed_searches_are_removed_by_the_next_one(tmp_path):
    """A search killed with kill -9 (or ended by Ray when its cluster died) left its /tmp/nas-tune-* for good."""
    import subprocess

    from nas.search import ray_backend

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for name in (f"nas-tune-{gone.pid}-abc", f"nas-tune-{os.getpid()}-def", "nas-tune-xyz", "other"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "state.json").write_text("{}")
    (tmp_path / f"nas-tune-{gone.pid}-file").write_text("not a folder")
    removed = ray_backend._remove_orphaned_tune_folders(str(tmp_path))
    assert removed == [str(tmp_path / f"nas-tune-{gone.pid}-abc")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"nas-tune-{os.getpid()}-def", "nas-tune-xyz", "other", f"nas-tune-{gone.pid}-file"]
    )


def test_no_address_starts_a_local_ray_despite_a_cluster_recorded_by_ray_start(tmp_path):
    """ray.init() without an address attached to the cluster `ray start` recorded (here a dead one) and then
    refused object_store_memory: `nas search --backend ray` failed after any `ray start` on the machine."""
    pytest.importorskip("ray")
    import shutil
    import subprocess

    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay short
    try:
        os.makedirs(os.path.join(tmp, "ray"))
        with open(os.path.join(tmp, "ray", "ray_current_cluster"), "w") as f:
            f.write("127.0.0.1:1")  # what a `ray start --head` leaves behind until `ray stop`
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(RAY_TMPDIR=tmp, RAY_AUTH_MODE="disabled")
        code = (
            "import ray; from nas.search.ray_backend import _init_ray\n"
            "assert _init_ray(None, 80 * 1024 * 1024, 1)\n"
            "print('started', ray.cluster_resources()['CPU'])\n"
            "ray.shutdown()\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "started 1.0" in done.stdout
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _ListEngine:
    """The part of the runner's Engine the Tune adapter uses, over a fixed list of configs."""

    batch_size = 1
    exhausted = False

    def __init__(self, configs: list[Config]):
        self.todo = list(configs)
        self.objectives = objectives(0.0)
        self.records: dict[str, dict] = {}

    @property
    def remaining(self) -> int:
        return len(self.todo)

    def propose(self, n: int) -> list[Config]:
        out, self.todo = self.todo[:n], self.todo[n:]
        return out

    def complete(self, cfg: Config, record: dict) -> None:
        assert cfg.key not in self.records, "a config was completed twice"
        self.records[cfg.key] = record

    def release(self, cfg: Config) -> None:
        self.todo.append(cfg)


def test_a_trial_lost_with_its_actor_is_evaluated_again_then_stored_as_failed():
    pytest.importorskip("ray")
    import json

    from nas.search import ray_backend
    from nas.search.runner import evaluate_config

    a, b = SPACE.sample(seed=0), SPACE.sample(seed=1)
    engine = _ListEngine([a, b])
    adapter = ray_backend._adapter_class()(engine, retries=2)

    # Trial 1 (config a) is lost twice: each time a new trial gets the same config, and nothing is stored.
    for trial in ("t1", "t2"):
        assert adapter.suggest(trial)["key"] == a.key
        adapter.on_trial_complete(trial, error=True)
        assert engine.records == {}
    # The third loss exceeds retries=2: stored once, as a failed evaluation naming the cause.
    assert adapter.suggest("t3")["key"] == a.key
    adapter.on_trial_complete("t3", error=True)
    failed = engine.records[a.key]
    assert failed["status"] == "failed" and "lost its actor or node 3 times" in failed["error"]

    # A trial that comes back is stored as it is, and the run then ends.
    suggested = adapter.suggest("t4")
    assert suggested["key"] == b.key
    record = evaluate_config(Config.from_json(suggested["config_json"]), engine.objectives, (), worker="w")
    adapter.on_trial_complete("t4", result={ray_backend._RESULT_KEY: json.dumps(record)})
    assert engine.records[b.key]["status"] == "ok"
    assert adapter.suggest("t5") == adapter.FINISHED


def test_ctrl_c_stops_the_search_with_keyboard_interrupt_and_it_resumes(cluster, tmp_path):
    """Tune's own SIGINT handler used to end fit() quietly: run() returned the partial run as if finished."""
    import signal

    c, _ = cluster
    db = tmp_path / "ray-sigint.db"
    url = f"sqlite:///{db}"
    budget = 10

    def interrupt_when_running() -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                    if conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] >= 2:
                        break
            except sqlite3.Error:
                pass  # not created yet
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends to the driver

    options = dict(
        algorithm="random", seed=5, backend="ray", ray_address=c.address, store=url, progress=False
    )
    interrupter = threading.Thread(target=interrupt_when_running, daemon=True)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        run(SPACE, objectives(0.3), budget=budget, **options)
    interrupter.join(timeout=5)
    assert 2 <= open_store(url).count() < budget
    result = run(SPACE, objectives(0.0), budget=budget, resume=True, **options)
    h = result.history
    assert len(h) == budget and h["key"].is_unique and (h["status"] == "ok").all()
