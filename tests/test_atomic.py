"""Atomic writes: the temporary file of a writer killed before its rename is removed by the next write."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from nas.atomic import remove_stale_temps, temp_prefix, write_bytes

REPO = Path(__file__).resolve().parents[1]

# A child that writes `path` and SIGKILLs itself where the rename would come: the temporary file stays behind.
KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from nas import atomic
    atomic.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    atomic.write_bytes(sys.argv[1], b"x" * 1000)
    """
)


def _kill_a_writer_of(path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], env=env, capture_output=True)
    assert done.returncode == -9, done.stderr


def test_temp_files_of_killed_writers_do_not_pile_up(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    write_bytes(path, b"old")
    seen = set()
    for _ in range(3):
        _kill_a_writer_of(path)
        left = [p.name for p in tmp_path.iterdir() if p != path]
        # Each killed writer left its own temporary file and removed the one of the writer killed before it.
        assert (
            len(left) == 1 and left[0].startswith(".checkpoint.safetensors.tmp-") and left[0] not in seen
        ), left
        seen.add(left[0])
    assert path.read_bytes() == b"old"  # the kills lost nothing
    write_bytes(path, b"new")
    assert sorted(tmp_path.iterdir()) == [path]
    assert path.read_bytes() == b"new"


def test_only_dead_writers_of_this_host_lose_their_temp_files(tmp_path):
    path = tmp_path / "a.json"
    live = tmp_path / (temp_prefix(path).replace(f"-{os.getpid()}@", f"-{os.getppid()}@") + "abc.tmp")
    own = tmp_path / f"{temp_prefix(path)}abc.tmp"  # this process's (a write in progress in another thread)
    other_host = tmp_path / ".a.json.tmp-999999999@elsewhere.example-abc.tmp"
    other_file = tmp_path / ".b.json.tmp-999999999@x-abc.tmp"  # another target's
    for p in (live, own, other_host, other_file):
        p.write_text("partial")
    dead = tmp_path / (temp_prefix(path).replace(f"-{os.getpid()}@", "-999999999@") + "q1_x")
    dead.mkdir()  # an export's folder
    (dead / "model.onnx").write_text("partial")
    assert remove_stale_temps(path) == [dead]
    assert all(p.exists() for p in (live, own, other_host, other_file))
