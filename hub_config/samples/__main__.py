"""`python -m hub_config.samples [HOME]`: put the sample notebook into a home that lacks it.

The notebook pod's postStart hook (deploy/helm/workbench-values.yaml) runs it, as the hub's local
spawner puts the sample into a new local home. A file of that name already there is left as it is
(never the sample over the user's edits; a link is not followed). A problem is reported on stderr
and the command still exits 0: Kubernetes kills a container whose postStart hook fails, and a
missing sample is no reason to lose the notebook server.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent / "paddle-quickstart.ipynb"


def put_sample(home: Path, sample: Path = SAMPLE) -> bool:
    """Copy `sample` into `home` unless a file, folder or link of its name is there; True if it
    was copied."""
    data = sample.read_bytes()
    try:
        fd = os.open(home / sample.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    raw = args[0] if args else os.environ.get("HOME", "")
    if not raw:
        print("workbench: no home folder (HOME is unset); the sample notebook was not copied",
              file=sys.stderr)
        return 0
    home = Path(raw)
    try:
        put_sample(home)
    except OSError as exc:
        print(f"workbench: the sample notebook was not copied into {home}: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
