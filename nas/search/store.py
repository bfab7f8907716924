"""The evaluation store: every finished evaluation, written as it finishes, so a search can resume.

SQLite by default (``sqlite:///runs/search.db`` or a plain path; WAL journal so readers never block the writer),
PostgreSQL by URL (``postgresql://user@host/db``, needs ``psycopg``). A store holds one run: its metadata (space,
objectives, constraints, algorithm, seed, budget) is written first and checked when the run resumes.

Rows are plain JSON and numbers; nothing is pickled.

Example:
    >>> store = open_store("sqlite:///:memory:")
    >>> store.write_meta({"space": "toy"})
    >>> store.add({"key": "k1", "config": "{}", "values": {"size": 1.0}, "violation": 0.0,
    ...            "status": "ok", "error": None, "wall_time_s": 0.1, "worker": "local"})
    0
    >>> len(store.records())
    1
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["Store", "StoreMismatchError", "open_store"]

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS evaluations (
        ord INTEGER NOT NULL,
        key TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        objective_values TEXT NOT NULL,
        violation DOUBLE PRECISION,
        status TEXT NOT NULL,
        error TEXT,
        wall_time_s DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        worker TEXT
    )""",
]


class StoreMismatchError(ValueError):
    """The store holds a different run than the one being resumed (or a run where a new one was started)."""


