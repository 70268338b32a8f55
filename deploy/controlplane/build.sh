#!/usr/bin/env bash
# Build the binaries of the test control plane once and cache them outside the clone.
#
#   deploy/controlplane/build.sh             build if needed; the last line printed is the bin dir
#   deploy/controlplane/build.sh --bin-dir   print the bin dir (built or not) and exit
#   deploy/controlplane/build.sh --check     exit 0 when the bin dir is complete, 1 when not
#
# What it builds (all with CGO off, -trimpath, stripped):
#   kube-apiserver, kube-controller-manager, kube-scheduler  from k8s.io/kubernetes (this folder's
#                                                            go.mod pins the release)
#   kwok                                                     sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION
#   training-operator                                        github.com/kubeflow/training-operator
#                                                            /cmd/training-operator.v1@$TRAINING_OPERATOR_VERSION
#
# The bin dir is $PADDLE_WORKBENCH_CACHE/controlplane/<versions>-<hash>/bin (the cache defaults to
# ~/.cache/paddle-workbench); the hash covers go.mod, go.sum, this script and the Go version, so
# any change to what gets built lands in a new directory and an old one is never half-replaced.
# Go's own module and build caches (GOMODCACHE, GOCACHE) keep a rebuild after such a change short.
set -euo pipefail

KWOK_VERSION=v0.7.0
TRAINING_OPERATOR_VERSION=v1.9.0

here=$(cd "$(dirname "$0")" && pwd)
mode=${1:-build}
case "$mode" in
  build|--bin-dir|--check) ;;
  *) echo "usage: $0 [--bin-dir|--check]" >&2; exit 2 ;;
esac

if ! command -v go >/dev/null; then
  echo "controlplane: the Go toolchain is not installed (put go >= 1.24 on PATH)" >&2
  exit 3
fi

k8s_version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/go.mod")
[ -n "$k8s_version" ] || { echo "controlplane: no k8s.io/kubernetes require line in go.mod" >&2; exit 2; }
go_version=$(go env GOVERSION)
hash=$(cat "$here/go.mod" "$here/go.sum" "$0" <(echo "$go_version") | sha256sum | cut -c1-12)
key="k8s-$k8s_version-kwok-$KWOK_VERSION-training-operator-$TRAINING_OPERATOR_VERSION-$hash"
cache_root=${PADDLE_WORKBENCH_CACHE:-$HOME/.cache/paddle-workbench}/controlplane
out="$cache_root/$key"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kwok training-operator)

complete() {
  [ -f "$out/bin/.complete" ] || return 1
  for b in "${binaries[@]}"; do [ -x "$out/bin/$b" ] || return 1; done
}

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
# The release numbers the binaries report (`/version`, user agents); a plain `go build` says v0.0.0.
minor=${k8s_version#v1.}; minor=${minor%%.*}
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
ldflags+=" -X $pkg.gitTreeState=clean"

start=$(date +%s)
echo "controlplane: building Kubernetes $k8s_version into $out (a cold build takes a while)" >&2
(cd "$here" && nice -n 19 go build -ldflags "$ldflags" -o "$tmp/bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler)
echo "controlplane: building kwok $KWOK_VERSION" >&2
GOBIN="$tmp/bin" nice -n 19 go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
echo "controlplane: building training-operator $TRAINING_OPERATOR_VERSION" >&2
GOBIN="$tmp/bin" nice -n 19 go install -ldflags "-s -w" \
  "github.com/kubeflow/training-operator/cmd/training-operator.v1@$TRAINING_OPERATOR_VERSION"
mv "$tmp/bin/training-operator.v1" "$tmp/bin/training-operator"

printf 'kubernetes %s\nkwok %s\ntraining-operator %s\n%s\n' "$k8s_version" "$KWOK_VERSION" \
  "$TRAINING_OPERATOR_VERSION" "$go_version" > "$tmp/bin/VERSIONS"
touch "$tmp/bin/.complete"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "controlplane: built in $(( $(date +%s) - start ))s" >&2
echo "$out/bin"
