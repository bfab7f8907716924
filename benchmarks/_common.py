"""What every benchmark records besides its numbers: the machine it ran on, and its JSON written atomically.

Not a benchmark itself (``make bench`` skips files starting with ``_``). The scripts import it as ``_common``:
run as ``python benchmarks/NAME.py``, Python puts ``benchmarks/`` first on ``sys.path``.

Example:
    >>> m = machine()
    >>> m["cpus"] >= 1 and isinstance(describe(m), str)
    True
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from nas import atomic
from nas.hw.measure import cpu_model

__all__ = ["describe", "machine", "write_json"]


def machine() -> dict[str, Any]:
    """The facts about this machine a benchmark number depends on (JSON-able)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available (Windows)
        load = None
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count() or 1,
        "cpus_usable": usable,
        "platform": platform.platform(),
        "host": platform.node(),
        "python": platform.python_version(),
        "load_average": load,
    }


def describe(m: dict[str, Any]) -> str:
    """One line for the end of a benchmark's output, e.g. ``Intel Xeon, 2 CPUs, load 1.9``."""
    load = f", load {m['load_average'][0]:.1f}" if m.get("load_average") else ""
    return f"{m['cpu']}, {m['cpus_usable']} CPUs{load}"


def write_json(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically (a reader never sees half a file)."""
    path = Path(path)
    atomic.write_text(path, json.dumps(payload, indent=1, default=float) + "\n")
    return path
