#!/usr/bin/env bash
# `make demo`: two local control planes (staging and prod), each with a controller
# manager, a scheduler and three kwok nodes, so Deployments roll out into real Pods; the
# example platform repo as a local Git repository, and pontoon syncing it. Prints what to
# look at; Ctrl-C stops everything this script started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${PONTOON_DEMO_DIR:-$root/.cache/demo}
port=${PONTOON_DEMO_PORT:-8080}

say() { printf '\033[1m%s\033[0m\n' "$*"; }

"$root/tests/support/install-deps.sh"
say "building pontoon"
cargo build --release --locked --bin pontoon --manifest-path "$root/Cargo.toml"
pontoon="$root/target/release/pontoon"

rm -rf "$work"
mkdir -p "$work"
pids=()
cleanup() {
  # Ignore further signals rather than die halfway: a group-wide SIGTERM is often followed
  # by the caller's own, and a server left unkilled outlives us.
  trap - EXIT
  trap '' INT TERM
  say "stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# Each control plane runs until its stdin closes: give it a pipe that we hold open.
for cluster in staging prod; do
  mkfifo "$work/$cluster.in"
  "$root/tests/support/control-plane.sh" start "$work/$cluster" --nodes < "$work/$cluster.in" > "$work/$cluster.out" 2>"$work/$cluster.err" &
  pids+=($!)
  exec {fd}>"$work/$cluster.in"
  eval "fd_$cluster=$fd"
done
for cluster in staging prod; do
  for _ in $(seq 600); do grep -q '^ready$' "$work/$cluster.out" 2>/dev/null && break; sleep 0.2; done
  grep -q '^ready$' "$work/$cluster.out" || { cat "$work/$cluster.err" >&2; echo "control plane $cluster did not start" >&2; exit 1; }
done
kubectl=$("$root/tests/support/go-build.sh" bin-dir)/kubectl

# The example platform repo as a Git repository, as a platform team would have it.
repo="$work/platform.git"
git init -q -b main "$work/platform"
cp -r "$root/config/example-platform/." "$work/platform/"
git -C "$work/platform" add -A
git -C "$work/platform" -c user.name=demo -c user.email=demo@example.com commit -q -m "example platform"
git clone -q --bare "$work/platform" "$repo"

cat > "$work/pontoon.yaml" <<YAML
source:
  url: file://$repo
  ref:
    branch: main
  pollInterval: 5s
  cacheDir: $work/cache
clusters:
  - name: staging
    kubeconfig: $work/staging/kubeconfig
  - name: prod
    kubeconfig: $work/prod/kubeconfig
listen:
  http: 127.0.0.1:$port
sync:
  resyncInterval: 10s
  healthTimeout: 2m
YAML
"$pontoon" config check "$work/pontoon.yaml"

"$pontoon" run --config "$work/pontoon.yaml" > "$work/pontoon.log" 2>&1 &
pids+=($!)

# No CloudNativePG operator runs here (its Postgres pods could not run on kwok's nodes), so
# nothing would ever report a Database healthy, and checkout, which waits for its
# database (dependsOn), would never be applied. This plays that operator, out loud and
# once per Cluster, 20 seconds after the Cluster appears: long enough to watch checkout
# wait for Database/ledger on the status page, then roll out.
(
  declare -A first
  while sleep 2; do
    for cluster in staging prod; do
      export KUBECONFIG="$work/$cluster/kubeconfig"
      while read -r ns name phase; do
        [ -n "$name" ] && [ -z "$phase" ] || continue
        key="$cluster/$ns/$name"
        : "${first[$key]:=$SECONDS}"
        [ $((SECONDS - first[$key])) -ge 20 ] || continue
        "$kubectl" -n "$ns" patch clusters.postgresql.cnpg.io "$name" --subresource=status --type=merge \
          -p '{"status":{"phase":"Cluster in healthy state"}}' >/dev/null 2>&1 &&
          say "demo: playing the CloudNativePG operator on $cluster: Cluster $ns/$name is 'Cluster in healthy state'"
      done < <("$kubectl" get clusters.postgresql.cnpg.io -A \
        -o jsonpath='{range .items[*]}{.metadata.namespace} {.metadata.name} {.status.phase}{"\n"}{end}' 2>/dev/null)
    done
  done
) &
pids+=($!)

cat <<TEXT

$(say "pontoon is running")
  status page     http://127.0.0.1:$port/
  status as JSON  http://127.0.0.1:$port/api/status
  metrics         http://127.0.0.1:$port/metrics
  daemon log      $work/pontoon.log

The Deployments roll out for real: ReplicaSets, and Pods scheduled onto kwok's fake
nodes that start and turn Ready (no container runs; kwok plays the kubelet):
  KUBECONFIG=$work/staging/kubeconfig $kubectl get pods -A -o wide

Health tells the truth: payments' checkout waits for its database (dependsOn), and no
CloudNativePG operator runs here, so this script plays it 20s after each Cluster appears
(watch the status page say "waiting for Database/ledger" until then). Prod takes each
commit once staging has been healthy at it for 30s (rollout stages):
  KUBECONFIG=$work/staging/kubeconfig $kubectl -n payments get clusters.postgresql.cnpg.io,deployments

Make drift: pontoon watches what it manages and puts it back at once (the log names
who changed what):
  KUBECONFIG=$work/staging/kubeconfig $kubectl -n payments set image deployment/checkout app=registry.example.com/payments/checkout:hotfix
  KUBECONFIG=$work/staging/kubeconfig $kubectl -n payments get deployment checkout -o jsonpath='{.spec.template.spec.containers[0].image}{"\n"}'
The search team runs in report mode on prod: the same edit there is left as it is and
the unit turns OutOfSync on the status page:
  KUBECONFIG=$work/prod/kubeconfig $kubectl -n search set image deployment/query app=registry.example.com/search/query:hotfix

Change the platform: commit to $work/platform and push to $repo
  (git -C $work/platform push $repo main); pontoon picks it up within 5s.

Ctrl-C stops everything.
TEXT
wait "${pids[2]}"
