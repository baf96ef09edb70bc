#!/usr/bin/env bash
# Waits until the servers the tests started from this checkout have stopped.
#
#   tests/support/await-stopped.sh
#
# A test binary closes its scripts' pipes when it exits and each script then stops its
# servers, which takes a few seconds (kube-apiserver shuts down gracefully). `make test`
# ends only once they are gone, and fails naming any still running after 60 s. Only
# servers of tests match (their folders are under the temp dir); `make demo` is left alone.
set -euo pipefail

support=$(cd "$(dirname "$0")" && pwd)
tmp=${TMPDIR:-/tmp}
pattern="$support/[a-z-]+\\.sh start ${tmp%/}/pontoon-"
for _ in $(seq 600); do
  pgrep -f "$pattern" >/dev/null || exit 0
  sleep 0.1
done
echo "servers still running 60 s after the tests ended:" >&2
pgrep -a -f "$pattern" >&2 || true
exit 1