class Store:
    """A SQL store of one search run. Use :func:`open_store` to make one from a URL."""

    def __init__(
        self, url: str, connect: Any, placeholder: str, upsert_ignore: str, begin_write: str | None = None
    ):
        self.url = url
        self._connect = connect
        self._ph = placeholder
        self._insert = upsert_ignore
        self._begin_write = begin_write
        self._lock = threading.Lock()  # one connection, used from the runner's threads
        self._conn = connect()
        with self._lock:
            cur = self._conn.cursor()
            for stmt in _SCHEMA:
                cur.execute(stmt)
            self._conn.commit()

    def _q(self, sql: str) -> str:
        return sql.replace("?", self._ph)

    # ------------------------------------------------------------------------------------------ metadata
    def read_meta(self) -> dict[str, Any] | None:
        """The stored run metadata, or ``None`` for an empty store."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute(self._q("SELECT value FROM meta WHERE name = ?"), ("run",))
            row = cur.fetchone()
        return None if row is None else json.loads(row[0])

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        text = json.dumps(dict(meta), sort_keys=True)
        with self._lock:
            cur = self._conn.cursor()
            cur.execute(self._q("DELETE FROM meta WHERE name = ?"), ("run",))
            cur.execute(self._q("INSERT INTO meta (name, value) VALUES (?, ?)"), ("run", text))
            self._conn.commit()

    def check_meta(self, meta: Mapping[str, Any], resume: bool) -> None:
        """Write ``meta`` into an empty store, or check it against the stored run.

        Raises :class:`StoreMismatchError` when the store already holds a run and ``resume`` is false, or when
        resuming a run whose metadata differ (naming every differing field). A run that never finished an
        evaluation (it could not reach its Ray cluster, or was stopped at once) has nothing to lose and is
        replaced, so fixing the cause and rerunning the same command works.

        The ``budget`` may change on resume, so a finished run can be extended (as more trials extend an Optuna
        study): the stored evaluations are replayed into the searcher, which then asks for the rest, as in any
        resumed run. It cannot go below the evaluations already done.
        """
        stored = self.read_meta()
        n_done = self.count()
        if stored is None and n_done:
            raise StoreMismatchError(f"store {self.url} has evaluations but no run metadata; use a new store")
        if stored is None or n_done == 0:
            self.write_meta(meta)
            return
        if not resume:
            raise StoreMismatchError(
                f"store {self.url} already holds a run ({stored.get('algorithm')} on {stored.get('space')}, "
                f"{n_done} evaluations); pass resume=True (nas search --resume) to continue it or use a new store"
            )
        wanted = json.loads(json.dumps(dict(meta), sort_keys=True))  # same JSON normalisation as stored
        diffs = [
            f"{k}: stored {stored.get(k)!r}, requested {wanted.get(k)!r}"
            for k in sorted(set(stored) | set(wanted))
            if stored.get(k) != wanted.get(k) and k != "budget"
        ]
        if diffs:
            raise StoreMismatchError(
                f"cannot resume the run in {self.url}: it was started with different settings; "
                + "; ".join(diffs)
            )
        budget = wanted.get("budget")
        if budget is not None and budget != stored.get("budget"):
            if budget < n_done:
                raise StoreMismatchError(
                    f"cannot resume the run in {self.url} with budget {budget}: it already holds {n_done} "
                    f"evaluations; give a budget of at least {n_done} (stored: {stored.get('budget')})"
                )
            self.write_meta({**stored, "budget": budget})

    # ------------------------------------------------------------------------------------------ records
    def add(self, record: Mapping[str, Any]) -> int:
        """Write one finished evaluation (committed before returning); returns its order, or -1 for a known key."""
        violation = record.get("violation")
        if violation is not None and not math.isfinite(violation):
            violation = None  # SQL has no inf; None reads back as "failed / unknown"
        values = {
            k: (None if v is None or not math.isfinite(v) else float(v)) for k, v in record["values"].items()
        }
        with self._lock:
            cur = self._conn.cursor()
            if self._begin_write:
                # Take the write lock before reading MAX(ord): upgrading a read transaction fails at once when
                # another connection (a second driver, a report reading the file) wrote in between.
                cur.execute(self._begin_write)
            cur.execute("SELECT COALESCE(MAX(ord), -1) + 1 FROM evaluations")
            order = int(cur.fetchone()[0])
            cur.execute(
                self._q(
                    f"{self._insert} evaluations (ord, key, config, objective_values, violation, status, error, "
                    "wall_time_s, finished_at, worker) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    + (" ON CONFLICT (key) DO NOTHING" if self._ph == "%s" else "")
                ),
                (
                    order,
                    record["key"],
                    record["config"],
                    json.dumps(values, sort_keys=True),
                    violation,
                    record.get("status", "ok"),
                    record.get("error"),
                    record.get("wall_time_s"),
                    record.get("finished_at", time.time()),
                    record.get("worker"),
                ),
            )
            inserted = cur.rowcount == 1
            self._conn.commit()
        return order if inserted else -1

    def records(self) -> list[dict[str, Any]]:
        """All evaluations in the order they finished."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute(
                "SELECT ord, key, config, objective_values, violation, status, error, wall_time_s, finished_at, "
                "worker FROM evaluations ORDER BY ord"
            )
            rows = cur.fetchall()
        out = []
        for r in rows:
            values = {k: (math.nan if v is None else float(v)) for k, v in json.loads(r[3]).items()}
            out.append(
                {
                    "order": int(r[0]),
                    "key": r[1],
                    "config": r[2],
                    "values": values,
                    "violation": math.inf if r[4] is None else float(r[4]),
                    "status": r[5],
                    "error": r[6],
                    "wall_time_s": r[7],
                    "finished_at": r[8],
                    "worker": r[9],
                }
            )
        return out

    def count(self) -> int:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("SELECT COUNT(*) FROM evaluations")
            return int(cur.fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"


def _check_sqlite_file(path: Path, url: str) -> None:
    """Refuse an existing file that is not a readable SQLite store, before anything writes to it.

    Opened read-only, so the file stays as it was: a damaged database or another kind of file would otherwise
    end in a ``sqlite3.DatabaseError`` traceback, and another program's database would silently get the store's
    tables added to it.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.OperationalError:
        return  # locked, unreadable directory, ...: connecting for real reports it
    except sqlite3.DatabaseError as exc:
        check = str(exc)
    if check != "ok":
        raise ValueError(
            f"store {url}: {str(path)!r} is not a readable SQLite database ({check}); it is damaged or another "
            "kind of file: restore it from a copy, or use a new store path"
        )
    if tables and not tables & {"meta", "evaluations"}:
        raise ValueError(
            f"store {url}: {str(path)!r} is a SQLite database of something else (tables: "
            f"{', '.join(sorted(tables))}); use a new store path"
        )


def _sqlite(path: str, url: str, create: bool = True) -> Store:
    if path != ":memory:":
        if not create and not Path(path).expanduser().is_file():
            # sqlite3.connect would create an empty database: reading must not leave files behind.
            raise FileNotFoundError(
                f"store {url}: no such file {path!r}; check the path (a search writes it)"
            )
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        _check_sqlite_file(Path(path).expanduser(), url)

    def connect() -> sqlite3.Connection:
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) so writes wait for the lock.
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30.0, isolation_level=None)
        if path != ":memory:":
            # WAL: a crash loses nothing committed and readers (nas report) never block the writer.
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.DatabaseError as exc:  # e.g. a profile .csv passed where the .db belongs
                conn.close()
                raise ValueError(
                    f"store {url}: {path!r} is not a SQLite database ({exc}); pass the .db file a search "
                    "wrote, or a new path"
                ) from None
            conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    return Store(url, connect, "?", "INSERT OR IGNORE INTO", begin_write="BEGIN IMMEDIATE")


def _postgres(url: str) -> Store:
    try:
        import psycopg
    except ImportError:
        raise ImportError(
            f"store URL {url!r} needs the PostgreSQL driver psycopg: pip install 'psycopg[binary]'"
        ) from None
    return Store(url, lambda: psycopg.connect(url), "%s", "INSERT INTO")


def open_store(url: str | os.PathLike[str] | Store | None, create: bool = True) -> Store:
    """A :class:`Store` from ``sqlite:///path.db``, ``postgresql://...``, a plain file path, or ``None``
    (an in-memory SQLite store that lasts as long as the run).

    ``create=False`` opens an existing store only: a missing SQLite file raises ``FileNotFoundError`` instead of
    being created empty (what readers such as :meth:`SearchResult.load` want).

    Example:
        >>> open_store(None).url
        'sqlite:///:memory:'
    """
    if isinstance(url, Store):
        return url
    if url is None:
        return _sqlite(":memory:", "sqlite:///:memory:")
    text = os.fspath(url)
    if text.startswith("sqlite:///"):
        return _sqlite(text[len("sqlite:///") :], text, create)
    if text.startswith(("postgresql://", "postgres://")):
        return _postgres(text)
    if "://" in text:
        raise ValueError(
            f"unsupported store URL {text!r}; use sqlite:///path.db or postgresql://user@host/db"
        )
    return _sqlite(text, f"sqlite:///{text}", create)
