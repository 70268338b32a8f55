#!/usr/bin/env bash
# Re-lock the images' third-party packages with hashes (needs `uv` and access to PyPI).
# CPU and hub: Python 3.11 (python:3.11-slim-bookworm, or the workbench base's Debian Python 3.11).
# GPU: Python 3.10 (the official Paddle GPU image). The proxy image's npm lock is
# images/proxy/package-lock.json (`npm install --package-lock-only` in images/proxy).
# Review the diff of the lock files like code: it is what the images will run.
set -euo pipefail
cd "$(dirname "$0")"
UV=${UV:-uv}
common=(--generate-hashes --no-header --quiet --python-platform x86_64-manylinux_2_28)
"$UV" pip compile cpu/requirements.in "${common[@]}" --python-version 3.11 -o cpu/requirements.lock
"$UV" pip compile gpu/requirements.in "${common[@]}" --python-version 3.10 \
  --no-emit-package paddlepaddle -o gpu/requirements.lock
"$UV" pip compile hub/requirements.in "${common[@]}" --python-version 3.11 -o hub/requirements.lock
echo "locked: cpu/requirements.lock gpu/requirements.lock hub/requirements.lock"
