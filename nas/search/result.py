"""The outcome of a search: every evaluation as a DataFrame, Pareto fronts per target, hypervolumes.

Example:
    >>> import pandas as pd
    >>> h = pd.DataFrame({"order": [0, 1, 2], "key": ["a", "b", "c"], "config": ["{}"] * 3,
    ...                   "accuracy": [90.0, 80.0, 70.0], "latency@cpu": [3.0, 1.0, 2.0],
    ...                   "violation": 0.0, "feasible": True, "status": "ok", "wall_time_s": 0.0})
    >>> r = SearchResult(h, [("accuracy", "max"), ("latency@cpu", "min")])
    >>> r.pareto()["key"].tolist()
    ['a', 'b']
    >>> r.hypervolume(ref={"accuracy": 60.0, "latency@cpu": 4.0})  # b: 20 x 3, plus a's 10 x 1 above it
    70.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from nas.pareto import hypervolume, nondominated_mask
from nas.space import Config

__all__ = ["USABLE_STATUSES", "SearchResult"]

#: statuses of evaluations that can sit on a front: ``"ok"``, and ``"partial"`` (some targets' objectives failed;
#: the record counts on the fronts of the targets it has values for)
USABLE_STATUSES = ("ok", "partial")


class SearchResult:
    """Evaluations of one search run.

    Attributes:
        history: one row per real evaluation, in the order they finished: ``order``, ``key``, ``config`` (JSON),
            one column per objective (and constrained metric), ``violation``, ``feasible``, ``status``
            (``"ok"``; ``"partial"`` when some hardware targets' objectives failed, their values NaN; or
            ``"failed"``), ``error``, ``wall_time_s``, ``worker``. ``feasible`` is false for failed rows.
        objectives: ``(name, direction)`` pairs.
        meta: the run metadata (space, algorithm, seed, budget, ...).
    """

    def __init__(
        self,
        history: pd.DataFrame,
        objectives: Sequence[tuple[str, str]],
        meta: Mapping[str, Any] | None = None,
        store_url: str | None = None,
    ):
        self.history = history
        self.objectives = [(str(n), str(d)) for n, d in objectives]
        self.meta = dict(meta or {})
        self.store_url = store_url

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def objective_names(self) -> list[str]:
        return [n for n, _ in self.objectives]

    @property
    def targets(self) -> list[str]:
        """Hardware targets named in objective names (``latency@raspi4`` -> ``raspi4``), in order."""
        out: list[str] = []
        for n in self.objective_names:
            if "@" in n and n.split("@", 1)[1] not in out:
                out.append(n.split("@", 1)[1])
        return out

    def front_objectives(self, target: str | None = None) -> list[str]:
        """Objectives of one target's front: the shared ones plus those of ``target``."""
        targets = self.targets
        if target is None:
            if len(targets) > 1:
                raise ValueError(
                    f"this run has several targets {targets}; pass target=... (one front per target) "
                    "or objectives=[...]"
                )
            return self.objective_names
        if target not in targets:
            raise ValueError(f"unknown target {target!r}; this run's targets are {targets}")
        return [n for n in self.objective_names if "@" not in n or n.split("@", 1)[1] == target]

    def _front_names(self, target: str | None, objectives: Sequence[str] | None) -> list[str]:
        """The objectives of a front, checked here: a misspelt name would otherwise surface as a bare
        ``KeyError`` from the history DataFrame."""
        if objectives is None:
            return self.front_objectives(target)
        if isinstance(objectives, str):  # one name would be read letter by letter
            objectives = [objectives]
        names = list(objectives)
        unknown = [n for n in names if n not in dict(self.objectives)]
        if unknown:
            raise ValueError(f"unknown objective(s) {unknown}; objectives are {self.objective_names}")
        return names

    def _minimisation(self, names: Sequence[str], df: pd.DataFrame) -> np.ndarray:
        direction = dict(self.objectives)
        cols = [df[n].to_numpy(dtype=np.float64) * (1.0 if direction[n] == "min" else -1.0) for n in names]
        return np.column_stack(cols) if cols else np.zeros((len(df), 0))

    def _candidates(self, names: Sequence[str]) -> pd.DataFrame:
        df = self.history
        ok = df["status"].isin(USABLE_STATUSES) & df["feasible"].astype(bool)
        for n in names:
            ok &= np.isfinite(df[n].to_numpy(dtype=np.float64))
        return df[ok]

    # ------------------------------------------------------------------------------------------ public
    def pareto(self, target: str | None = None, objectives: Sequence[str] | None = None) -> pd.DataFrame:
        """Feasible, successful, non-dominated rows of :attr:`history` (sorted by the first objective).

        Example: ``result.pareto(target="raspi4")`` -- accuracy against raspi4 latency.
        """
        names = self._front_names(target, objectives)
        cand = self._candidates(names)
        if cand.empty:
            return cand.copy()
        mask = nondominated_mask(self._minimisation(names, cand))
        front = cand[mask]
        first = names[0]
        return front.sort_values([first, "order"], ascending=[dict(self.objectives)[first] == "min", True])

    def lacking(self, target: str | None = None, objectives: Sequence[str] | None = None) -> int:
        """How many ``"partial"`` evaluations lack a value of this front's objectives (their target failed:
        e.g. a profile that never measured the config), so are missing from the front.

        Example: ``result.lacking(target="edgetpu")`` -- cells HW-NAS-Bench has no edgetpu latency for.
        """
        names = self._front_names(target, objectives)
        h = self.history
        return int(((h["status"] == "partial") & h[names].isna().any(axis=1)).sum())

    def hypervolume(
        self,
        ref: Mapping[str, float] | Sequence[float],
        target: str | None = None,
        objectives: Sequence[str] | None = None,
        upto: int | None = None,
    ) -> float:
        """Hypervolume of the front, in the objectives' own units, bounded by ``ref``.

        ``ref`` gives, per objective, the worst value that still counts (e.g. the lowest accuracy and highest
        latency of interest), as a mapping by name or a sequence in front-objective order. ``upto`` uses only
        the first ``upto`` evaluations (hypervolume after ``upto`` evaluations).
        """
        names = self._front_names(target, objectives)
        if isinstance(ref, Mapping):
            missing = [n for n in names if n not in ref]
            if missing:
                raise ValueError(f"ref lacks {missing}; give a value for each of {names}")
            ref_values = [float(ref[n]) for n in names]
        else:
            ref_values = [float(x) for x in ref]
            if len(ref_values) != len(names):
                raise ValueError(f"ref has {len(ref_values)} values but the front has objectives {names}")
        direction = dict(self.objectives)
        ref_min = np.array([v if direction[n] == "min" else -v for n, v in zip(names, ref_values)])
        cand = self._candidates(names)
        if upto is not None:
            cand = cand[cand["order"] < upto]
        return float(hypervolume(self._minimisation(names, cand), ref_min)) if len(cand) else 0.0

    def configs(self, rows: pd.DataFrame | None = None) -> list[Config]:
        """The configs of some rows (default: all of :attr:`history`)."""
        rows = self.history if rows is None else rows
        return [Config.from_json(text) for text in rows["config"]]

    def __len__(self) -> int:
        return len(self.history)

    def __repr__(self) -> str:
        n_ok = int((self.history["status"] == "ok").sum()) if len(self.history) else 0
        n_partial = int((self.history["status"] == "partial").sum()) if len(self.history) else 0
        partial = f", {n_partial} partial" if n_partial else ""
        return (
            f"SearchResult({len(self.history)} evaluations, {n_ok} ok{partial}, objectives={self.objective_names}, "
            f"algorithm={self.meta.get('algorithm')!r})"
        )

    @classmethod
    def from_records(
        cls,
        records: Sequence[Mapping[str, Any]],
        objectives: Sequence[tuple[str, str]],
        extra_metrics: Sequence[str] = (),
        meta: Mapping[str, Any] | None = None,
        store_url: str | None = None,
    ) -> SearchResult:
        """Build from store records (see :mod:`nas.search.store`)."""
        names = [n for n, _ in objectives] + [m for m in extra_metrics if m not in dict(objectives)]
        rows = []
        for r in records:
            row = {"order": r["order"], "key": r["key"], "config": r["config"]}
            for n in names:
                row[n] = r["values"].get(n, np.nan)
            row["violation"] = r["violation"]
            row["feasible"] = r["status"] in USABLE_STATUSES and r["violation"] == 0.0
            for k in ("status", "error", "wall_time_s", "worker", "finished_at"):
                row[k] = r.get(k)
            rows.append(row)
        columns = [
            "order",
            "key",
            "config",
            *names,
            "violation",
            "feasible",
            "status",
            "error",
            "wall_time_s",
        ]
        columns += ["worker", "finished_at"]
        history = pd.DataFrame(rows, columns=columns)
        history["feasible"] = history["feasible"].astype(bool)
        return cls(history, objectives, meta, store_url)

    @classmethod
    def load(cls, store: Any) -> SearchResult:
        """Read a finished (or interrupted) run back from its store URL or :class:`~nas.search.store.Store`.

        Example: ``SearchResult.load("sqlite:///runs/search.db").pareto(target="raspi4")``
        """
        from nas.search.store import Store, open_store

        st = open_store(store, create=False)
        try:
            meta = st.read_meta()
            if meta is None:
                raise ValueError(f"store {st.url} holds no search run")
            objectives = [(o["name"], o["direction"]) for o in meta["objectives"]]
            extra = [c["metric"] for c in meta.get("constraints", []) if c.get("own_fn")]
            return cls.from_records(st.records(), objectives, extra, meta, st.url)
        finally:
            # A store opened here is closed here, not at garbage collection: an open SQLite connection keeps
            # the -wal/-shm files beside the database and a lock on it (a notebook, a folder listing, a copy).
            if not isinstance(store, Store):
                st.close()
