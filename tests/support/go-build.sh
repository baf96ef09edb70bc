#!/usr/bin/env bash
# Builds the real servers pontoon's tests talk to (kube-apiserver, kubectl, etcd, gitea)
# from the Go module proxy, the way any Go program depends on a Go module: a throwaway
# consumer go.mod under the cache that requires the module at its tag and repeats the
# `replace` lines that module's own release needs. Nothing is vendored into this repository.
#
#   tests/support/go-build.sh control-plane   # kube-apiserver, kubectl, etcd
#   tests/support/go-build.sh nodes           # kube-controller-manager, kube-scheduler, kwok
#   tests/support/go-build.sh gitea
#   tests/support/go-build.sh sops            # sops and age-keygen
#   tests/support/go-build.sh packages        # helm, kustomize, and an OCI registry
#   tests/support/go-build.sh bin-dir         # prints where the binaries are
#
# Binaries are cached under $PONTOON_CACHE (default ~/.cache/pontoon): a second run only
# checks that they exist.
set -euo pipefail

K8S_VERSION=1.37.2
ETCD_VERSION=3.6.16
GITEA_VERSION=1.26.0
KWOK_VERSION=0.8.0
SOPS_VERSION=3.13.3
AGE_VERSION=1.3.2
HELM_VERSION=4.3.1
KUSTOMIZE_VERSION=5.8.2
REGISTRY_VERSION=3.1.2

CACHE=${PONTOON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pontoon}
BIN="$CACHE/bin"
export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOFLAGS=-mod=mod GOTOOLCHAIN=local
export CGO_ENABLED=${CGO_ENABLED:-0}
mkdir -p "$BIN"

log() { printf 'go-build: %s\n' "$*" >&2; }

