"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> write_text(p, "{}")
    >>> p.read_text()
    '{}'
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

__all__ = ["give_default_permissions", "remove_stale_temps", "temp_prefix", "write_bytes", "write_text"]

# mkstemp/mkdtemp's random part: letters, digits and underscores (never '-', so a host name may hold one).
_RANDOM = r"[a-z0-9_]+"


def temp_prefix(path: str | os.PathLike[str], kind: str = "tmp") -> str:
    """The name prefix of a temporary file or folder that will be renamed to ``path`` (``kind`` "tmp"), or of an
    old version moved aside to be deleted (``kind`` "old", as :func:`nas.export.export` does).

    It names the process that writes it (``.NAME.KIND-PID@HOST-``), so that the leftover of a writer killed before
    its rename (kill -9, the OOM killer, a power cut) can be told from the temporary file of a writer still at
    work and removed by :func:`remove_stale_temps` on the next write.
    """
    return f".{Path(path).name}.{kind}-{os.getpid()}@{socket.gethostname()}-"


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user's counts: it may be the writer)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists
        return True
    return True


def remove_stale_temps(path: str | os.PathLike[str], kind: str = "tmp") -> list[Path]:
    """Remove the temporary files and folders of ``path`` named by :func:`temp_prefix` with ``kind`` that dead
    writers left.

    Only those written on this host by a process that no longer exists: a writer on another machine sharing the
    folder, or still running here, keeps its own. Returns what was removed.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{re.escape(kind)}-(\d+)@([^@]+)-{_RANDOM}(\.tmp)?")
    host, removed = socket.gethostname(), []
    try:
        entries = list(path.parent.iterdir())
    except OSError:  # no folder yet, or unreadable: nothing of ours to clean
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not match or match[2] != host or int(match[1]) == os.getpid() or _alive(int(match[1])):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def give_default_permissions(path: str | os.PathLike[str]) -> None:
    """Give ``path`` (and, for a directory, everything in it) the permissions a plain ``open()`` / ``mkdir()``
    would have: ``mkdtemp``/``mkstemp`` (and some writers) create 0700 / 0600, which would hide a finished
    model from other users such as a serving container's.
    """
    umask = _umask()
    root = Path(path)
    for p in [root, *root.rglob("*")] if root.is_dir() else [root]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``.

    The temporary files of earlier writers of ``path`` killed before their rename are removed first, so repeated
    crashes do not pile up copies (a checkpoint each) in the user's folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would (0666 minus the umask).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`write_bytes` for UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))
