#!/usr/bin/env bash
# Starts one real Kubernetes control plane (etcd + kube-apiserver) on free loopback ports,
# the way controller-runtime's envtest does: no controller manager, no scheduler, no nodes.
#
#   tests/support/control-plane.sh start DIR
#
# Writes DIR/kubeconfig (admin, group system:masters) and DIR/env, prints `ready` on
# stdout, then runs until its standard input closes or it gets SIGINT/SIGTERM, and stops
# everything it started. While it runs, a line `stop-apiserver` on its standard input
# stops kube-apiserver (answered with `stopped`) and `start-apiserver` starts it again on
# the same port with the same data (answered with `ready`): fault tests use them. The
# integration tests hold that pipe open for as long as the test binary lives, so the
# servers die with it, also when a test panics or the binary is killed. `make demo` runs
# it in a terminal, where Ctrl-C stops it. PONTOON_CP_PROFILING=true serves the
# apiserver's /debug/pprof (for `go tool pprof` while a benchmark runs).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
cmd=${1:-}
dir=${2:-}
[ "$cmd" = start ] && [ -n "$dir" ] || { echo "usage: $0 start DIR" >&2; exit 2; }

"$here/go-build.sh" control-plane >&2
bin=$("$here/go-build.sh" bin-dir)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

pids=()
api_pid=
stop() {
  trap - EXIT INT TERM
  [ -z "$api_pid" ] || stop_pid "$api_pid"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  # Tests ask for their data to go with them; `make demo` keeps it for a look afterwards.
  [ "${PONTOON_CP_CLEANUP:-}" = 1 ] && rm -rf "$dir"
  return 0
}
trap stop EXIT
trap 'exit 0' INT TERM

etcd_client=$(free_port)
etcd_peer=$(free_port)
api_port=$(free_port)

# Service-account signing key and the admin's token.
[ -f "$dir/sa.key" ] || openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
token=$(openssl rand -hex 24)
printf '%s,admin,admin,"system:masters"\n' "$token" > "$dir/tokens.csv"

"$bin/etcd" \
  --name=pontoon-test \
  --data-dir="$dir/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_client" \
  --advertise-client-urls="http://127.0.0.1:$etcd_client" \
  --listen-peer-urls="http://127.0.0.1:$etcd_peer" \
  --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
  --initial-cluster="pontoon-test=http://127.0.0.1:$etcd_peer" \
  --unsafe-no-fsync \
  --quota-backend-bytes=4294967296 \
  --log-level=warn \
  </dev/null >"$dir/etcd.log" 2>&1 &
pids+=($!)

# Every write request, with who sent it (user, impersonated user, user agent) and when:
# tests count a client's writes from it. Reads are left out to keep it cheap.
cat > "$dir/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
POLICY

start_apiserver() {
  "$bin/kube-apiserver" \
    --audit-policy-file="$dir/audit-policy.yaml" \
    --audit-log-path="$dir/audit.log" \
    --audit-log-maxsize=200 \
    --audit-log-maxbackup=1 \
    --etcd-servers="http://127.0.0.1:$etcd_client" \
    --cert-dir="$dir/certs" \
    --secure-port="$api_port" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$dir/sa.pub" \
    --service-account-signing-key-file="$dir/sa.key" \
    --authorization-mode=RBAC \
    --token-auth-file="$dir/tokens.csv" \
    --disable-admission-plugins=ServiceAccount \
    --endpoint-reconciler-type=none \
    --service-cluster-ip-range=10.96.0.0/16 \
    --allow-privileged=true \
    --enable-priority-and-fairness=false \
    --profiling="${PONTOON_CP_PROFILING:-false}" \
    --v=0 \
    </dev/null >>"$dir/kube-apiserver.log" 2>&1 &
  api_pid=$!
}

# Ready when /readyz answers; the serving certificate exists by then.
wait_ready() {
  for i in $(seq 600); do
    if curl -sfk -H "Authorization: Bearer $token" "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; then
      return 0
    fi
    for pid in "${pids[@]}" "$api_pid"; do
      kill -0 "$pid" 2>/dev/null || { echo "control plane process $pid exited; logs in $dir" >&2; tail -n 20 "$dir"/*.log >&2; exit 1; }
    done
    [ "$i" -lt 600 ] || { echo "kube-apiserver not ready after 120s; logs in $dir" >&2; tail -n 20 "$dir/kube-apiserver.log" >&2; exit 1; }
    sleep 0.2
  done
}

start_apiserver
wait_ready

ca=$(base64 -w0 < "$dir/certs/apiserver.crt")
cat > "$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $ca
users:
- name: admin
  user:
    token: $token
contexts:
- name: local
  context:
    cluster: local
    user: admin
current-context: local
EOF
cat > "$dir/env" <<EOF
API_SERVER=https://127.0.0.1:$api_port
ETCD=http://127.0.0.1:$etcd_client
ADMIN_TOKEN=$token
KUBECONFIG=$dir/kubeconfig
KUBECTL=$bin/kubectl
EOF
echo ready

# Run until the holder of our stdin goes away (or a signal arrives).
while IFS= read -r line; do
  case "$line" in
    stop-apiserver) stop_pid "$api_pid"; echo stopped ;;
    start-apiserver) start_apiserver; wait_ready; echo ready ;;
  esac
done
