"""Reading the tenants file: `load_tenants` (strict), and caches that re-read a file only when it
changed (`FileCache`, `TenantsCache`, `shared_cache`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import yaml

from hub_config.tenants.fields import TenantsFileError
from hub_config.tenants.model import Tenants

T = TypeVar("T")
log = logging.getLogger(__name__)


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
    cannot be stat'ed is loaded every time, so `load` raises its own error for it.

    With `keep_last_good`, a file that once loaded and is then broken by an edit (or removed)
    keeps serving its last good content: the error is logged once per broken version, naming
    what to fix, and the next good edit takes effect. Without it, `get` raises for the broken
    file. The first load always raises: there is nothing good to keep.
    """

    def __init__(self, path: str | os.PathLike[str], load: Callable[[Path], T],
                 keep_last_good: bool = False):
        self.path = Path(path)
        self._load = load
        self._keep_last_good = keep_last_good
        self._key: tuple[int, int] | None = None
        self._value: T | None = None
        self._reported: tuple[tuple[int, int] | None, str] | None = None

    def get(self) -> T:
        """The file's content as `load` returns it (or its last good content, see above)."""
        try:
            stat = self.path.stat()
            key: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            key = None
        if self._value is not None and key is not None and key == self._key:
            return self._value
        try:
            value = self._load(self.path)
        except Exception as err:
            if not self._keep_last_good or self._value is None:
                raise
            self._report(key, err)
            return self._value
        self._value, self._key, self._reported = value, key, None
        return value

    def _report(self, key: tuple[int, int] | None, err: Exception) -> None:
        if self._reported != (key, str(err)):
            self._reported = (key, str(err))
            log.error("%s; the hub keeps using the last good version until the file is fixed", err)


class TenantsCache(FileCache[Tenants]):
    """A tenants file, re-read only when it changes. A broken edit while the hub runs does not
    turn every login into an error: the last good rules stay in force and the error is logged
    (an operator who needs a user out at once disables them in the hub as well)."""

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path, load_tenants, keep_last_good=True)


_SHARED: dict[str, TenantsCache] = {}


def shared_cache(path: str | os.PathLike[str]) -> TenantsCache:
    """One cache per tenants file for the whole process: the hub makes a spawner per user, and
    each would otherwise parse the file again."""
    key = os.fspath(path)
    if key not in _SHARED:
        _SHARED[key] = TenantsCache(key)
    return _SHARED[key]