# consumer DIR MODULE VERSION [SIBLING_VERSION]
# Writes DIR/go.mod requiring MODULE@VERSION. Each `replace X => ./path` of the module's
# own go.mod points into the module's own repository; it becomes `replace X => X
# SIBLING_VERSION` (default VERSION: etcd tags its modules together; Kubernetes publishes
# its staging directories as v0.Y.Z). Other replace lines are copied unchanged.
consumer() {
  local dir=$1 module=$2 version=$3 staging=${4:-$3}
  mkdir -p "$dir"
  local modfile
  modfile=$(cd "$CACHE" && go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$modfile" ] || { log "cannot download $module@$version"; exit 1; }
  {
    echo "module pontoon.test/build/$(basename "$dir")"
    echo
    sed -n 's/^go \(.*\)$/go \1/p' "$modfile" | head -1
    grep -E '^godebug ' "$modfile" || true
    echo
    echo "require $module $version"
    echo
    echo "replace ("
    # single-line and block forms of replace
    awk '
      /^replace \(/ { inblock=1; next }
      inblock && /^\)/ { inblock=0; next }
      inblock { print; next }
      /^replace / { sub(/^replace /, ""); print }
    ' "$modfile" | while read -r line; do
      [ -n "$line" ] || continue
      case "$line" in //*) continue ;; esac
      # A trailing comment goes: xargs would trip on its quotes.
      lhs=${line%%=>*}; rhs=${line#*=>}; rhs=${rhs%%//*}
      lhs=$(echo "$lhs" | xargs); rhs=$(echo "$rhs" | xargs)
      case "$rhs" in
        # etcd marks modules it must never depend on this way; nothing to resolve.
        *FORBIDDEN_DEPENDENCY*) ;;
        ./*|../*) echo "	$lhs => $lhs $staging" ;;
        *) echo "	$lhs => $rhs" ;;
      esac
    done
    echo ")"
  } > "$dir/go.mod"
}

k8s_ldflags() {
  local v=v$K8S_VERSION major minor
  major=${K8S_VERSION%%.*}; minor=${K8S_VERSION#*.}; minor=${minor%%.*}
  echo "-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=$minor"
}

build_control_plane() {
  local out="$BIN/k8s-$K8S_VERSION"
  if [ ! -x "$out/kube-apiserver" ] || [ ! -x "$out/kubectl" ]; then
    local dir="$CACHE/consumers/kubernetes-$K8S_VERSION"
    log "building kube-apiserver and kubectl v$K8S_VERSION (first time: several minutes)"
    consumer "$dir" k8s.io/kubernetes "v$K8S_VERSION" "v0.${K8S_VERSION#*.}"
    (cd "$dir" && go mod download k8s.io/kubernetes \
      && go build -trimpath -ldflags "$(k8s_ldflags)" -o "$out.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver \
      && go build -trimpath -ldflags "$(k8s_ldflags)" -o "$out.tmp/kubectl" k8s.io/kubernetes/cmd/kubectl)
    rm -rf "$out"; mv "$out.tmp" "$out"
  fi
  local eout="$BIN/etcd-$ETCD_VERSION"
  if [ ! -x "$eout/etcd" ]; then
    local dir="$CACHE/consumers/etcd-$ETCD_VERSION"
    log "building etcd v$ETCD_VERSION"
    consumer "$dir" go.etcd.io/etcd/server/v3 "v$ETCD_VERSION"
    (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$eout.tmp/etcd" go.etcd.io/etcd/server/v3)
    rm -rf "$eout"; mv "$eout.tmp" "$eout"
  fi
  ln -sfn "$out/kube-apiserver" "$BIN/kube-apiserver"
  ln -sfn "$out/kubectl" "$BIN/kubectl"
  ln -sfn "$eout/etcd" "$BIN/etcd"
}

# The parts a rollout needs beyond the apiserver: kube-controller-manager and
# kube-scheduler from the apiserver's own consumer (same module, same version, same
# replace lines), and kwok, which plays the nodes and the kubelets' pod lifecycle.
build_nodes() {
  build_control_plane
  local out="$BIN/k8s-$K8S_VERSION-controllers"
  if [ ! -x "$out/kube-controller-manager" ] || [ ! -x "$out/kube-scheduler" ]; then
    local dir="$CACHE/consumers/kubernetes-$K8S_VERSION"
    log "building kube-controller-manager and kube-scheduler v$K8S_VERSION (first time: several minutes)"
    [ -f "$dir/go.mod" ] || consumer "$dir" k8s.io/kubernetes "v$K8S_VERSION" "v0.${K8S_VERSION#*.}"
    (cd "$dir" && go build -trimpath -ldflags "$(k8s_ldflags)" -o "$out.tmp/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager \
      && go build -trimpath -ldflags "$(k8s_ldflags)" -o "$out.tmp/kube-scheduler" k8s.io/kubernetes/cmd/kube-scheduler)
    rm -rf "$out"; mv "$out.tmp" "$out"
  fi
  local kout="$BIN/kwok-$KWOK_VERSION"
  if [ ! -x "$kout/kwok" ]; then
    local dir="$CACHE/consumers/kwok-$KWOK_VERSION"
    log "building kwok v$KWOK_VERSION"
    consumer "$dir" sigs.k8s.io/kwok "v$KWOK_VERSION"
    (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$kout.tmp/kwok" sigs.k8s.io/kwok/cmd/kwok)
    rm -rf "$kout"; mv "$kout.tmp" "$kout"
  fi
  ln -sfn "$out/kube-controller-manager" "$BIN/kube-controller-manager"
  ln -sfn "$out/kube-scheduler" "$BIN/kube-scheduler"
  ln -sfn "$kout/kwok" "$BIN/kwok"
}

# Gitea stores its data in sqlite through mattn/go-sqlite3, which needs cgo (a C compiler)
# and the release's tags `sqlite sqlite_unlock_notify`, with the SQLITE_MAX_VARIABLE_NUMBER
# its Makefile sets. The web UI's built frontend assets are not part of the module; the
# API and git over HTTP do not need them. (1.27 declares the module path gitea.dev and
# needs modules under gitea.dev that the module proxy does not serve.)
build_gitea() {
  local out="$BIN/gitea-$GITEA_VERSION"
  local dir="$CACHE/consumers/gitea-$GITEA_VERSION"
  if [ ! -x "$out/gitea" ] || [ ! -d "$(cat "$out/workpath" 2>/dev/null)" ]; then
    log "building gitea v$GITEA_VERSION (first time: several minutes)"
    consumer "$dir" code.gitea.io/gitea "v$GITEA_VERSION"
    mkdir -p "$out.tmp"
    (cd "$dir" && CGO_ENABLED=1 CGO_CFLAGS="$(go env CGO_CFLAGS) -DSQLITE_MAX_VARIABLE_NUMBER=32766" \
      go build -trimpath -tags 'sqlite sqlite_unlock_notify' \
      -ldflags "-s -w -X main.Version=$GITEA_VERSION -X 'main.Tags=sqlite sqlite_unlock_notify'" \
      -o "$out.tmp/gitea" code.gitea.io/gitea)
    # Without the bindata tag gitea reads templates/ and options/ from its work path: the
    # module's own directory in the module cache.
    (cd "$dir" && go list -m -f '{{.Dir}}' code.gitea.io/gitea) > "$out.tmp/workpath"
    rm -rf "$out"; mv "$out.tmp" "$out"
  fi
  ln -sfn "$out/gitea" "$BIN/gitea"
  ln -sfn "$out/workpath" "$BIN/gitea.workpath"
}

# sops encrypts the test fixtures that pontoon decrypts; age-keygen makes their keys.
# Both are pure Go; each gets its own consumer module so their dependency graphs stay apart.
build_sops() {
  local out="$BIN/sops-$SOPS_VERSION"
  if [ ! -x "$out/sops" ]; then
    local dir="$CACHE/consumers/sops-$SOPS_VERSION"
    log "building sops v$SOPS_VERSION"
    consumer "$dir" github.com/getsops/sops/v3 "v$SOPS_VERSION"
    (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/sops" github.com/getsops/sops/v3/cmd/sops)
    rm -rf "$out"; mv "$out.tmp" "$out"
  fi
  local aout="$BIN/age-$AGE_VERSION"
  if [ ! -x "$aout/age-keygen" ]; then
    local dir="$CACHE/consumers/age-$AGE_VERSION"
    log "building age-keygen v$AGE_VERSION"
    consumer "$dir" filippo.io/age "v$AGE_VERSION"
    (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$aout.tmp/age-keygen" filippo.io/age/cmd/age-keygen)
    rm -rf "$aout"; mv "$aout.tmp" "$aout"
  fi
  ln -sfn "$out/sops" "$BIN/sops"
  ln -sfn "$aout/age-keygen" "$BIN/age-keygen"
}

# gobuild NAME MODULE VERSION PACKAGE [LDFLAGS]: one binary from its own consumer module.
gobuild() {
  local name=$1 module=$2 version=$3 package=$4 ldflags=${5:-}
  local out="$BIN/$name-${version#v}"
  if [ ! -x "$out/$name" ]; then
    local dir="$CACHE/consumers/$name-${version#v}"
    log "building $name $version"
    consumer "$dir" "$module" "$version"
    (cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp/$name" "$package")
    rm -rf "$out"; mv "$out.tmp" "$out"
  fi
  ln -sfn "$out/$name" "$BIN/$name"
}

# What charts and overlays are rendered with (helm template, kustomize build), and a real
# OCI registry (distribution) to serve charts from in the tests.
build_packages() {
  gobuild helm helm.sh/helm/v4 "v$HELM_VERSION" helm.sh/helm/v4/cmd/helm \
    "-X helm.sh/helm/v4/internal/version.version=v$HELM_VERSION"
  gobuild kustomize sigs.k8s.io/kustomize/kustomize/v5 "v$KUSTOMIZE_VERSION" sigs.k8s.io/kustomize/kustomize/v5
  gobuild registry github.com/distribution/distribution/v3 "v$REGISTRY_VERSION" \
    github.com/distribution/distribution/v3/cmd/registry
}

case "${1:-}" in
  control-plane) build_control_plane ;;
  nodes) build_nodes ;;
  gitea) build_gitea ;;
  sops) build_sops ;;
  packages) build_packages ;;
  bin-dir) echo "$BIN" ;;
  *) echo "usage: $0 control-plane|nodes|gitea|sops|packages|bin-dir" >&2; exit 2 ;;
esac
