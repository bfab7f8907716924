"""Search reports: Pareto-front plots and hypervolume curves per hardware target, as PNG, CSV and one HTML page.

A target without a front (every evaluation of it failed, or none has a finite value) is left out with a warning
and a line on the page saying why; the report fails only when no target has one. The report owns the files it
writes: it lists them in ``report_files.json`` and, when run again into the same folder, removes the files of its
last run that this run does not rewrite (a target no longer in the store); other files there are never touched,
and a folder holding an ``index.html``, ``summary.json`` or plot of the same name that no report wrote is refused
rather than overwritten.

Example:
    >>> from nas.report import write_report  # doctest: +SKIP
    >>> write_report("sqlite:///runs/search.db", "runs/report")  # doctest: +SKIP
    PosixPath('runs/report/index.html')
"""

from __future__ import annotations

import html
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nas.atomic import write_bytes
from nas.search.result import USABLE_STATUSES, SearchResult

__all__ = ["REPORT_FILES", "default_reference", "hypervolume_curve", "write_report"]

log = logging.getLogger(__name__)

#: the list of files the last report wrote into its folder (so a new report can remove the ones it no longer has)
REPORT_FILES = "report_files.json"
#: the per-target files a report writes; only such names are ever removed, whatever the list says
_TARGET_FILE = re.compile(r"(front|hv)_[^/\\]+\.(png|csv)")
#: (prefix, extension) of the files written for each target with a front
_FILES = (("front", "png"), ("hv", "png"), ("front", "csv"))
#: the files every report writes besides the per-target ones
_PAGE_FILES = ("index.html", "summary.json", REPORT_FILES)
#: marks a page as a report's own, so that a later report may replace it
_GENERATOR = "<meta name='generator' content='nas report'>"


def _fronts(result: SearchResult) -> list[tuple[str, list[str]]]:
    """(label, objective names) of each front: one per target, or one for a run without targets."""
    if result.targets:
        return [(t, result.front_objectives(t)) for t in result.targets]
    return [("all", result.objective_names)]


def _file_stem(label: str, used: set[str]) -> str:
    """A file-name-safe form of ``label``, unique among ``used`` (which it joins): "my cpu" and "my_cpu" must not
    share (overwrite) their files."""
    safe = base = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
    for n in range(2, len(used) + 2):
        if safe not in used:
            break
        safe = f"{base}-{n}"
    used.add(safe)
    return safe


def _no_front_reason(result: SearchResult, names: Sequence[str]) -> str | None:
    """Why the front over ``names`` is empty (no evaluation to plot or to bound a hypervolume), or ``None``."""
    h = result.history
    usable = h["status"].isin(USABLE_STATUSES).to_numpy() & h["feasible"].to_numpy(dtype=bool)
    if not usable.any():
        n_failed = int((~h["status"].isin(USABLE_STATUSES)).sum())
        return (
            f"none of the {len(h)} evaluations succeeded and met the constraints "
            f"({n_failed} failed, {len(h) - n_failed} infeasible)"
        )
    finite = {n: np.isfinite(h[n].to_numpy(dtype=np.float64)) & usable for n in names}
    missing = [n for n in names if not finite[n].any()]
    if missing:
        return (
            f"{', '.join(missing)} has no finite value in any of the {int(usable.sum())} successful feasible "
            "evaluations"
        )
    if not np.logical_and.reduce(list(finite.values())).any():
        return f"no successful feasible evaluation has finite values for all of {', '.join(names)}"
    return None


def default_reference(result: SearchResult, names: Sequence[str], margin: float = 0.1) -> dict[str, float]:
    """Reference point for hypervolume: the worst observed value of each objective, pushed out by ``margin``
    of the observed range (so that extreme front points still count)."""
    direction = dict(result.objectives)
    ok = result.history[result.history["status"].isin(USABLE_STATUSES) & result.history["feasible"]]
    ref = {}
    for n in names:
        v = ok[n].to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            raise ValueError(f"no successful feasible evaluation has a value for {n!r}; nothing to report")
        span = float(v.max() - v.min()) or max(abs(float(v.max())), 1.0)
        ref[n] = float(v.max() + margin * span) if direction[n] == "min" else float(v.min() - margin * span)
    return ref


