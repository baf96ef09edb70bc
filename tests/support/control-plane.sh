#!/usr/bin/env bash
# Starts one real Kubernetes control plane (etcd + kube-apiserver) on free loopback ports,
# the way controller-runtime's envtest does: no controller manager, no scheduler, no nodes.
# With --nodes it also runs what a rollout needs: kube-controller-manager (the workload,
# garbage-collector, namespace and ClusterRole-aggregation controllers), kube-scheduler,
# and kwok playing three nodes and their kubelets (tests/support/kwok-stages.yaml), so
# Deployments, StatefulSets, DaemonSets and Jobs get real ReplicaSets and Pods that are
# scheduled, start and turn Ready, and a rollout that never gets Ready fails for real.
#
#   tests/support/control-plane.sh start DIR [--nodes]
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
nodes=${3:-}
[ "$cmd" = start ] && [ -n "$dir" ] && { [ -z "$nodes" ] || [ "$nodes" = --nodes ]; } ||
  { echo "usage: $0 start DIR [--nodes]" >&2; exit 2; }

"$here/go-build.sh" control-plane >&2
[ -z "$nodes" ] || "$here/go-build.sh" nodes >&2
bin=$("$here/go-build.sh" bin-dir)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

pids=()
api_pid=
# The controllers, scheduler and kwok go first, while the apiserver still answers them.
node_pids=()
stop() {
  # Ignore further signals rather than die halfway: a group-wide SIGTERM is often followed
  # by the caller's own, and a server left unkilled outlives us.
  trap - EXIT
  trap '' INT TERM
  for pid in "${node_pids[@]}"; do stop_pid "$pid"; done
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
# The controller manager, scheduler and kwok each as a user of its own, so the audit log
# tells their writes apart from the tests'.
if [ -n "$nodes" ]; then
  for user in kube-controller-manager kube-scheduler kwok; do
    printf '%s,%s,%s,"system:masters"\n' "$(openssl rand -hex 24)" "$user" "$user" >> "$dir/tokens.csv"
  done
fi

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
# kubeconfig FILE USER TOKEN
kubeconfig() {
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $ca
users:
- name: $2
  user:
    token: $3
contexts:
- name: local
  context:
    cluster: local
    user: $2
current-context: local
EOF
}
kubeconfig "$dir/kubeconfig" admin "$token"

# Answers 200 on https://127.0.0.1:PORT/healthz.
healthy() { curl -sfk "https://127.0.0.1:$1/healthz" >/dev/null 2>&1; }

start_nodes() {
  local user
  for user in kube-controller-manager kube-scheduler kwok; do
    kubeconfig "$dir/$user.kubeconfig" "$user" "$(awk -F, -v u="$user" '$2 == u { print $1 }' "$dir/tokens.csv")"
  done
  local kcm_port scheduler_port
  kcm_port=$(free_port)
  scheduler_port=$(free_port)
  # Only the controllers a rollout, a disruption budget and a namespace's life need: no
  # node lifecycle (kwok's nodes send no heartbeats), no service-account tokens (the
  # apiserver runs without the ServiceAccount admission plugin), no root CA ConfigMap in
  # every namespace.
  "$bin/kube-controller-manager" \
    --kubeconfig="$dir/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$dir/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$dir/kube-controller-manager.kubeconfig" \
    --controllers=deployment-controller,replicaset-controller,statefulset-controller,daemonset-controller,job-controller,garbage-collector-controller,namespace-controller,disruption-controller,clusterrole-aggregation-controller \
    --leader-elect=false \
    --secure-port="$kcm_port" \
    --bind-address=127.0.0.1 \
    --cert-dir="$dir/certs-kcm" \
    --v=0 \
    </dev/null >"$dir/kube-controller-manager.log" 2>&1 &
  node_pids+=($!)
  "$bin/kube-scheduler" \
    --kubeconfig="$dir/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$dir/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$dir/kube-scheduler.kubeconfig" \
    --leader-elect=false \
    --secure-port="$scheduler_port" \
    --bind-address=127.0.0.1 \
    --cert-dir="$dir/certs-scheduler" \
    --v=0 \
    </dev/null >"$dir/kube-scheduler.log" 2>&1 &
  node_pids+=($!)
  "$bin/kwok" \
    --kubeconfig="$dir/kwok.kubeconfig" \
    --config="$here/kwok-stages.yaml" \
    --manage-nodes-with-label-selector=type=kwok \
    --node-ip=10.240.0.1 \
    --cidr=10.244.0.0/16 \
    </dev/null >"$dir/kwok.log" 2>&1 &
  node_pids+=($!)
  local i
  for i in 1 2 3; do
    cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64}
---
EOF
  done | KUBECONFIG="$dir/kubeconfig" "$bin/kubectl" apply -f - >/dev/null
  # The apiserver taints a new node not-ready; the node lifecycle controller, which would
  # lift it, is not run.
  KUBECONFIG="$dir/kubeconfig" "$bin/kubectl" taint nodes -l type=kwok node.kubernetes.io/not-ready:NoSchedule- >/dev/null
  # Ready when both components answer, the nodes are Ready, and the aggregation
  # controller has filled the `view` ClusterRole (the controller manager is at work).
  for i in $(seq 600); do
    if healthy "$kcm_port" && healthy "$scheduler_port" &&
      [ "$(KUBECONFIG="$dir/kubeconfig" "$bin/kubectl" get nodes -l type=kwok \
        -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{end}' 2>/dev/null)" = TrueTrueTrue ] &&
      [ -n "$(KUBECONFIG="$dir/kubeconfig" "$bin/kubectl" get clusterrole view -o jsonpath='{.rules[*].verbs}' 2>/dev/null)" ]; then
      return 0
    fi
    for pid in "${node_pids[@]}"; do
      kill -0 "$pid" 2>/dev/null || { echo "control plane process $pid exited; logs in $dir" >&2; tail -n 20 "$dir"/*.log >&2; exit 1; }
    done
    [ "$i" -lt 600 ] || { echo "controllers, scheduler or nodes not ready after 120s; logs in $dir" >&2; tail -n 20 "$dir"/kube-*.log "$dir/kwok.log" >&2; exit 1; }
    sleep 0.2
  done
}
[ -z "$nodes" ] || start_nodes
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
