"""Variables in and results out: `--push` and `--pull` through the job directory.

The kernel pickles the pushed variables into `<job dir>/push.pkl` before the job starts; every rank
loads them into the cell's globals before the cell runs. When the cell ends well, rank 0 pickles
the pulled names from its globals into `<job dir>/pull.pkl`, with the names it lacked or could not
pickle; the kernel reads that file once the job has Succeeded. The job directory is on the user's
shared storage in every engine, so this works locally and in a cluster alike.

Pickle runs the code of the classes it names when it loads: only the user's own kernel and the
user's own ranks read these files, which live in the user's own job directory.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PUSH_FILE = "push.pkl"
PULL_FILE = "pull.pkl"
DEFAULT_PUSH_LIMIT = 256 * 2**20


class TransferError(ValueError):
    """A push or pull that cannot be done; the message says which variable and what to do."""


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pack_push(names: Sequence[str], namespace: Mapping[str, Any],
              limit: int = DEFAULT_PUSH_LIMIT) -> bytes:
    """The pickled `{name: value}` of the pushed variables.

    Raises:
        TransferError: a name is not defined, a value cannot be pickled, or all of them together
            are over `limit` bytes.
    """
    values = {}
    for name in names:
        if name not in namespace:
            raise TransferError(f"--push {name}: no such variable in this notebook; define it "
                                "first or drop it from --push")
        try:
            pickle.dumps(namespace[name], protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # noqa: BLE001 - pickling raises many kinds
            raise TransferError(
                f"--push {name}: a {type(namespace[name]).__name__} cannot be pickled "
                f"({type(err).__name__}: {err}); push what it is made of (arrays, numbers, "
                "dicts of them) and rebuild it in the cell") from None
        values[name] = namespace[name]
    data = pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > limit:
        raise TransferError(
            f"--push {', '.join(names)}: {len(data) / 2**20:.1f} MiB pickled, over the limit of "
            f"{limit / 2**20:.0f} MiB; save large data to a file and pass it with --files or a path")
    return data


def write_push(job_path: Path, data: bytes) -> None:
    _write_atomically(Path(job_path) / PUSH_FILE, data)


def read_push(job_path: Path) -> dict[str, Any]:
    """The pushed variables of the job (empty when nothing was pushed)."""
    try:
        with open(Path(job_path) / PUSH_FILE, "rb") as handle:
            return pickle.load(handle)
    except FileNotFoundError:
        return {}


def write_pull(job_path: Path, names: Sequence[str], namespace: Mapping[str, Any]) -> None:
    """Rank 0's values of `names` (and what it lacked or could not pickle) into the job."""
    values, missing, failed = {}, [], {}
    for name in names:
        if name not in namespace:
            missing.append(name)
            continue
        try:
            pickle.dumps(namespace[name], protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # noqa: BLE001 - pickling raises many kinds
            failed[name] = f"a {type(namespace[name]).__name__} cannot be pickled ({err})"
            continue
        values[name] = namespace[name]
    record = {"values": values, "missing": missing, "failed": failed}
    _write_atomically(Path(job_path) / PULL_FILE,
                      pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))


def read_pull(job_path: Path, names: Sequence[str]) -> dict[str, Any]:
    """The pulled values, once the job has Succeeded.

    Raises:
        TransferError: rank 0 wrote nothing, or lacked or could not pickle one of `names`.
    """
    try:
        with open(Path(job_path) / PULL_FILE, "rb") as handle:
            record = pickle.load(handle)
    except FileNotFoundError:
        raise TransferError("--pull: rank 0 wrote no results (did the cell end early?)") from None
    problems = [f"the cell defined no {name} on rank 0" for name in record["missing"]
                if name in names]
    problems += [f"{name} is {why}" for name, why in record["failed"].items() if name in names]
    if problems:
        raise TransferError("--pull: " + "; ".join(problems))
    return {name: record["values"][name] for name in names}
