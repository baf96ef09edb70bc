#!/usr/bin/env bash
# Starts one real Gitea (built from the Go module proxy by go-build.sh) on a free loopback
# port, with its sqlite database, repositories and logs under DIR.
#
#   tests/support/gitea.sh start DIR
#
# Creates an admin user and an API token allowed to write repositories, writes DIR/env
# (GITEA_URL, GITEA_USER, GITEA_PASSWORD, GITEA_TOKEN), prints `ready` on stdout, then runs
# until its standard input closes or it gets SIGINT/SIGTERM, and stops Gitea. Same contract
# as control-plane.sh: the integration tests hold the pipe for the life of the test binary.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
cmd=${1:-}
dir=${2:-}
[ "$cmd" = start ] && [ -n "$dir" ] || { echo "usage: $0 start DIR" >&2; exit 2; }

"$here/go-build.sh" gitea >&2
bin=$("$here/go-build.sh" bin-dir)
gitea=$bin/gitea
# Templates and options come from the module's source tree (no bindata in this build).
workpath=$(cat "$bin/gitea.workpath")
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

pid=
stop() {
  # Ignore further signals rather than die halfway: a group-wide SIGTERM is often followed
  # by the caller's own, and a server left unkilled outlives us.
  trap - EXIT
  trap '' INT TERM
  stop_pid "$pid"
  [ "${PONTOON_GITEA_CLEANUP:-}" = 1 ] && rm -rf "$dir"
  return 0
}
trap stop EXIT
trap 'exit 0' INT TERM

port=$(free_port)
user=pontoon
password=$(openssl rand -hex 16)
run_user=$(id -un)
# Gitea refuses to run as root unless told; test machines and containers often are root.
as_root=false
[ "$(id -u)" = 0 ] && as_root=true

cat > "$dir/app.ini" <<EOF
APP_NAME = pontoon test
RUN_USER = $run_user
RUN_MODE = prod
WORK_PATH = $workpath
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = $as_root

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = $port
DOMAIN = 127.0.0.1
ROOT_URL = http://127.0.0.1:$port/
APP_DATA_PATH = $dir/data
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false

[database]
DB_TYPE = sqlite3
PATH = $dir/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = $dir/repositories
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = $(openssl rand -hex 32)
INTERNAL_TOKEN = $(openssl rand -hex 48)

[service]
DISABLE_REGISTRATION = true
NO_REPLY_ADDRESS = noreply.localhost

[mailer]
ENABLED = false

[oauth2]
ENABLED = false

[actions]
ENABLED = false

[cron.update_checker]
ENABLED = false

[indexer]
REPO_INDEXER_ENABLED = false

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[webhook]
ALLOWED_HOST_LIST = loopback

[log]
MODE = file
LEVEL = Warn
ROOT_PATH = $dir/log
EOF

g=("$gitea" --work-path "$workpath" --custom-path "$dir/custom" --config "$dir/app.ini")

if ! "${g[@]}" migrate >"$dir/setup.log" 2>&1 ||
  ! "${g[@]}" admin user create --admin --username "$user" --password "$password" \
    --email "$user@example.com" --must-change-password=false >>"$dir/setup.log" 2>&1 ||
  ! token=$("${g[@]}" admin user generate-access-token --username "$user" --token-name tests \
    --scopes all --raw 2>>"$dir/setup.log" | tail -n 1) ||
  [ -z "$token" ]; then
  echo "gitea setup failed; logs in $dir" >&2
  tail -n 20 "$dir/setup.log" >&2
  exit 1
fi

url=http://127.0.0.1:$port
start_web() {
  "${g[@]}" web </dev/null >>"$dir/gitea.log" 2>&1 &
  pid=$!
  for i in $(seq 300); do
    curl -sf "$url/api/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { echo "gitea exited; logs in $dir" >&2; tail -n 20 "$dir/gitea.log" >&2; exit 1; }
    [ "$i" -lt 300 ] || { echo "gitea not ready after 60s; logs in $dir" >&2; tail -n 20 "$dir/gitea.log" >&2; exit 1; }
    sleep 0.2
  done
}
stop_web() {
  stop_pid "$pid"
  pid=
}
start_web

cat > "$dir/env" <<EOF
GITEA_URL=$url
GITEA_USER=$user
GITEA_PASSWORD=$password
GITEA_TOKEN=$token
EOF
echo ready

# Run until the holder of our stdin goes away (or a signal arrives). `stop` and `start`
# lines stop Gitea and start it again on the same port with the same data (answered with
# `stopped` and `ready`), for tests of a forge that goes down.
while IFS= read -r line; do
  case "$line" in
    stop) stop_web; echo stopped ;;
    start) start_web; echo ready ;;
  esac
done
