"""Run a search's evaluations as Ray Tune trials, locally or on a cluster.

One Tune trial is one real evaluation. A :class:`TuneSearcherAdapter` (a ``ray.tune.search.Searcher``) turns the
runner's :class:`~nas.search.runner.Engine` into Tune's interface: ``suggest`` proposes a new, never-evaluated
config (duplicates are answered from the cache inside the engine), ``on_trial_complete`` writes the result into
the store and tells the searcher. The driver is the only writer of the store.

Trials run in an :class:`EvaluationTrainable` actor. Tune reuses actors (``reuse_actors=True``), so objectives
are unpickled once per actor, and a :class:`~nas.search.objectives.LazyFunction` (the supernet loader of
``nas.search.accuracy``) builds its model once per actor. A trial whose actor or node died is evaluated again in
a new trial, up to ``max_failures`` times per config; a config that still fails is stored as a failed evaluation,
so the budget stays exact. (An exception raised by an objective is not a trial failure: the evaluation catches
it and stores a failed record at once.)

Example (``nas.search.run`` calls this for ``backend="ray"``)::

    result = nas.search.run(space, objectives, backend="ray", max_concurrent=4, ray_address="auto")
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from typing import Any

from nas.space import Config

__all__ = ["EvaluationTrainable", "TuneSearcherAdapter", "run_ray"]

_RESULT_KEY = "nas_record"

log = logging.getLogger(__name__)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Raise ``ConnectionError`` when nothing listens at a ``host:port`` (or ``ray://host:port``) address.

    ``ray.init`` retries an address that does not answer for about 12 minutes (20 attempts of ~35 s) before it
    gives up, so a mistyped address looked like a hung search. ``"auto"`` and other forms are left to Ray (it
    reports a missing local cluster at once).
    """
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if "://" in host or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port}: {exc}") from None


