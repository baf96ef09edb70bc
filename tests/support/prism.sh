#!/usr/bin/env bash
# Serves GitHub's own published API description (from @octokit/openapi) with Prism's
# request-validating mock server, for tests of pontoon's GitHub commit status requests.
#
#   tests/support/prism.sh start DIR
#
# The description is cut down to the commit status operations (taken verbatim from the
# dereferenced description, so nothing is written by hand) to keep Prism's start quick.
# Prism runs with --errors: a request that breaks the description is answered with a 4xx
# naming what is wrong, instead of a mock response. Writes DIR/env (PRISM_URL), prints
# `ready`, and stops Prism when its standard input closes (same contract as
# control-plane.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

cmd=${1:-}
dir=${2:-}
[ "$cmd" = start ] && [ -n "$dir" ] || { echo "usage: $0 start DIR" >&2; exit 2; }
CACHE=${PONTOON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pontoon}
npm_dir=$CACHE/npm/node_modules
prism=$npm_dir/.bin/prism
description=$npm_dir/@octokit/openapi/generated/api.github.com.deref.json
for f in "$prism" "$description"; do
  [ -e "$f" ] || { echo "$f is missing: run tests/support/install-deps.sh (make test does)" >&2; exit 1; }
done
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

node -e '
const [src, out] = process.argv.slice(1);
const d = require(src);
const keep = ["/repos/{owner}/{repo}/statuses/{sha}", "/repos/{owner}/{repo}/commits/{ref}/statuses"];
const paths = {};
for (const p of keep) {
  if (!d.paths[p]) { console.error("the description has no " + p); process.exit(1); }
  paths[p] = d.paths[p];
}
require("fs").writeFileSync(out, JSON.stringify({openapi: d.openapi, info: d.info, servers: d.servers, paths}));
' "$description" "$dir/github-statuses.json"

port=$(free_port)
pid=
stop() {
  # Ignore further signals rather than die halfway: a group-wide SIGTERM is often followed
  # by the caller's own, and a server left unkilled outlives us.
  trap - EXIT
  trap '' INT TERM
  stop_pid "$pid"
  [ "${PONTOON_PRISM_CLEANUP:-}" = 1 ] && rm -rf "$dir"
  return 0
}
trap stop EXIT
trap 'exit 0' INT TERM

"$prism" mock --errors -h 127.0.0.1 -p "$port" "$dir/github-statuses.json" </dev/null >"$dir/prism.log" 2>&1 &
pid=$!
url=http://127.0.0.1:$port
for i in $(seq 300); do
  # Any HTTP answer means Prism listens (an unknown path is a 404).
  code=$(curl -s -o /dev/null -w '%{http_code}' "$url/" 2>/dev/null || true)
  [ -n "$code" ] && [ "$code" != 000 ] && break
  kill -0 "$pid" 2>/dev/null || { echo "prism exited; log in $dir" >&2; tail -n 20 "$dir/prism.log" >&2; exit 1; }
  [ "$i" -lt 300 ] || { echo "prism not ready after 60s; log in $dir" >&2; tail -n 20 "$dir/prism.log" >&2; exit 1; }
  sleep 0.2
done
echo "PRISM_URL=$url" > "$dir/env"
echo ready
while IFS= read -r _; do :; done
