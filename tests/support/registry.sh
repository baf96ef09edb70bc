#!/usr/bin/env bash
# Starts one real OCI registry (distribution's `registry`, built from the Go module proxy
# by go-build.sh) on a free loopback port, with a filesystem store, an access log and
# htpasswd basic auth, all under DIR.
#
#   tests/support/registry.sh start DIR
#
# The registry provisions its own htpasswd file (user `docker`, a random password it logs
# once); this script reads that password from the log. Writes DIR/env (REGISTRY_HOST as
# 127.0.0.1:PORT, REGISTRY_USER, REGISTRY_PASSWORD, REGISTRY_LOG), prints `ready`, then
# runs until its standard input closes or it gets SIGINT/SIGTERM, and stops the registry.
# `stop` and `start` lines stop it and start it again on the same port with the same data
# (answered `stopped` and `ready`), for tests of a registry that goes down.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
cmd=${1:-}
dir=${2:-}
[ "$cmd" = start ] && [ -n "$dir" ] || { echo "usage: $0 start DIR" >&2; exit 2; }

"$here/go-build.sh" packages >&2
registry=$("$here/go-build.sh" bin-dir)/registry
mkdir -p "$dir/data"
dir=$(cd "$dir" && pwd)

pid=
stop() {
  # Ignore further signals rather than die halfway: a group-wide SIGTERM is often followed
  # by the caller's own, and a server left unkilled outlives us.
  trap - EXIT
  trap '' INT TERM
  stop_pid "$pid"
  [ "${PONTOON_REGISTRY_CLEANUP:-}" = 1 ] && rm -rf "$dir"
  return 0
}
trap stop EXIT
trap 'exit 0' INT TERM

port=$(free_port)
cat > "$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: 127.0.0.1:$port
auth:
  htpasswd:
    realm: pontoon-tests
    path: $dir/htpasswd
EOF

host=127.0.0.1:$port
start_registry() {
  "$registry" serve "$dir/config.yml" </dev/null >>"$dir/registry.log" 2>&1 &
  pid=$!
  for i in $(seq 300); do
    # Any HTTP answer means it listens (/v2/ answers 401 without credentials).
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://$host/v2/" 2>/dev/null || true)
    [ -n "$code" ] && [ "$code" != 000 ] && return 0
    kill -0 "$pid" 2>/dev/null || { echo "registry exited; log in $dir" >&2; tail -n 20 "$dir/registry.log" >&2; exit 1; }
    [ "$i" -lt 300 ] || { echo "registry not ready after 60s; log in $dir" >&2; tail -n 20 "$dir/registry.log" >&2; exit 1; }
    sleep 0.2
  done
}
start_registry

password=$(sed -n 's/.*password="\{0,1\}\([A-Za-z0-9_-]*\).*/\1/p' "$dir/registry.log" | head -n 1)
[ -n "$password" ] || { echo "the registry logged no provisioned password; log in $dir" >&2; tail -n 20 "$dir/registry.log" >&2; exit 1; }

cat > "$dir/env" <<EOF
REGISTRY_HOST=$host
REGISTRY_USER=docker
REGISTRY_PASSWORD=$password
REGISTRY_LOG=$dir/registry.log
EOF
echo ready

while IFS= read -r line; do
  case "$line" in
    stop) stop_pid "$pid"; pid=; echo stopped ;;
    start) start_registry; echo ready ;;
  esac
done
