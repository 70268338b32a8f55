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
#   trainer-controller-manager                               github.com/kubeflow/trainer/v2/cmd
#                                                            /trainer-controller-manager@$TRAINER_VERSION
#   jobset-controller                                        sigs.k8s.io/jobset (the module root), built
#                                                            through the wrapper module in ./jobset
#   kueue                                                    sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION
#
# Beside bin/ it copies, from the same module versions in Go's module cache, the CRDs and webhook
# configurations of Trainer, JobSet and Kueue into manifests/<component>/ (the test plane applies
# them from there), so a CRD can never drift from the controller that serves it.
#
# The bin dir is $PADDLE_WORKBENCH_CACHE/controlplane/<versions>-<hash>/bin (the cache defaults to
# ~/.cache/paddle-workbench); the hash covers go.mod, go.sum, this script and the Go version, so
# any change to what gets built lands in a new directory and an old one is never half-replaced.
# Go's own module and build caches (GOMODCACHE, GOCACHE) keep a rebuild after such a change short.
set -euo pipefail

KWOK_VERSION=v0.7.0
TRAINING_OPERATOR_VERSION=v1.9.0
TRAINER_VERSION=v2.3.0
KUEUE_VERSION=v0.17.0

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
jobset_version=$(awk '$1 == "require" && $2 == "sigs.k8s.io/jobset" {print $3}' "$here/jobset/go.mod")
[ -n "$jobset_version" ] || { echo "controlplane: no sigs.k8s.io/jobset require line in jobset/go.mod" >&2; exit 2; }
go_version=$(go env GOVERSION)
hash=$(cat "$here/go.mod" "$here/go.sum" "$here/jobset/go.mod" "$here/jobset/go.sum" "$0" \
  <(echo "$go_version") | sha256sum | cut -c1-12)
key="k8s-$k8s_version-kwok-$KWOK_VERSION-training-operator-$TRAINING_OPERATOR_VERSION"
key+="-trainer-$TRAINER_VERSION-jobset-$jobset_version-kueue-$KUEUE_VERSION-$hash"
cache_root=${PADDLE_WORKBENCH_CACHE:-$HOME/.cache/paddle-workbench}/controlplane
out="$cache_root/$key"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kwok training-operator
  trainer-controller-manager jobset-controller kueue)
manifests=(trainer/crds trainer/webhooks.yaml jobset/crds jobset/webhooks.yaml kueue/crds
  kueue/webhooks.yaml)

complete() {
  [ -f "$out/bin/.complete" ] || return 1
  for b in "${binaries[@]}"; do [ -x "$out/bin/$b" ] || return 1; done
  for m in "${manifests[@]}"; do [ -e "$out/manifests/$m" ] || return 1; done
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
echo "controlplane: building Kubeflow Trainer $TRAINER_VERSION" >&2
GOBIN="$tmp/bin" nice -n 19 go install -ldflags "-s -w" \
  "github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager@$TRAINER_VERSION"
echo "controlplane: building JobSet $jobset_version" >&2
(cd "$here/jobset" && nice -n 19 go build -ldflags "-s -w" -o "$tmp/bin/jobset-controller" \
  sigs.k8s.io/jobset)
echo "controlplane: building Kueue $KUEUE_VERSION" >&2
GOBIN="$tmp/bin" nice -n 19 go install -ldflags "-s -w" "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"

# CRDs and webhook configurations from the very module versions just built.
module_dir() {  # module@version -> its directory in the module cache (downloaded if needed)
  go mod download -json "$1" | awk -F'"' '$2 == "Dir" {print $4}'
}
copy_manifests() {  # component, module dir, CRD folder, webhook manifest
  mkdir -p "$tmp/manifests/$1/crds"
  cp "$2/$3"/*.yaml "$tmp/manifests/$1/crds/"
  rm -f "$tmp/manifests/$1/crds/kustomization.yaml"
  cp "$2/$4" "$tmp/manifests/$1/webhooks.yaml"
  chmod -R u+w "$tmp/manifests/$1"
}
copy_manifests trainer "$(module_dir "github.com/kubeflow/trainer/v2@$TRAINER_VERSION")" \
  manifests/base/crds manifests/base/webhook/manifests.yaml
copy_manifests jobset "$(cd "$here/jobset" && go list -m -f '{{.Dir}}' sigs.k8s.io/jobset)" \
  config/components/crd/bases config/components/webhook/manifests.yaml
copy_manifests kueue "$(module_dir "sigs.k8s.io/kueue@$KUEUE_VERSION")" \
  config/components/crd/bases config/components/webhook/manifests.yaml

printf 'kubernetes %s\nkwok %s\ntraining-operator %s\ntrainer %s\njobset %s\nkueue %s\n%s\n' \
  "$k8s_version" "$KWOK_VERSION" "$TRAINING_OPERATOR_VERSION" "$TRAINER_VERSION" \
  "$jobset_version" "$KUEUE_VERSION" "$go_version" > "$tmp/bin/VERSIONS"
touch "$tmp/bin/.complete"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "controlplane: built in $(( $(date +%s) - start ))s" >&2
echo "$out/bin"
