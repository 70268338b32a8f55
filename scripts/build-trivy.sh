#!/usr/bin/env bash
# Build the Trivy scanner from its Go module once and cache it outside the clone.
#
#   scripts/build-trivy.sh           build if needed; the last line printed is the trivy binary
#   scripts/build-trivy.sh --path    print where the binary is (built or not) and exit
#   scripts/build-trivy.sh --check   exit 0 when it is built, 1 when not
#
# It builds two binaries into $PADDLE_WORKBENCH_CACHE/trivy/<version>-<hash>/ (the cache defaults
# to ~/.cache/paddle-workbench; the hash covers this script and the Go version):
#   trivy     github.com/aquasecurity/trivy/cmd/trivy@$TRIVY_VERSION
#   trivy-db  github.com/aquasecurity/trivy-db/cmd/trivy-db at the version that Trivy release
#             requires: the database builder the tests use to make a database from a fixture
#             advisory (tests/images/fixtures/vuln-list).
# Trivy's vulnerability database is never downloaded by the workbench: scans read it from the
# internal registry (images/local/scan.sh passes --db-repository).
set -euo pipefail

TRIVY_VERSION=v0.74.0
# The trivy-db module version github.com/aquasecurity/trivy@v0.74.0's go.mod requires.
TRIVY_DB_VERSION=v0.0.0-20260813095258-0e0340a01b57

mode=${1:-build}
case "$mode" in
  build|--path|--check) ;;
  *) echo "usage: $0 [--path|--check]" >&2; exit 2 ;;
esac
export PATH=$PATH:/usr/local/go/bin
if ! command -v go >/dev/null; then
  echo "trivy: the Go toolchain is not installed (put go >= 1.25 on PATH)" >&2
  exit 3
fi
hash=$(cat "$0" <(go env GOVERSION) | sha256sum | cut -c1-12)
cache_root=${PADDLE_WORKBENCH_CACHE:-$HOME/.cache/paddle-workbench}/trivy
out="$cache_root/$TRIVY_VERSION-$hash"

case "$mode" in
  --path) echo "$out/trivy"; exit 0 ;;
  --check) [ -x "$out/trivy" ] && [ -x "$out/trivy-db" ] && exit 0 || exit 1 ;;
esac

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9   # one build at a time; a second session finds it done
if [ -x "$out/trivy" ] && [ -x "$out/trivy-db" ]; then echo "$out/trivy"; exit 0; fi

tmp=$(mktemp -d "$cache_root/.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "trivy: building github.com/aquasecurity/trivy $TRIVY_VERSION (a cold build takes several minutes)" >&2
# Trivy uses encoding/json/v2, which Go ships behind GOEXPERIMENT=jsonv2.
export GOEXPERIMENT=jsonv2 CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-trimpath -buildvcs=false" GOBIN="$tmp"
nice -n 10 go install \
  -ldflags "-s -w -X github.com/aquasecurity/trivy/pkg/version/app.ver=${TRIVY_VERSION#v}" \
  "github.com/aquasecurity/trivy/cmd/trivy@$TRIVY_VERSION"
nice -n 10 go install -ldflags "-s -w" "github.com/aquasecurity/trivy-db/cmd/trivy-db@$TRIVY_DB_VERSION"
mkdir -p "$out"
mv "$tmp/trivy-db" "$out/trivy-db"
mv "$tmp/trivy" "$out/trivy"
echo "trivy: built in $(( $(date +%s) - start ))s" >&2
echo "$out/trivy"
