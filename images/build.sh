#!/usr/bin/env bash
# Build, scan and publish one workbench image. The internal CI runs this (see pipeline.yaml);
# it needs docker (with buildx), trivy and push rights on $REGISTRY.
# On a machine without a Docker engine (and in this project's tests), `images/build.sh local`
# builds the same Dockerfiles daemonlessly: see images/local/build.sh.
#
#   images/build.sh local [all|base|image NAME]   the daemonless build, scan and push by digest to
#                                     the local internal registry (images/local/build.sh)
#   images/build.sh registry start|stop|status    that registry (images/local/registry.sh)
#   images/build.sh check             the image policy over images/ (no docker needed)
#   images/build.sh build VARIANT     wheel of this commit + docker build, tagged with the commit;
#                                     VARIANT is cpu, gpu, hub or proxy; $BASE (a digest
#                                     reference) replaces the Dockerfile's default base
#   images/build.sh scan cpu|gpu      trivy: fail on HIGH or CRITICAL vulnerabilities
#   images/build.sh login             docker login to $REGISTRY with $REGISTRY_USER and
#                                     $REGISTRY_PASSWORD from the environment (password on stdin)
#   images/build.sh logout            forget the registry credential again
#   images/build.sh push cpu|gpu      push, then print the digest reference for tenants.yaml
#   images/build.sh all cpu|gpu       check, build, scan, push (stops at the first failure)
#   images/build.sh pin IMAGE:TAG     print IMAGE:TAG@sha256:... for a FROM line
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY=${REGISTRY:-registry.example.com/workbench}
VERSION=${VERSION:-$(git rev-parse --short=12 HEAD)}
PYTHON=${PYTHON:-python3}

image_ref() {
  case "$1" in
    cpu|gpu) echo "$REGISTRY/notebook-$1:$VERSION" ;;
    *) echo "$REGISTRY/$1:$VERSION" ;;
  esac
}

variant() {
  case "${1:-}" in
    cpu|gpu|hub|proxy) echo "$1" ;;
    *) echo "build.sh: name the variant: cpu, gpu, hub or proxy" >&2; exit 2 ;;
  esac
}

check() {
  # The policy refuses unpinned bases, root, curl|sh, sudo and unhashed installs before any build.
  "$PYTHON" -m hub_config.cli.main images check images --context .
}

build() {
  local v; v=$(variant "$1")
  rm -rf images/dist
  "$PYTHON" -m pip wheel --no-deps --wheel-dir images/dist .
  docker buildx build --load --file "images/$v/Dockerfile" --tag "$(image_ref "$v")" \
    ${BASE:+--build-arg "BASE=$BASE"} \
    --label "org.opencontainers.image.revision=$(git rev-parse HEAD)" \
    --label "org.opencontainers.image.source=paddle-workbench" .
}

scan() {
  local v; v=$(variant "$1")
  # --exit-code 1 makes any HIGH or CRITICAL finding fail the pipeline; nothing is pushed then.
  trivy image --exit-code 1 --severity HIGH,CRITICAL --no-progress "$(image_ref "$v")"
}

login() {
  : "${REGISTRY_USER:?set REGISTRY_USER (the pipeline passes it from its secrets)}"
  : "${REGISTRY_PASSWORD:?set REGISTRY_PASSWORD (the pipeline passes it from its secrets)}"
  # The password goes from the environment to docker's stdin: never into a command line (ps,
  # /proc/*/cmdline), and a here-string is not echoed by `set -x` as printf's arguments would be.
  docker login "${REGISTRY%%/*}" --username "$REGISTRY_USER" --password-stdin <<<"$REGISTRY_PASSWORD"
}

logout() {
  docker logout "${REGISTRY%%/*}"
}

push() {
  local v ref digest; v=$(variant "$1"); ref=$(image_ref "$v")
  docker push "$ref" >/dev/null
  # Tenants reference images by digest only, so print the reference the registry now holds.
  digest=$(docker buildx imagetools inspect "$ref" --format '{{json .Manifest.Digest}}' | tr -d '"')
  echo "image: $(image_ref "$v" | sed 's/:[^:/]*$//')@$digest"
}

pin() {
  local ref=${1:?build.sh pin IMAGE:TAG}
  echo "$ref@$(docker buildx imagetools inspect "$ref" --format '{{json .Manifest.Digest}}' | tr -d '"')"
}

case "${1:-}" in
  local) shift; exec bash images/local/build.sh "${@:-all}" ;;
  registry) shift; exec bash images/local/registry.sh "$@" ;;
  check) check ;;
  build) build "${2:-}" ;;
  scan) scan "${2:-}" ;;
  login) login ;;
  logout) logout ;;
  push) push "${2:-}" ;;
  all) check && build "${2:-}" && scan "${2:-}" && push "${2:-}" ;;
  pin) pin "${2:-}" ;;
  *) sed -n '2,21p' "$0"; exit 2 ;;
esac