def _init_ray(address: str | None, object_store_memory: int | None, num_cpus: int | None) -> bool:
    """Connect to (or start) Ray; returns True when this call started it (and must shut it down)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard per trial
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False, "log_to_driver": False}
    address = address or os.environ.get("RAY_ADDRESS") or None  # Ray's own variable names a cluster too
    if address is not None:
        try:
            _check_reachable(address)
            ray.init(address=address, **kwargs)
        except ConnectionError as exc:
            raise ConnectionError(
                f"cannot reach a Ray cluster at {address!r} ({exc}); start one (`ray start --head`), check the "
                "address, or search locally without a Ray address"
            ) from None
    else:
        # "local": a new instance. Without an address Ray attaches to the cluster `ray start` last recorded in
        # its temp folder (even one that has since died), and then refuses num_cpus and object_store_memory.
        ray.init(
            address="local",
            num_cpus=num_cpus,
            object_store_memory=object_store_memory or 150 * 1024 * 1024,
            **kwargs,
        )
    return True


def _trainable_class() -> type:
    """Build the Trainable subclass lazily (ray.tune must not be imported with nas.search)."""
    from ray import tune

    class EvaluationTrainable(tune.Trainable):
        """Evaluates one config per trial; objectives live as long as the actor."""

        def setup(self, config: dict[str, Any], objectives: Any = None, constraints: Any = None) -> None:
            # Tune passes with_parameters() objects as keyword arguments; they are fetched from the object store
            # once per actor and survive reset_config.
            self._objectives = objectives
            self._constraints = constraints or ()
            self._config = config
            import ray

            self._worker = f"{ray.util.get_node_ip_address()}:{os.getpid()}"

        def reset_config(self, new_config: dict[str, Any]) -> bool:
            self._config = new_config
            return True  # reuse this actor (and the supernet it loaded)

        def step(self) -> dict[str, Any]:
            from nas.search.runner import evaluate_config

            cfg = Config.from_json(self._config["config_json"])
            record = evaluate_config(cfg, self._objectives, self._constraints, worker=self._worker)
            # As one JSON string: Tune flattens nested result dicts (Python's json keeps NaN and Infinity).
            return {_RESULT_KEY: json.dumps(record), "done": True}

    return EvaluationTrainable


EvaluationTrainable = None  # replaced by the real class on first use (see _trainable_class)


def _adapter_class() -> type:
    from ray.tune.search import Searcher as TuneSearcher

    class TuneSearcherAdapter(TuneSearcher):
        """Tune's Searcher over the runner's engine (and so over any ask/tell searcher)."""

        def __init__(self, engine: Any, retries: int):
            super().__init__(metric=None, mode=None)
            self.engine = engine
            self.retries = retries
            self.trials: dict[str, Config] = {}
            self.lost: dict[str, int] = {}  # config key -> trials of it lost with their actor or node
            self.queue: list[Config] = []
            self.error: Exception | None = None
            self.finished = False  # said FINISHED: Tune's run ended because the adapter ended it

        def set_search_properties(
            self, metric: str | None, mode: str | None, config: dict, **spec: Any
        ) -> bool:
            return True

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            eng = self.engine
            if self.error is not None:
                return self._finish()
            if not self.queue:
                want = min(eng.batch_size, eng.remaining)
                if want <= 0:
                    # Budget fully handed out: finished once nothing is running any more.
                    return self._finish() if not self.trials else None
                self.queue.extend(eng.propose(want))
                if not self.queue:
                    if eng.exhausted and not self.trials:
                        return self._finish()
                    return None  # the searcher waits for running trials
            cfg = self.queue.pop(0)
            self.trials[trial_id] = cfg
            return {"config_json": cfg.to_json(), "key": cfg.key}

        def _finish(self) -> str:
            self.finished = True
            return TuneSearcher.FINISHED

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            cfg = self.trials.pop(trial_id, None)
            if cfg is None:
                return
            text = (result or {}).get(_RESULT_KEY)
            if error or text is None:
                # Only infrastructure ends a trial in error (objectives' exceptions come back as records): the
                # actor or its node died. The config goes back to the front of the queue for a new trial.
                # Retrying here rather than through Tune's FailureConfig, because Tune ends a trial for good
                # when a second call on the same dead actor fails while the trial is already being restarted
                # (seen when a node is lost under reused actors), which would waste an evaluation of the budget.
                lost = self.lost.get(cfg.key, 0) + 1
                self.lost[cfg.key] = lost
                if lost <= self.retries:
                    log.warning(
                        "Ray trial %s for %s was lost with its actor or node; evaluating it again (retry %d of %d)",
                        trial_id,
                        cfg.to_json(),
                        lost,
                        self.retries,
                    )
                    self.queue.insert(0, cfg)
                    return
                log.warning("Ray trials for %s failed %d times; stored as failed", cfg.to_json(), lost)
                record = {
                    "values": {o.name: math.nan for o in self.engine.objectives},
                    "violation": math.inf,
                    "status": "failed",
                    "error": f"Ray trial {trial_id} failed: lost its actor or node {lost} times (max_failures="
                    f"{self.retries} retries)",
                    "wall_time_s": None,
                    "finished_at": time.time(),
                    "worker": "ray",
                }
            else:
                record = json.loads(text)
            try:
                self.engine.complete(cfg, record)
            except Exception as exc:  # Tune would only log it; stop the run and re-raise after fit()
                self.error = exc

        # Tune pickles its search algorithm for experiment restore; our state lives in the store instead (resume
        # goes through nas.search.run), and the engine holds a database connection, so none of it is pickled.
        def __getstate__(self) -> dict[str, Any]:
            return {"retries": self.retries}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state, engine=None, trials={}, lost={}, queue=[], error=None, finished=False)

        def save(self, checkpoint_path: str) -> None:
            pass

        def restore(self, checkpoint_path: str) -> None:
            pass

        def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
            pass

        def release_queue(self) -> None:
            for cfg in self.queue:
                self.engine.release(cfg)
            self.queue.clear()

    return TuneSearcherAdapter


TuneSearcherAdapter = None  # replaced by the real class on first use (see _adapter_class)


def _no_restore_hint(record: logging.LogRecord) -> bool:
    """Drop Tune's "interrupted ... Resume experiment with: Tuner.restore(...)" hint (a search resumes from its
    store, and the hint's folder is a temporary one, deleted at once)."""
    return "Tuner.restore(" not in record.getMessage()


