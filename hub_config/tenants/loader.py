"""Reading the tenants file: `load_tenants` (strict), and caches that re-read a file only when it
changed (`FileCache`, `TenantsCache`, `shared_cache`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import yaml

from hub_config.tenants.fields import TenantsFileError
from hub_config.tenants.model import Tenants

T = TypeVar("T")


def load_tenants(path: str | os.PathLike[str]) -> Tenants:
    """Read and validate a tenants file.

    Raises TenantsFileError (naming the file, tenant and field) when the file is missing,
    is not YAML, or breaks a rule; unknown keys are errors here.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TenantsFileError(
            f"{path}: no such tenants file; create it (see hub_config/tenants.example.yaml)"
        ) from None
    except OSError as err:
        raise TenantsFileError(f"{path}: cannot read the tenants file: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TenantsFileError(f"{path}: not valid YAML{at}; fix the syntax") from None
    return Tenants.from_dict(data, source=str(path), strict=True)


class FileCache(Generic[T]):
    """`load(path)` once, and again only when the file changes (by mtime and size).

    The hub consults its files (tenants, local users) on every login and spawn; re-reading YAML
    each time costs more than a stat. An edited file takes effect at the next `get`; a file that
    cannot be stat'ed is loaded every time, so `load` raises its own error for it (a missing or
    broken file is reported, never replaced by the stale copy).
    """

    def __init__(self, path: str | os.PathLike[str], load: Callable[[Path], T]):
        self.path = Path(path)
        self._load = load
        self._key: tuple[int, int] | None = None
        self._value: T | None = None

    def get(self) -> T:
        """The file's content as `load` returns it; raises whatever `load` raises."""
        try:
            stat = self.path.stat()
            key: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            key = None
        if self._value is None or key is None or key != self._key:
            self._value = self._load(self.path)
            self._key = key
        return self._value


class TenantsCache(FileCache[Tenants]):
    """A tenants file, re-read only when it changes; a broken edit raises TenantsFileError rather
    than silently keeping stale rules."""

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path, load_tenants)


_SHARED: dict[str, TenantsCache] = {}


def shared_cache(path: str | os.PathLike[str]) -> TenantsCache:
    """One cache per tenants file for the whole process: the hub makes a spawner per user, and
    each would otherwise parse the file again."""
    key = os.fspath(path)
    if key not in _SHARED:
        _SHARED[key] = TenantsCache(key)
    return _SHARED[key]
