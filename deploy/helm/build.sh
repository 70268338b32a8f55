#!/usr/bin/env bash
# Build Helm once from its Go module and cache it outside the clone.
#
#   deploy/helm/build.sh             build if needed; the last line printed is the bin dir
#   deploy/helm/build.sh --bin-dir   print the bin dir (built or not) and exit
#   deploy/helm/build.sh --check     exit 0 when the bin dir is complete, 1 when not
#
# It builds helm.sh/helm/v4/cmd/helm@$HELM_VERSION with CGO off, -trimpath, stripped, and the
# release number stamped in (`helm version` says $HELM_VERSION, not a bare "v4.3").
#
# The bin dir is $PADDLE_WORKBENCH_CACHE/helm/helm-<version>-<hash>/bin (the cache defaults to
# ~/.cache/paddle-workbench); the hash covers this script (which pins the version) and the Go
# version, so a change builds into a new directory and a finished one is never half-replaced.
set -euo pipefail

HELM_VERSION=v4.3.2

mode=${1:-build}
case "$mode" in
  build|--bin-dir|--check) ;;
  *) echo "usage: $0 [--bin-dir|--check]" >&2; exit 2 ;;
esac

if ! command -v go >/dev/null; then
  echo "helm: the Go toolchain is not installed (put go >= 1.26 on PATH)" >&2
  exit 3
fi

go_version=$(go env GOVERSION)
hash=$(cat "$0" <(echo "$go_version") | sha256sum | cut -c1-12)
cache_root=${PADDLE_WORKBENCH_CACHE:-$HOME/.cache/paddle-workbench}/helm
out="$cache_root/helm-$HELM_VERSION-$hash"

complete() { [ -f "$out/bin/.complete" ] && [ -x "$out/bin/helm" ]; }

case "$mode" in
  --bin-dir) echo "$out/bin"; exit 0 ;;
  --check) complete && exit 0 || exit 1 ;;
esac

mkdir -p "$cache_root"
# One build at a time per cache (two test sessions may start together); the loser finds it done.
exec 9>"$cache_root/.lock"
flock 9
if complete; then
  echo "$out/bin"
  exit 0
fi

tmp=$(mktemp -d "$cache_root/.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"
export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false" GOTOOLCHAIN=local
pkg=helm.sh/helm/v4/internal/version
ldflags="-s -w -X $pkg.version=$HELM_VERSION -X $pkg.metadata= -X $pkg.gitTreeState=clean"

start=$(date +%s)
echo "helm: building Helm $HELM_VERSION into $out" >&2
GOBIN="$tmp/bin" nice -n 19 go install -ldflags "$ldflags" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
printf 'helm %s\n%s\n' "$HELM_VERSION" "$go_version" > "$tmp/bin/VERSIONS"
touch "$tmp/bin/.complete"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "helm: built in $(( $(date +%s) - start ))s" >&2
echo "$out/bin"