def hypervolume_curve(
    result: SearchResult, names: Sequence[str], ref: dict[str, float], points: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """Hypervolume after the first n evaluations, for up to ``points`` values of n."""
    total = len(result.history)
    steps = (
        np.unique(np.linspace(1, total, num=min(points, total)).round().astype(int))
        if total
        else np.array([])
    )
    hv = np.array([result.hypervolume(ref, objectives=names, upto=int(n)) for n in steps])
    return steps, hv


def _plain(text: str) -> str:
    """``text`` for a matplotlib label, shown as written: a target named after a file such as ``cost$_$.json``
    would otherwise be read as mathtext between its ``$`` signs (and a malformed one fails the whole report)."""
    return text.replace("$", r"\$")


def _plot_front(result: SearchResult, names: Sequence[str], label: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    df = result.history[result.history["status"].isin(USABLE_STATUSES)]
    front = result.pareto(objectives=names)
    # x: the target-specific (cost) objective when there is one, y: the first shared objective (quality).
    x_name = next((n for n in names if "@" in n), names[-1])
    y_name = next((n for n in names if n != x_name), names[0])
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    feasible = df["feasible"].astype(bool)
    ax.scatter(df.loc[feasible, x_name], df.loc[feasible, y_name], s=10, c="#9aa7b8", label="evaluated")
    if (~feasible).any():
        ax.scatter(
            df.loc[~feasible, x_name],
            df.loc[~feasible, y_name],
            s=10,
            marker="x",
            c="#d99",
            label="infeasible",
        )
    f = front.sort_values(x_name)
    ax.step(f[x_name], f[y_name], where="post", c="#c0392b", lw=1.2)
    ax.scatter(f[x_name], f[y_name], s=22, c="#c0392b", label="Pareto front", zorder=3)
    ax.set_xlabel(_plain(x_name))
    ax.set_ylabel(_plain(y_name))
    ax.set_title(_plain(f"{label}: {len(f)} Pareto-optimal of {len(df)} evaluated"))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png(fig)


def _plot_hv(steps: np.ndarray, hv: np.ndarray, label: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    ax.plot(steps, hv, c="#2c3e50")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hypervolume")
    ax.set_title(_plain(f"{label}: hypervolume over the run"))
    ax.grid(alpha=0.3)
    return _png(fig)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _table_html(df: pd.DataFrame, names: Sequence[str]) -> str:
    cols = ["order", "key", *names, "config"]
    rows = []
    for _, r in df[cols].iterrows():
        cells = []
        for c in cols:
            v = r[c]
            text = f"{v:.4g}" if isinstance(v, float) else str(v)
            if c == "config":
                text = f"<code>{html.escape(text)}</code>"
            else:
                text = html.escape(text)
            cells.append(f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _previous_files(out: Path) -> set[str]:
    """Per-target files the last report listed in ``out`` (none when there is no list or it is unreadable).

    Only plain names of the kind a report writes count: a list edited by hand cannot make the report delete a
    file elsewhere, or a file of another kind."""
    try:
        listed = json.loads((out / REPORT_FILES).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    if not isinstance(listed, list):
        return set()
    return {n for n in listed if isinstance(n, str) and Path(n).name == n and _TARGET_FILE.fullmatch(n)}


def _is_report_folder(out: Path) -> bool:
    """Whether ``out`` holds a report written by :func:`write_report`: its file list, or (for a report written
    before reports listed their files) a page with a report's title."""
    if (out / REPORT_FILES).is_file():
        return True
    try:
        with open(out / "index.html", encoding="utf-8", errors="replace") as f:
            head = f.read(2048)
    except OSError:
        return False
    return _GENERATOR in head or "<title>nas search report" in head


def _refuse_foreign_files(out: Path, names: set[str]) -> None:
    """Raise ``FileExistsError`` when writing ``names`` into ``out`` would replace files no report wrote: a report
    sent to a folder of the user's must not overwrite their ``index.html`` (or anything else)."""
    if _is_report_folder(out):
        return
    clashes = sorted(n for n in names if (out / n).exists())
    if clashes:
        raise FileExistsError(
            f"{out} holds {', '.join(clashes)}, which a report would overwrite, and no report wrote them (the "
            f"folder has no {REPORT_FILES}); choose an empty or new --out folder, or move those files away"
        )


def _nothing_to_report(result: SearchResult, fronts: Sequence[tuple[str, Any, Any, str | None]]) -> str:
    """The error for a run where no target has a front: each target's reason and the first evaluation error."""
    distinct = {reason for *_, reason in fronts}
    reasons = (
        str(next(iter(distinct)))
        if len(distinct) == 1  # e.g. every evaluation failed: the same for each target
        else "; ".join(f"{label}: {reason}" for label, _, _, reason in fronts)
    )
    errors = result.history["error"].dropna() if "error" in result.history else pd.Series(dtype=object)
    hint = f"; first error: {str(errors.iloc[0])[:300]}" if len(errors) else ""
    return (
        f"nothing to report, no target has a Pareto front: {reasons}{hint}; fix the objectives (or "
        "constraints) and run the search again"
    )


def _list_files(out: Path, names: set[str]) -> None:
    write_bytes(out / REPORT_FILES, json.dumps({"files": sorted(names)}, indent=1).encode())


def write_report(source: SearchResult | str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``index.html`` with one section per hardware target: a front plot, a hypervolume curve and the
    Pareto-optimal configs (also as ``front_<target>.csv``), plus ``summary.json``.

    ``source`` is a :class:`SearchResult` or a store URL/path (``sqlite:///runs/search.db``).
    Returns the path of ``index.html``. Every file is written atomically, and only once all of them are
    rendered: a report that fails (a plot, the page) leaves ``out_dir`` as it was.

    A target without a front (no successful feasible evaluation with finite values) gets a line saying why
    instead of its plots, a logged warning and an entry in ``summary.json["skipped"]``; a ``ValueError`` when
    no target has a front. Per-target files of an earlier report in ``out_dir`` that this one does not rewrite
    are removed (only those listed in its ``report_files.json``); a ``FileExistsError`` (before anything is
    written) when ``out_dir`` holds files of the names a report writes that no report wrote.
    """
    result = source if isinstance(source, SearchResult) else SearchResult.load(str(source))
    if not len(result):
        raise ValueError("the run has no evaluations yet; run a search first (nas search ...)")
    used: set[str] = set()
    fronts = [
        (label, names, _file_stem(label, used), _no_front_reason(result, names))
        for label, names in _fronts(result)
    ]
    if all(reason is not None for *_, reason in fronts):
        raise ValueError(_nothing_to_report(result, fronts))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; a report is a folder (index.html, plots, CSVs)")
    stems = [stem for _, _, stem, reason in fronts if reason is None]
    written = {f"{kind}_{stem}.{ext}" for stem in stems for kind, ext in _FILES}
    if out.is_dir():
        _refuse_foreign_files(out, written | set(_PAGE_FILES))
    # Every file is rendered in memory before the first is written: a plot or page that fails (matplotlib
    # refusing a label, say) must leave no half-written report behind (plots of one target, no page).
    contents: dict[str, bytes] = {}
    summary: dict[str, Any] = {"meta": result.meta, "evaluations": len(result), "fronts": {}, "skipped": {}}
    sections = []
    for label, names, stem, reason in fronts:
        if reason is not None:
            log.warning("no Pareto front for target %s, left out of the report: %s", label, reason)
            summary["skipped"][label] = reason
            sections.append(
                f"<h2>{html.escape(label)}</h2><p class='skipped'>No Pareto front: {html.escape(reason)}.</p>"
            )
            continue
        front = result.pareto(objectives=names)
        ref = default_reference(result, names)
        steps, hv = hypervolume_curve(result, names, ref)
        contents[f"front_{stem}.png"] = _plot_front(result, names, label)
        contents[f"hv_{stem}.png"] = _plot_hv(steps, hv, label)
        contents[f"front_{stem}.csv"] = front.to_csv(index=False).encode()
        summary["fronts"][label] = {
            "objectives": list(names),
            "reference": ref,
            "hypervolume": float(hv[-1]) if hv.size else 0.0,
            "front_size": len(front),
            "front_keys": front["key"].tolist(),
            # partial evaluations this target could not price (its objective failed; the others kept them)
            "lacking": result.lacking(objectives=names),
        }
        lacking = summary["fronts"][label]["lacking"]
        sections.append(
            f"<h2>{html.escape(label)}</h2>"
            f"<p>{len(front)} Pareto-optimal configs; hypervolume {summary['fronts'][label]['hypervolume']:.4g} "
            f"(reference {html.escape(json.dumps(ref))})"
            + (
                f"; {lacking} evaluations have no value for this target (see the store's error column)"
                if lacking
                else ""
            )
            + "</p>"
            f'<img src="front_{stem}.png" alt="Pareto front for {html.escape(label)}"> '
            f'<img src="hv_{stem}.png" alt="hypervolume over evaluations for {html.escape(label)}">'
            f"{_table_html(front, names)}"
        )
    meta = result.meta
    title = f"nas search report: {meta.get('algorithm', '?')} on {meta.get('space', '?')}"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'>{_GENERATOR}"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1200px} table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left} code{font-size:11px}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{len(result)} evaluations; objectives: "
        f"{html.escape(', '.join(f'{n} ({d})' for n, d in result.objectives))}; seed {meta.get('seed')}, "
        f"budget {meta.get('budget')}.</p>" + "".join(sections) + "</body></html>"
    )
    contents["summary.json"] = json.dumps(summary, indent=2, default=str).encode()
    contents["index.html"] = page.encode()
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_files(out)
    # Listed before they are written: a report stopped part-way still names every file it may have left.
    _list_files(out, previous | written)
    for name, data in contents.items():  # the page last, so that it never shows plots not yet written
        write_bytes(out / name, data)
    for name in previous - written:  # plots of a target the store no longer has (or that has no front now)
        if not (out / name).is_dir():
            (out / name).unlink(missing_ok=True)
    _list_files(out, written)
    return out / "index.html"
