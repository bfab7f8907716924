"""Built-in hardware profiles shipped as data, with a small index.

Each profile is a table ``<name>.csv.gz`` plus ``<name>.csv.gz.meta.json`` in this directory, in the format of
:class:`nas.hw.profiles.Profile`. See ``README.md`` here for where each one comes from.

Example:
    >>> import hw_profiles
    >>> "nb201-raspi4" in hw_profiles.available()
    True
    >>> p = hw_profiles.load("nb201-raspi4")
    >>> p.space, len(p), p.metadata["device"]
    ('nb201', 15625, 'raspi4')
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nas.hw.profiles import Profile

__all__ = ["UnknownProfileError", "available", "load", "path_of"]

_DIR = Path(__file__).parent
_SUFFIXES = (".csv.gz", ".csv")


class UnknownProfileError(KeyError):
    """No built-in profile has this name; the message lists those that exist."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def _tables() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(_DIR.iterdir()):
        for suffix in _SUFFIXES:
            if p.name.endswith(suffix) and Path(str(p) + ".meta.json").is_file():
                found.setdefault(p.name[: -len(suffix)], p)
    return found


def available() -> list[str]:
    """Names of the built-in profiles, sorted (e.g. ``nb201-edgegpu``)."""
    return sorted(_tables())


def path_of(name: str) -> Path:
    """Path of the table of a built-in profile.

    ``name`` is a full name (``nb201-raspi4``) or a device name that only one profile ends with (``raspi4``),
    as ``nas search --target`` takes it. Raises :class:`UnknownProfileError` (a ``KeyError``) listing the
    available names, or the candidates when a device name is ambiguous.

    Example:
        >>> path_of("raspi4") == path_of("nb201-raspi4")
        True
    """
    tables = _tables()
    if name in tables:
        return tables[name]
    candidates = sorted(n for n in tables if n.endswith(f"-{name}"))
    if len(candidates) == 1:
        return tables[candidates[0]]
    if candidates:
        raise UnknownProfileError(
            f"hardware profile {name!r} is ambiguous: {', '.join(candidates)}; use the full name"
        )
    raise UnknownProfileError(
        f"no built-in hardware profile {name!r}; available: {', '.join(sorted(tables)) or 'none'}"
    )


def load(name: str) -> Profile:
    """Load a built-in profile by name (see :func:`available`).

    Raises :class:`UnknownProfileError` (a ``KeyError``) naming the available profiles when ``name`` is unknown.
    """
    from nas.hw.profiles import Profile

    return Profile.load(path_of(name))