_TUNE_PREFIX = "nas-tune-"


def _remove_orphaned_tune_folders(root: str | None = None) -> list[str]:
    """Remove the Tune folders of searches whose process is gone (killed with ``kill -9``, or ended by Ray when
    its cluster died), which had no chance to clean up after themselves; returns the removed paths.

    A folder is named ``nas-tune-<pid>-<random>``; one whose process still runs, that belongs to another user
    or is named otherwise is left alone.
    """
    root = root or tempfile.gettempdir()
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        pid_text = entry.name[len(_TUNE_PREFIX) :].split("-", 1)[0]
        if not entry.name.startswith(_TUNE_PREFIX) or not pid_text.isdigit():
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
        except OSError:  # alive under another user (PermissionError), or gone while we looked
            continue
    return removed


def run_ray(
    engine: Any,
    max_concurrent: int,
    address: str | None = None,
    *,
    max_failures: int = 3,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    object_store_memory: int | None = None,
    num_cpus: int | None = None,
    storage_path: str | None = None,
) -> None:
    """Evaluate the engine's remaining budget as Tune trials (``max_concurrent`` at a time).

    Args:
        engine: the runner's engine (budget, cache, store, searcher).
        max_concurrent: trials running at once.
        address: Ray address (``"auto"``, ``"ray://head:10001"``); ``None`` starts a local Ray (or uses the
            cluster at ``$RAY_ADDRESS``, or the one already initialised in this process).
        max_failures: retries of a trial whose actor or node died.
        cpus_per_trial, gpus_per_trial: resources of one evaluation actor.
        object_store_memory, num_cpus: for a Ray started here.
        storage_path: where Tune keeps its experiment state (default: a temporary directory, removed after).
    """
    import ray
    from ray import tune

    global EvaluationTrainable, TuneSearcherAdapter
    if EvaluationTrainable is None:
        EvaluationTrainable = _trainable_class()
    if TuneSearcherAdapter is None:
        TuneSearcherAdapter = _adapter_class()

    # Tune's end-of-run analysis looks for per-trial result files that we deliberately do not write.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    logging.getLogger("ray.tune.tune").addFilter(_no_restore_hint)
    started = _init_ray(address, object_store_memory, num_cpus)
    adapter = TuneSearcherAdapter(engine, max_failures)
    tmp = None
    if storage_path is None:
        _remove_orphaned_tune_folders()
        tmp = tempfile.TemporaryDirectory(prefix=f"{_TUNE_PREFIX}{os.getpid()}-")
        storage_path = tmp.name
    try:
        trainable = tune.with_resources(
            tune.with_parameters(
                EvaluationTrainable, objectives=list(engine.objectives), constraints=list(engine.constraints)
            ),
            {"cpu": cpus_per_trial, "gpu": gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=adapter,
                num_samples=-1,  # as many trials as the adapter suggests: it ends the run (FINISHED)
                max_concurrent_trials=max_concurrent,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"nas-search-{int(time.time())}",
                storage_path=storage_path,
                failure_config=tune.FailureConfig(max_failures=0),  # the adapter retries lost trials
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
                verbose=0,
            ),
        )
        tuner.fit()
        if adapter.error is not None:
            raise adapter.error
        if not adapter.finished:
            # Only Ctrl-C (Tune's SIGINT handler) ends the run before the adapter does. Tune stops the trials and
            # returns as if the run were complete; raise as the local backend does, so that a partial run is
            # not taken for a finished one (the store holds every evaluation that came back: it resumes).
            raise KeyboardInterrupt("the Ray Tune run was interrupted")
    finally:
        adapter.release_queue()
        if started:
            ray.shutdown()
        if tmp is not None:
            tmp.cleanup()
