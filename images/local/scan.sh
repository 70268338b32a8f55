#!/usr/bin/env bash
# The scan gate: Trivy over one image (an OCI layout folder), before it may be pushed.
#
#   images/local/scan.sh OCI_DIR OUT_PREFIX
#
# Writes OUT_PREFIX.scan.json (Trivy's JSON report) and OUT_PREFIX.cdx.json (the image's SBOM,
# CycloneDX), then lets `workbench images gate` decide: exit 0 lets the push go on, exit 1 (a
# HIGH or CRITICAL finding that images/trivyignore.yaml does not accept until a future date)
# stops it. Trivy's vulnerability database is never downloaded from the internet: it comes from
# TRIVY_DB_REPOSITORY (default: the internal registry's trivy-db:2), as in an air-gapped site.
set -euo pipefail
archive=${1:?usage: scan.sh OCI_DIR OUT_PREFIX}
prefix=${2:?usage: scan.sh OCI_DIR OUT_PREFIX}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${IMAGE_CACHE:-${PADDLE_WORKBENCH_CACHE:-$HOME/.cache/paddle-workbench}/images}
PYTHON=${PYTHON:-$( [ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3)}
IGNOREFILE=${IGNOREFILE:-$repo/images/trivyignore.yaml}
db=${TRIVY_DB_REPOSITORY:-${REGISTRY_ADDR:-127.0.0.1:5000}/trivy-db:2}
trivy=${TRIVY:-}
if [ -z "$trivy" ]; then
  trivy=$(bash "$repo/scripts/build-trivy.sh" | tail -n 1)
fi

mkdir -p "$(dirname "$prefix")"
common=(--cache-dir "$cache/trivy" --quiet --input "$archive")
# Vulnerabilities only (secrets and misconfigurations are the policy check's job); the Java DB is
# never fetched (the images hold no jars).
if ! "$trivy" image "${common[@]}" --scanners vuln --db-repository "$db" --skip-java-db-update \
    --ignorefile "$IGNOREFILE" --show-suppressed --list-all-pkgs --format json \
    --output "$prefix.scan.json"; then
  echo "scan: trivy could not scan $archive (is the database at $db? see images/README.md)" >&2
  exit 2
fi
"$trivy" image "${common[@]}" --scanners vuln --skip-db-update --skip-java-db-update \
  --format cyclonedx --output "$prefix.cdx.json"
"$PYTHON" -m hub_config.cli.main images gate "$prefix.scan.json" --ignorefile "$IGNOREFILE" \
  --name "$(basename "$prefix")"
