#!/usr/bin/env bash
# The internal registry on one machine: Debian's docker-registry (the CNCF distribution registry)
# on the loopback address, its blobs kept in the image cache so images survive a restart.
#
#   images/local/registry.sh start    start it (if not running) and print its address host:port
#   images/local/registry.sh stop     stop the one this cache started on that address (SIGTERM,
#                                     then SIGKILL)
#   images/local/registry.sh status   print the address and exit 0 when it answers, exit 1 when not
#
# REGISTRY_ADDR (default 127.0.0.1:5000) chooses the address; it must be a loopback address: the
# registry has no authentication, so it is never offered beyond this machine.
# IMAGE_CACHE (default ~/.cache/paddle-workbench/images) holds registry/data (the blobs, shared by
# every registry started over this cache: two test sessions may each run one) and
# registry/<host_port>/ (the config, pid and log of the one on that address).
set -euo pipefail
addr=${REGISTRY_ADDR:-127.0.0.1:5000}
cache=${IMAGE_CACHE:-${PADDLE_WORKBENCH_CACHE:-$HOME/.cache/paddle-workbench}/images}
data=$cache/registry/data
dir=$cache/registry/${addr//[:]/_}
bin=${DOCKER_REGISTRY:-/usr/bin/docker-registry}

case "$addr" in
  127.*:[0-9]*|localhost:[0-9]*) ;;
  *) echo "registry: REGISTRY_ADDR=$addr is not a loopback host:port (e.g. 127.0.0.1:5000)" >&2
     exit 2 ;;
esac

answers() { curl -fsS --max-time 2 "http://$addr/v2/" >/dev/null 2>&1; }

start() {
  [ -x "$bin" ] || { echo "registry: $bin is missing (Debian package docker-registry)" >&2; exit 3; }
  mkdir -p "$data" "$dir"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    if answers; then echo "$addr"; return; fi
    stop >/dev/null
  fi
  if answers; then
    echo "registry: something else already answers on $addr; choose REGISTRY_ADDR" >&2; exit 1
  fi
  cat >"$dir/config.yml" <<YAML
version: 0.1
log: {level: warn, fields: {service: registry}}
storage:
  filesystem: {rootdirectory: $data}
  delete: {enabled: true}
http:
  addr: $addr
  headers: {X-Content-Type-Options: [nosniff]}
YAML
  # Its own session, so a test's or a shell's signals do not reach it; stop() ends it by pid.
  setsid "$bin" serve "$dir/config.yml" >>"$dir/log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  for _ in $(seq 100); do
    answers && { echo "$addr"; return; }
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "registry: docker-registry did not start on $addr; its log:" >&2
  tail -5 "$dir/log" >&2
  exit 1
}

stop() {
  # A registry started before the per-address layout kept its pid in registry/pid.
  if [ ! -f "$dir/pid" ] && [ "$(cat "$cache/registry/addr" 2>/dev/null)" = "$addr" ]; then
    mkdir -p "$dir" && mv "$cache/registry/pid" "$dir/pid" && rm -f "$cache/registry/addr"
  fi
  [ -f "$dir/pid" ] || return 0
  local pid; pid=$(cat "$dir/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$dir/pid"
  echo "registry: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) answers && [ -f "$dir/pid" ] && { echo "$addr"; exit 0; }; exit 1 ;;
  *) sed -n '2,11p' "$0" >&2; exit 2 ;;
esac
