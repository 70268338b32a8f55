#!/usr/bin/env bash
# The daemonless build of the workbench images on one machine (no Docker engine, no public image):
# the same Dockerfiles the enterprise pipeline builds, built by buildah (chroot isolation, as root)
# on a base made from Debian's packages, scanned by Trivy, pushed by digest to the internal
# registry (images/local/registry.sh).
#
#   images/local/build.sh all              base, then cpu, hub and proxy; print the references
#   images/local/build.sh base             the base only (rootfs from Debian, pushed by digest)
#   images/local/build.sh image NAME       one image: cpu, hub or proxy, or a folder holding a
#                                          Dockerfile (its own build context; the tests' fixtures)
#   images/local/build.sh key              print the cache key of this build's inputs
#
# `all` is skipped when the registry already holds what a build of the same inputs pushed (the key
# hashes the Dockerfiles, locks, build scripts, the project's sources and the last commit that
# changed any of them): a warm run takes seconds, also after commits that changed none of them.
#
# Environment:
#   REGISTRY_ADDR   the internal registry (default 127.0.0.1:5000; started when not running)
#   IMAGE_CACHE     buildah's storage, the registry's data, the base rootfs, scan reports, SBOMs
#                   (default ~/.cache/paddle-workbench/images)
#   SCAN            "trivy" (default): scan before the push, HIGH/CRITICAL stop it;
#                   "off": no scan (say so: the push is then unvetted)
#   TRIVY           the trivy binary (default: scripts/build-trivy.sh builds and caches it)
#   TRIVY_DB_REPOSITORY  where Trivy's database comes from (default: $REGISTRY_ADDR/trivy-db:2)
#   BUILD_CA_BUNDLE the CA bundle mounted (read-only) into RUN steps for TLS to package indexes
#                   (default: this host's /etc/ssl/certs/ca-certificates.crt); never in a layer
#   REVISION        the commit the labels name (default: the last commit that changed an input)
# The last lines printed are `NAME=<registry>/workbench/NAME@sha256:...`, one per image, also
# written to $IMAGE_CACHE/out/refs.env (and, without the registry address, to out/<key>/refs).
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) stops the build too
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export REGISTRY_ADDR=${REGISTRY_ADDR:-127.0.0.1:5000}
export IMAGE_CACHE=${IMAGE_CACHE:-${PADDLE_WORKBENCH_CACHE:-$HOME/.cache/paddle-workbench}/images}
SCAN=${SCAN:-trivy}
# The project's Python (it holds hub_config, whose policy checks the BASE reference and the scan).
PYTHON=${PYTHON:-$( [ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3)}
cache=$IMAGE_CACHE
out=$cache/out
conf=$cache/conf/${REGISTRY_ADDR//[:\/]/_}  # one per registry: builds for two registries may overlap
storage=(--root "$cache/storage" --runroot "$cache/run" --storage-driver overlay)
storage_ref="containers-storage:[overlay@$cache/storage+$cache/run]"
log() { echo "images: $*" >&2; }

need() {
  local missing=()
  for tool in buildah skopeo mmdebstrap curl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "missing tools: ${missing[*]}; install the Debian packages listed in" \
        "scripts/system-packages.txt (scripts/setup.sh does, as root)"
    exit 3
  fi
  [ "$(id -u)" = 0 ] || { log "buildah's chroot isolation needs root here"; exit 3; }
}

# The registries.conf and policy.json of every pull and push: only the internal registry.
configure() {
  mkdir -p "$conf" "$out" "$cache/tmp"
  sed "s|@REGISTRY@|$REGISTRY_ADDR|g" "$here/registries.conf.in" >"$conf/registries.conf"
  # The system's short-name aliases (registries.conf.d drop-ins, still read) point at public
  # registries: block each one they name, so an alias fails here before any network access.
  local host
  for host in $(cat /etc/containers/registries.conf.d/*.conf 2>/dev/null \
      | grep -o '"[a-z0-9.-]*\.[a-z]*\(:[0-9]*\)\?/' | tr -d '"/' | sort -u); do
    [ "$host" = "$REGISTRY_ADDR" ] && continue
    printf '\n[[registry]]\nlocation = "%s"\nblocked = true\n' "$host" >>"$conf/registries.conf"
  done
  sed "s|@REGISTRY@|$REGISTRY_ADDR|g" "$here/policy.json.in" >"$conf/policy.json"
  export CONTAINERS_REGISTRIES_CONF=$conf/registries.conf
  # buildah keeps RUN --mount=type=cache folders (pip's download cache) under TMPDIR.
  export TMPDIR=$cache/tmp
}

skopeo_() { skopeo --policy "$conf/policy.json" "$@"; }

# Push a local image by digest; prints the digest reference.
push() {
  local local_name=$1 repo_name=$2 tag=$3 digest
  rm -f "$cache/tmp/digest"
  skopeo_ copy --quiet --dest-tls-verify=false --digestfile "$cache/tmp/digest" \
    "$storage_ref$local_name" "docker://$REGISTRY_ADDR/workbench/$repo_name:$tag" >&2
  digest=$(cat "$cache/tmp/digest")
  [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || { log "push of $local_name gave no digest"; exit 1; }
  echo "workbench/$repo_name@$digest"
}

in_registry() {  # in_registry NAME@DIGEST: the registry holds that manifest
  local name=${1%@*} digest=${1#*@}
  curl -fsS -o /dev/null --max-time 5 -I \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY_ADDR/v2/$name/manifests/$digest"
}

base_key() {  # the base's recipe and the apt sources it is made from
  local f files=("$repo/images/base/rootfs.sh" "$repo/images/base/packages.txt")
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list; do
    [ -f "$f" ] && files+=("$f")
  done
  cat "${files[@]}" | sha256sum | cut -c1-16
}

base() {
  local key dir ref ctr
  key=$(base_key); dir=$cache/base/$key
  if [ -s "$dir/ref" ] && in_registry "$(cat "$dir/ref")"; then cat "$dir/ref"; return; fi
  mkdir -p "$dir"
  if [ ! -s "$dir/rootfs.tar" ]; then
    log "base: making the Debian bookworm root filesystem (mmdebstrap)"
    bash "$repo/images/base/rootfs.sh" "$dir.tmp" >&2
    mv "$dir.tmp/rootfs.tar" "$dir.tmp/packages.lock" "$dir/" && rmdir "$dir.tmp"
  fi
  if ! diff -q "$repo/images/base/packages.lock" "$dir/packages.lock" >/dev/null 2>&1; then
    log "base: the packages differ from images/base/packages.lock (Debian moved on):"
    diff "$repo/images/base/packages.lock" "$dir/packages.lock" | grep '^[<>]' | head -20 >&2 || true
    log "base: review and copy $dir/packages.lock to images/base/packages.lock"
  fi
  ctr=$(buildah "${storage[@]}" from --quiet scratch)
  buildah "${storage[@]}" add --quiet "$ctr" "$dir/rootfs.tar" / >/dev/null
  buildah "${storage[@]}" config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 \
    --label org.opencontainers.image.title=workbench-base \
    --label org.opencontainers.image.description="Debian bookworm minbase with Python 3.11" \
    --label org.opencontainers.image.source=paddle-workbench "$ctr"
  buildah "${storage[@]}" commit --quiet --rm "$ctr" "localhost/workbench/base:$key" >/dev/null
  ref=$(push "localhost/workbench/base:$key" base "$key")
  echo "$ref" >"$dir/ref"
  echo "$ref"
}

# The key of everything an image is made from, and the commit its labels name: a change to any of
# it is a new build (buildah's layer cache keeps that short when only the sources changed).
INPUTS=(images launcher_magic hub_config workbench_contract extensions pyproject.toml
  scripts/build-trivy.sh)
inputs_key() {
  (cd "$repo" && find "${INPUTS[@]}" -type f -not -path '*/__pycache__/*' \
      -not -path 'images/dist/*' 2>/dev/null | LC_ALL=C sort | xargs sha256sum) \
    | cat - <(base_key) <(echo "$REVISION") | sha256sum | cut -c1-16
}

# The commit the labels name: the last one that changed an input. A commit that touches none of
# them (tests, docs, deploy files) keeps the key, so its build is the check of seconds above.
inputs_revision() {
  local rev
  rev=$(git -C "$repo" log -1 --format=%H -- "${INPUTS[@]}" 2>/dev/null) || rev=
  echo "${rev:-unknown}"
}

# The build context: images/ and the project wheel, as the pipeline's repository root holds them.
context() {
  local ctx=$cache/context
  rm -rf "$ctx" && mkdir -p "$ctx/images/dist"
  (cd "$repo" && tar --exclude=dist --exclude=__pycache__ -cf - images) | tar -xf - -C "$ctx"
  if ! "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$ctx/images/dist" "$repo" \
      >"$cache/tmp/wheel.log" 2>&1; then
    log "the project's wheel did not build:"; tail -20 "$cache/tmp/wheel.log" >&2; exit 1
  fi
  echo "$ctx"
}

# image NAME BASE_REF CONTEXT DOCKERFILE: build, gate, push; prints the digest reference. The labels
# name the base by repository and digest without the registry's address, which is this machine's
# and changes from run to run while the bytes (and the cached image) stay the same.
image() {
  local name=$1 base_ref=$2 ctx=$3 dockerfile=$4 tag problem ca=()
  [ -f "$ctx/$dockerfile" ] || { log "no $dockerfile; name cpu, hub, proxy or a folder"; exit 2; }
  problem=$("$PYTHON" -c 'import sys; from hub_config.cluster_policy.images import base_reference_problem as p; print(p(sys.argv[1]) or "")' "$base_ref")
  [ -z "$problem" ] || { log "BASE $base_ref: $problem"; exit 2; }
  local bundle=${BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
  [ -s "$bundle" ] && ca=(--volume "$bundle:/etc/ssl/certs/ca-certificates.crt:ro")
  tag=${REVISION:0:12}
  log "$name: building $dockerfile on $base_ref"
  (cd "$ctx" && buildah "${storage[@]}" bud --quiet --isolation chroot --network host --layers \
    --signature-policy "$conf/policy.json" --pull-always=false \
    --build-arg "BASE=$base_ref" "${ca[@]}" \
    --label "org.opencontainers.image.title=workbench-$name" \
    --label "org.opencontainers.image.revision=$REVISION" \
    --label "org.opencontainers.image.source=paddle-workbench" \
    --label "org.opencontainers.image.base.name=${base_ref#"$REGISTRY_ADDR/"}" \
    --label "org.opencontainers.image.base.digest=${base_ref##*@}" \
    --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}")" \
    --file "$dockerfile" --tag "localhost/workbench/$name:$tag" . >&2)
  gate "$name" "localhost/workbench/$name:$tag"
  push "localhost/workbench/$name:$tag" "$name" "$tag"
}

# Scan before the push: the image as an OCI layout, Trivy's verdict, the SBOM next to it.
gate() {
  local name=$1 local_name=$2 archive=$cache/tmp/$1.oci
  rm -rf "$archive"
  skopeo_ copy --quiet "$storage_ref$local_name" "oci:$archive" >&2
  if [ "$SCAN" = off ]; then
    log "$name: SCAN=off: pushed without a vulnerability scan"
  else
    bash "$here/scan.sh" "$archive" "$out/$name" >&2
  fi
  rm -rf "$archive"
}

need
configure
REVISION=${REVISION:-$(inputs_revision)}
case "${1:-}" in
  key) inputs_key; exit ;;
  base|image|all) ;;
  *) sed -n '2,27p' "$0" >&2; exit 2 ;;
esac
# One build per cache at a time (buildah's storage is shared; a second build waits, then finds its
# images built). Two test sessions at once need two caches (PADDLE_WORKBENCH_CACHE).
exec 9>"$cache/.lock"
flock 9
bash "$here/registry.sh" start >/dev/null 9>&-  # the registry outlives the build: not its lock
key=$(inputs_key)
built=$out/$key/refs
print_refs() { sed "s|=|=$REGISTRY_ADDR/|" "$1" | tee "$out/refs.env"; }
if [ "$1" = all ] && [ -s "$built" ]; then
  complete=1
  while IFS== read -r _ ref; do in_registry "$ref" || complete=0; done <"$built"
  if [ "$complete" = 1 ]; then log "up to date (key $key)"; print_refs "$built"; exit 0; fi
fi
base_ref=$(base)
case "$1" in
  base) echo "base=$base_ref" >"$cache/tmp/refs"; print_refs "$cache/tmp/refs" ;;
  image)
    name=${2:?name the image: cpu, hub, proxy or a folder with a Dockerfile}
    if [ -d "$name" ]; then
      ref=$(image "$(basename "$name")" "$REGISTRY_ADDR/$base_ref" "$(cd "$name" && pwd)" Dockerfile)
      name=$(basename "$name")
    else
      ref=$(image "$name" "$REGISTRY_ADDR/$base_ref" "$(context)" "images/$name/Dockerfile")
    fi
    echo "$name=$ref" >"$cache/tmp/refs"
    print_refs "$cache/tmp/refs" ;;
  all)
    ctx=$(context)
    mkdir -p "$out/$key"
    echo "base=$base_ref" >"$out/$key/refs.tmp"
    for name in cpu hub proxy; do
      ref=$(image "$name" "$REGISTRY_ADDR/$base_ref" "$ctx" "images/$name/Dockerfile")
      echo "$name=$ref" >>"$out/$key/refs.tmp"
    done
    mv "$out/$key/refs.tmp" "$built"
    print_refs "$built" ;;
esac
