#!/usr/bin/env bash
# Set up everything the workbench and its tests need on a fresh machine, and nothing twice:
# system packages (when run as root), a virtual environment with the project installed, and
# the npm packages (configurable-http-proxy). Re-running it is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# System packages, one per line in scripts/system-packages.txt ("#" starts a comment).
missing=()
while read -r pkg; do
  [ -n "$pkg" ] || continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' scripts/system-packages.txt)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages (tests that need them will skip): ${missing[*]}" >&2
  fi
fi

# The virtual environment, reinstalled when pyproject.toml changes, and also when a package in it
# is below the project's requirements (an old .venv, a hand downgrade): the floors exclude
# versions with published advisories, so "installed" is not enough.
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
below_floors() {
  # Prints each requirement of the installed project that the environment does not satisfy
  # ("missing" for a project that is not installed at all). No network.
  "$VENV/bin/python" - <<'PY' 2>/dev/null || echo "unknown (cannot check)"
from importlib import metadata
from packaging.requirements import Requirement
try:
    requires = metadata.requires("paddle-workbench") or []
except metadata.PackageNotFoundError:
    print("paddle-workbench (missing)")
    raise SystemExit
extras = ("", "all", "test", "paddle", "notebook", "hub")
for text in requires:
    req = Requirement(text)
    if req.name == "paddle-workbench" or (
            req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras)):
        continue
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        print(f"{req.name} (missing)")
        continue
    if not req.specifier.contains(version, prereleases=True):
        print(f"{req.name} {version} (needs {req.specifier})")
PY
}
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ]; then
  below=$(below_floors)
  if [ -n "$below" ]; then
    echo "setup: below the project's requirements, upgrading:" $below
    rm -f "$stamp"
  fi
fi
if [ ! -f "$stamp" ]; then
  echo "setup: installing the project into $VENV"
  # pip's default strategy (only-if-needed) upgrades exactly the packages whose installed version
  # is below a requirement, which is what the floors need; said here so no one changes it.
  "$VENV/bin/pip" install -q --upgrade-strategy only-if-needed -e ".[all,test]"
  below=$(below_floors)
  if [ -n "$below" ]; then
    echo "setup: still below the project's requirements after installing: $below" >&2
    exit 1
  fi
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

# npm packages (configurable-http-proxy for the hub), reinstalled when the lock file changes.
if [ -f package-lock.json ]; then
  nstamp="node_modules/.installed-$(sha256sum package-lock.json | cut -c1-16)"
  if [ ! -f "$nstamp" ]; then
    echo "setup: installing npm packages"
    npm ci --silent --no-audit --no-fund
    touch "$nstamp"
  fi
fi
