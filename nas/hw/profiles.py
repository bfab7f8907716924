"""The hardware profile file format: measured latency per config plus device metadata.

A profile is a plain table, one row per measured config, saved as two files written atomically:

* ``<path>`` (``.csv`` or ``.csv.gz``) with the columns ``config_json, key, latency_ms, latency_iqr_ms,
  latency_cv, repeats`` followed by any extra metric columns (``energy_mj``...). An empty statistic cell means
  "not reported" (published tables give one number per config); ``repeats == 0`` means the same.
* ``<path>.meta.json`` with the format tag and version, the space name, the column list, the row count, a SHA-256
  of the table file (so a table that was truncated or swapped is caught on load) and the free-form ``metadata``
  (device, backend, batch size, threads, CPU model, library versions, source and citation).

Example:
    >>> import tempfile, os
    >>> from nas import Config
    >>> p = Profile("toy", [Config({"k": 3}), Config({"k": 5})], [1.0, 2.5], repeats=[10, 10],
    ...             metadata={"device": "laptop", "backend": "torch"})
    >>> path = os.path.join(tempfile.mkdtemp(), "toy.csv.gz")
    >>> p.save(path)
    >>> q = Profile.load(path)
    >>> q.latencies.tolist(), q.metadata["device"]
    ([1.0, 2.5], 'laptop')
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.atomic import write_bytes
from nas.space import Config, InvalidConfigError

__all__ = ["BASE_COLUMNS", "FORMAT", "FORMAT_VERSION", "Profile", "ProfileFormatError", "meta_path"]

FORMAT = "nas-profile"
FORMAT_VERSION = 1
BASE_COLUMNS = ("config_json", "key", "latency_ms", "latency_iqr_ms", "latency_cv", "repeats")


class ProfileFormatError(ValueError):
    """A profile file is missing, corrupted, or not a profile at all; the message names the file and the fault."""


def meta_path(path: str | os.PathLike[str]) -> Path:
    """Where the metadata JSON of the profile table ``path`` lives: ``<path>.meta.json``."""
    return Path(str(path) + ".meta.json")


def _pending_meta_path(path: str | os.PathLike[str]) -> Path:
    # The metadata of a table being saved, written before the table: see Profile.save.
    return Path(str(path) + ".meta.json.pending")


def _finish_interrupted_save(path: Path, table: bytes) -> bool:
    """Complete a save cut between renaming the new table and its metadata into place; True when it did.

    The pending metadata counts only when its checksum is the table's, so a save cut before the table was
    renamed (the old table and old metadata still agree) leaves nothing to finish.
    """
    pending = _pending_meta_path(path)
    try:
        meta = json.loads(pending.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not isinstance(meta, dict) or meta.get("table_sha256") != hashlib.sha256(table).hexdigest():
        return False
    try:
        os.replace(pending, meta_path(path))
    except OSError:
        return False  # a read-only folder: leave it to a writable session, report the mismatch as before
    return True


def _float_cell(x: float) -> str:
    # repr round-trips exactly; NaN ("not reported") becomes an empty cell.
    return "" if math.isnan(x) else repr(float(x))


def _parse_float(text: str, what: str) -> float:
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ProfileFormatError(f"{what}: {text!r} is not a number") from None


def _as_column(values: Any, n: int, name: str, fill: float = math.nan) -> np.ndarray:
    if values is None:
        return np.full(n, fill, dtype=np.float64)
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"profile column {name!r} has {arr.shape[0]} values for {n} configs")
    return arr


class Profile:
    """Measured latency (and optional extra metrics) of configs of one search space on one device.

    Args:
        space: name of the search space the configs belong to (checked when turning the profile into arrays).
        configs: the measured configs (mappings are converted to :class:`nas.Config`).
        latency_ms: median latency of each config in milliseconds (finite, > 0).
        latency_iqr_ms: inter-quartile range of the repeats in ms, or ``None``/NaN when not reported.
        latency_cv: coefficient of variation (std / mean) of the repeats, or ``None``/NaN when not reported.
        repeats: number of timed repeats per config; 0 when not reported.
        extras: further per-config metrics, e.g. ``{"energy_mj": [...]}`` (NaN allowed for missing values).
        metadata: JSON-serialisable facts about the measurement: device, backend, batch_size, threads, cpu,
            library versions, source and citation, notes.

    Example:
        >>> p = Profile("toy", [{"k": 3}], [1.5], metadata={"device": "cpu"})
        >>> len(p), float(p.latencies[0])
        (1, 1.5)
    """

    def __init__(
        self,
        space: str,
        configs: Sequence[Mapping[str, Any]],
        latency_ms: Sequence[float] | np.ndarray,
        latency_iqr_ms: Sequence[float] | np.ndarray | None = None,
        latency_cv: Sequence[float] | np.ndarray | None = None,
        repeats: Sequence[int] | np.ndarray | None = None,
        extras: Mapping[str, Sequence[float] | np.ndarray] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ):
        if not isinstance(space, str) or not space:
            raise ValueError(f"a profile needs the name of its search space, got {space!r}")
        self.space = space
        self._configs = [c if isinstance(c, Config) else Config(c) for c in configs]
        n = len(self._configs)
        self.latency_ms = _as_column(latency_ms, n, "latency_ms")
        bad = np.flatnonzero(~np.isfinite(self.latency_ms) | (self.latency_ms <= 0))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                # the config's key, not its JSON: a mobilenetv3 config runs to 2,000 characters on one line
                f"latency_ms must be finite and > 0; row {i} (config key {self._configs[i].key}) has "
                f"{float(self.latency_ms[i])} ({bad.size} bad rows). Drop unmeasured configs instead of storing them."
            )
        self.latency_iqr_ms = _as_column(latency_iqr_ms, n, "latency_iqr_ms")
        self.latency_cv = _as_column(latency_cv, n, "latency_cv")
        rep = _as_column(repeats, n, "repeats", fill=0.0)
        if np.any(~np.isfinite(rep)) or np.any(rep < 0) or np.any(rep != np.round(rep)):
            raise ValueError("repeats must be non-negative integers (0 = not reported)")
        self.repeats = rep.astype(np.int64)
        self.extras: dict[str, np.ndarray] = {}
        for name, values in dict(extras or {}).items():
            if not isinstance(name, str) or not name or name in BASE_COLUMNS or "," in name:
                raise ValueError(
                    f"extra column name {name!r} is empty, has a comma or clashes with {BASE_COLUMNS}"
                )
            self.extras[name] = _as_column(values, n, name)
        self.metadata: dict[str, Any] = dict(metadata or {})
        try:
            json.dumps(self.metadata, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"profile metadata must be plain JSON (str/number/bool/list/dict): {exc}"
            ) from None
        keys = [c.key for c in self._configs]
        if len(set(keys)) != n:
            first: dict[str, int] = {}
            for i, k in enumerate(keys):
                if k in first:  # the key, not the JSON: a mobilenetv3 config is 2,000 characters long
                    raise ValueError(
                        f"config key {k} is listed more than once (rows {first[k]} and {i}, counting from 0 "
                        "after the header); keep one row per config"
                    )
                first[k] = i

    # ------------------------------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._configs)

    def __repr__(self) -> str:
        device = self.metadata.get("device", "?")
        extra = f", extras={list(self.extras)}" if self.extras else ""
        return f"Profile(space={self.space!r}, device={device!r}, {len(self)} configs{extra})"

    @property
    def configs(self) -> list[Config]:
        """The measured configs, in file order."""
        return list(self._configs)

    @property
    def latencies(self) -> np.ndarray:
        """Median latency of each config in ms (a copy)."""
        return self.latency_ms.copy()

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names of the table file."""
        return BASE_COLUMNS + tuple(self.extras)

    def metric(self, name: str = "latency_ms") -> np.ndarray:
        """One metric column by name: ``latency_ms`` or an extra such as ``energy_mj``."""
        if name == "latency_ms":
            return self.latencies
        if name in self.extras:
            return self.extras[name].copy()
        raise KeyError(f"profile has no metric {name!r}; available: {['latency_ms', *self.extras]}")

    def to_arrays(self, space: Any, metric: str = "latency_ms") -> tuple[np.ndarray, np.ndarray]:
        """Predictor inputs ``(X, y)``: ``space.features(cfg)`` rows and the chosen metric.

        Rows whose metric is missing (NaN) are left out. Raises ``ValueError`` when ``space`` is not the space
        this profile was measured in.

        Example:
            >>> from nas import Choice, SearchSpace
            >>> space = SearchSpace("toy", [Choice("act", ("relu", "gelu"))])
            >>> X, y = Profile("toy", [{"act": "relu"}, {"act": "gelu"}], [1.0, 2.0]).to_arrays(space)
            >>> X.shape, y.tolist()
            ((2, 2), [1.0, 2.0])
        """
        if getattr(space, "name", None) != self.space:
            raise ValueError(
                f"profile was measured in space {self.space!r} but got space {getattr(space, 'name', space)!r}"
            )
        y = self.metric(metric)
        keep = np.flatnonzero(np.isfinite(y))
        configs = [self._configs[i] for i in keep]
        try:
            X = space.features_matrix(configs)
        except InvalidConfigError:
            # a hand-edited row, or a space that changed since the measurement: say which row
            for i, cfg in zip(keep, configs):
                try:
                    space.features(cfg)
                except InvalidConfigError as exc:
                    raise InvalidConfigError(
                        f"profile row {int(i)} (counting from 0 after the header; config key {cfg.key}) is not a "
                        f"config of space {self.space!r} as it is now: {exc}"
                    ) from None
            raise
        return X, y[keep]

    def subset(self, rows: Sequence[int] | np.ndarray) -> Profile:
        """A profile with only the given rows (same metadata)."""
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        return Profile(
            self.space,
            [self._configs[i] for i in idx],
            self.latency_ms[idx],
            self.latency_iqr_ms[idx],
            self.latency_cv[idx],
            self.repeats[idx],
            {k: v[idx] for k, v in self.extras.items()},
            self.metadata,
        )

    def to_frame(self) -> Any:
        """The table as a ``pandas.DataFrame`` (pandas imported lazily)."""
        import pandas as pd

        data: dict[str, Any] = {
            "config_json": [c.to_json() for c in self._configs],
            "key": [c.key for c in self._configs],
            "latency_ms": self.latency_ms,
            "latency_iqr_ms": self.latency_iqr_ms,
            "latency_cv": self.latency_cv,
            "repeats": self.repeats,
        }
        data.update(self.extras)
        return pd.DataFrame(data)

    # ------------------------------------------------------------------------------------------ files
    def _table_bytes(self, gz: bool) -> bytes:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        extras = list(self.extras.values())
        for i, cfg in enumerate(self._configs):
            writer.writerow(
                [
                    cfg.to_json(),
                    cfg.key,
                    _float_cell(self.latency_ms[i]),
                    _float_cell(self.latency_iqr_ms[i]),
                    _float_cell(self.latency_cv[i]),
                    str(int(self.repeats[i])),
                    *(_float_cell(col[i]) for col in extras),
                ]
            )
        raw = buf.getvalue().encode()
        # mtime=0 keeps the gzip bytes (and the checksum) reproducible from run to run.
        return gzip.compress(raw, compresslevel=9, mtime=0) if gz else raw

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the table (``.csv`` or ``.csv.gz``) and ``<path>.meta.json`` beside it, each atomically.

        The metadata (which carries the table's checksum) is first written beside its final name
        (``<path>.meta.json.pending``), then the table and then the metadata are renamed into place. A crash
        before the table's rename leaves the old pair; one after it leaves the new table with its pending
        metadata, which :meth:`load` (and so the next save) renames into place. The pair never mixes two
        versions and never needs the user to restore a file.
        """
        path = Path(path)
        if not (path.name.endswith(".csv") or path.name.endswith(".csv.gz")):
            raise ValueError(f"profile path {str(path)!r} must end in .csv or .csv.gz")
        table = self._table_bytes(gz=path.name.endswith(".gz"))
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "space": self.space,
            "columns": list(self.columns),
            "rows": len(self),
            "table_sha256": hashlib.sha256(table).hexdigest(),
            "metadata": self.metadata,
        }
        pending = _pending_meta_path(path)
        write_bytes(pending, (json.dumps(meta, indent=2, allow_nan=False) + "\n").encode())
        write_bytes(path, table)
        os.replace(pending, meta_path(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Profile:
        """Read a profile written by :meth:`save`, checking that table and metadata belong together.

        Raises :class:`ProfileFormatError` naming the file and the fault for a missing, corrupted or foreign file.
        """
        path = Path(path)
        mpath = meta_path(path)
        if not path.is_file():
            raise ProfileFormatError(f"profile table {str(path)!r} does not exist")
        data = path.read_bytes()
        meta_matches = False
        with contextlib.suppress(OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            meta_matches = (
                json.loads(mpath.read_text()).get("table_sha256") == hashlib.sha256(data).hexdigest()
            )
        if not meta_matches and _pending_meta_path(path).exists():
            _finish_interrupted_save(path, data)
        if not mpath.is_file():
            raise ProfileFormatError(
                f"{str(path)!r} has no metadata file {mpath.name!r} beside it; is it a profile saved by "
                "nas.hw.Profile.save? A table measured elsewhere (nn-Meter, a spreadsheet) becomes one in Python: "
                "Profile(space_name, configs, latency_ms, metadata={'device': ...}).save(path)"
            )
        try:
            meta = json.loads(mpath.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProfileFormatError(f"{str(mpath)!r} is not valid JSON: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ProfileFormatError(
                f'{str(mpath)!r} is not a profile metadata file (expected "format": {FORMAT!r})'
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise ProfileFormatError(
                f"{str(mpath)!r}: format_version {meta.get('format_version')!r} is not supported "
                f"(this version reads {FORMAT_VERSION})"
            )
        for field_name, kind in (("space", str), ("columns", list), ("rows", int), ("metadata", dict)):
            if not isinstance(meta.get(field_name), kind):
                raise ProfileFormatError(
                    f"{str(mpath)!r}: field {field_name!r} is missing or not a {kind.__name__}"
                )
        columns = tuple(meta["columns"])
        if columns[: len(BASE_COLUMNS)] != BASE_COLUMNS:
            raise ProfileFormatError(
                f"{str(mpath)!r}: columns must start with {list(BASE_COLUMNS)}, got {list(columns)}"
            )
        if "table_sha256" in meta and hashlib.sha256(data).hexdigest() != meta["table_sha256"]:
            raise ProfileFormatError(
                f"{str(path)!r} does not match the checksum in {mpath.name!r}: the table was changed, truncated or "
                'replaced after it was saved (if you edited it on purpose, delete "table_sha256" from '
                f'{mpath.name!r} and keep its "rows" and "columns" in step with the table)'
            )
        try:
            # utf-8-sig: a table saved by a spreadsheet ("CSV UTF-8") starts with a byte-order mark
            text = (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8-sig")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ProfileFormatError(f"{str(path)!r} is neither a readable CSV nor gzip CSV: {exc}") from None
        rows = list(csv.reader(io.StringIO(text)))
        if not rows or tuple(rows[0]) != columns:
            found = rows[0] if rows else []
            raise ProfileFormatError(
                f"{str(path)!r}: header {found} does not match the metadata columns {list(columns)}"
            )
        # (line number, cells); blank lines (a newline too many at the end of a hand-edited file) hold no config
        body = [(line_no, row) for line_no, row in enumerate(rows[1:], start=2) if row]
        if len(body) != meta["rows"]:
            raise ProfileFormatError(
                f"{str(path)!r} has {len(body)} rows but its metadata says {meta['rows']}"
            )
        n_extra = len(columns) - len(BASE_COLUMNS)
        configs, lat, iqr, cv, rep = [], [], [], [], []
        extras: list[list[float]] = [[] for _ in range(n_extra)]
        for line_no, row in body:
            where = f"{str(path)!r} line {line_no}"
            if len(row) != len(columns):
                raise ProfileFormatError(f"{where}: {len(row)} fields, expected {len(columns)}")
            try:
                cfg = Config.from_json(row[0])
            except InvalidConfigError as exc:
                raise ProfileFormatError(f"{where}: bad config_json: {exc}") from None
            if cfg.key != row[1]:
                raise ProfileFormatError(
                    f"{where}: key {row[1]!r} does not match its config (expected {cfg.key!r})"
                )
            configs.append(cfg)
            lat.append(_parse_float(row[2], f"{where} latency_ms"))
            iqr.append(_parse_float(row[3], f"{where} latency_iqr_ms"))
            cv.append(_parse_float(row[4], f"{where} latency_cv"))
            try:
                rep.append(int(row[5]))
            except ValueError:
                raise ProfileFormatError(f"{where}: repeats {row[5]!r} is not an integer") from None
            for j in range(n_extra):
                extras[j].append(
                    _parse_float(row[len(BASE_COLUMNS) + j], f"{where} {columns[len(BASE_COLUMNS) + j]}")
                )
        try:
            return cls(
                meta["space"],
                configs,
                lat,
                iqr,
                cv,
                rep,
                dict(zip(columns[len(BASE_COLUMNS) :], extras)),
                meta["metadata"],
            )
        except ValueError as exc:
            raise ProfileFormatError(f"{str(path)!r}: {exc}") from None
