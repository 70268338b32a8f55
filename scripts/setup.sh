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

# The virtual environment, reinstalled when pyproject.toml changes.
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing the project into $VENV"
  "$VENV/bin/pip" install -q -e ".[all,test]"
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
