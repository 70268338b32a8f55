#!/usr/bin/env bash
# Build what the real test node runs, once, and cache it outside the clone.
#
#   deploy/node/build.sh           build if needed; the last line printed is the output dir
#   deploy/node/build.sh --dir     print the output dir (built or not) and exit
#   deploy/node/build.sh --check   exit 0 when the output dir is complete, 1 when not
#
# What it builds (CGO off, -trimpath, stripped) into <dir>/bin:
#   kubelet, kube-proxy   k8s.io/kubernetes, pinned by this folder's go.mod to the same release as
#                         deploy/controlplane/go.mod (build.sh refuses to build when they differ)
#   coredns               github.com/coredns/coredns with only the plugins cluster DNS needs,
#                         through the wrapper module in ./coredns (its own go.mod: CoreDNS brings
#                         a newer client-go than the kubelet's)
#   kube-router           github.com/cloudnativelabs/kube-router/v2/cmd/kube-router, through the
#                         wrapper module in ./kube-router; the node runs its NetworkPolicy
#                         controller only (iptables + ipset, which this kernel has)
#   pause, testserver     ./cmd/pause (the pod sandbox) and ./cmd/testserver (the tests' workload)
#   tcprelay              ./cmd/tcprelay: the API server on the node's address, for pods
#   ociarchive            ./cmd/ociarchive, which packs pause, testserver and coredns into
#                         <dir>/images/*.tar, OCI image archives for `ctr -n k8s.io images import`
#                         (nothing is pulled); CoreDNS runs as the cluster's kube-dns pod
#
# containerd, runc and the CNI plugins come from Debian (scripts/system-packages.txt).
# <dir> is $PADDLE_WORKBENCH_CACHE/node/<k8s version>-<hash> (the cache defaults to
# ~/.cache/paddle-workbench); the hash covers go.mod, go.sum, the Go sources here, this script and
# the Go version, so a change builds into a new directory and a finished one is never touched.
# Go's own module and build caches (GOMODCACHE, GOCACHE) keep a rebuild after such a change short.
set -euo pipefail

# Image names the node's containerd knows them by (tests/cluster/node/node_config.py reads these).
PAUSE_IMAGE=localhost/workbench/pause:1
TESTSERVER_IMAGE=localhost/workbench/testserver:1
COREDNS_IMAGE=localhost/workbench/coredns:1

here=$(cd "$(dirname "$0")" && pwd)
mode=${1:-build}
case "$mode" in
  build|--dir|--check) ;;
  *) echo "usage: $0 [--dir|--check]" >&2; exit 2 ;;
esac

if ! command -v go >/dev/null; then
  echo "node: the Go toolchain is not installed (put go >= 1.24 on PATH)" >&2
  exit 3
fi

k8s_version() { awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$1"; }
k8s=$(k8s_version "$here/go.mod")
plane=$(k8s_version "$here/../controlplane/go.mod")
if [ -z "$k8s" ] || [ "$k8s" != "$plane" ]; then
  echo "node: deploy/node/go.mod pins k8s.io/kubernetes '$k8s' but deploy/controlplane/go.mod" \
    "pins '$plane'; bump both together (and their replace blocks)" >&2
  exit 2
fi
go_version=$(go env GOVERSION)
required() { awk -v m="$2" '$1 == "require" && $2 == m {print $3}' "$1"; }
coredns=$(required "$here/coredns/go.mod" github.com/coredns/coredns)
kube_router=$(required "$here/kube-router/go.mod" github.com/cloudnativelabs/kube-router/v2)
hash=$( (cat "$here"/go.{mod,sum} "$here"/coredns/go.{mod,sum} "$here"/kube-router/go.{mod,sum} "$0";
  find "$here/cmd" "$here/coredns" "$here/kube-router" -name '*.go' | sort | xargs cat;
  echo "$go_version") | sha256sum | cut -c1-12)
cache_root=${PADDLE_WORKBENCH_CACHE:-$HOME/.cache/paddle-workbench}/node
out="$cache_root/$k8s-$hash"
binaries=(kubelet kube-proxy coredns kube-router pause testserver ociarchive tcprelay)
images=(pause testserver coredns)

complete() {
  [ -f "$out/.complete" ] || return 1
  for b in "${binaries[@]}"; do [ -x "$out/bin/$b" ] || return 1; done
  for i in "${images[@]}"; do [ -f "$out/images/$i.tar" ] || return 1; done
}

case "$mode" in
  --dir) echo "$out"; exit 0 ;;
  --check) complete && exit 0 || exit 1 ;;
esac

mkdir -p "$cache_root"
# One build at a time per cache (two test sessions may start together); the loser finds it done.
exec 9>"$cache_root/.lock"
flock 9
if complete; then
  echo "$out"
  exit 0
fi

start=$(date +%s)
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/images"
export CGO_ENABLED=0
flags=(-trimpath -ldflags "-s -w")
echo "node: building kubelet and kube-proxy $k8s" >&2
(cd "$here" && go build "${flags[@]}" -o "$tmp/bin/" k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy)
echo "node: building CoreDNS $coredns" >&2
(cd "$here/coredns" && go build "${flags[@]}" -o "$tmp/bin/coredns" .)
echo "node: building kube-router $kube_router" >&2
(cd "$here/kube-router" && go build "${flags[@]}" -o "$tmp/bin/kube-router" \
  github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)
echo "node: building pause, testserver, ociarchive, tcprelay" >&2
(cd "$here" && go build "${flags[@]}" -o "$tmp/bin/" ./cmd/pause ./cmd/testserver ./cmd/ociarchive \
  ./cmd/tcprelay)

"$tmp/bin/ociarchive" -name "$PAUSE_IMAGE" -entrypoint /pause -user 65535:65535 \
  -out "$tmp/images/pause.tar" "$tmp/bin/pause" >/dev/null
"$tmp/bin/ociarchive" -name "$TESTSERVER_IMAGE" -entrypoint /testserver \
  -out "$tmp/images/testserver.tar" "$tmp/bin/testserver" >/dev/null
"$tmp/bin/ociarchive" -name "$COREDNS_IMAGE" -entrypoint /coredns -user 65532:65532 \
  -out "$tmp/images/coredns.tar" "$tmp/bin/coredns" >/dev/null
printf 'pause %s\ntestserver %s\ncoredns %s\n' "$PAUSE_IMAGE" "$TESTSERVER_IMAGE" \
  "$COREDNS_IMAGE" > "$tmp/images/NAMES"
printf 'kubernetes %s\ncoredns %s\nkube-router %s\n%s\n' "$k8s" "$coredns" "$kube_router" \
  "$go_version" > "$tmp/VERSIONS"
touch "$tmp/.complete"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "node: built in $(( $(date +%s) - start ))s" >&2
echo "$out"
