#!/usr/bin/env bash
# Builds the pinned control-plane tools from Go modules into a cache outside the work
# tree, keyed by version. Idempotent: a tool already in the cache is never rebuilt.
#
#   lab/tools/install.sh          build what is missing, print the bin directory
#
# Cache: ${KUBE_FAILOVER_TOOLS_CACHE:-$HOME/.cache/kube-failover/tools}
#   <tool>-<version>/            one directory per tool and version, complete or absent
#   set-<k8s>-<etcd>-<kwok>-<helm>-<prometheus>/bin   symlinks to the binaries of this pinned set
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${KUBE_FAILOVER_TOOLS_CACHE:-$HOME/.cache/kube-failover/tools}
mkdir -p "$cache"
# One build at a time: a second run (another test job) waits, then finds the cache filled.
if command -v flock >/dev/null; then
  exec 9>"$cache/.lock"
  flock 9
fi
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0

log() { printf '[controlplane] %s\n' "$*" >&2; }
die() { printf '[controlplane] ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "go is not on PATH; install Go 1.26 (the wrapper modules declare go 1.26.0)"

# build NAME VERSION MODULE_DIR LDFLAGS PACKAGE...
build() {
  local name=$1 version=$2 moddir=$3 ldflags=$4; shift 4
  local dest=$cache/$name-$version
  if [ -f "$dest/.complete" ]; then
    log "$name $version: cached in $dest"
    return
  fi
  local tmp
  tmp=$(mktemp -d "$cache/.$name-$version.XXXXXX")
  log "$name $version: building $* (a cold build takes minutes; progress every 30 s)"
  local start=$SECONDS
  (cd "$moddir" && go build -trimpath -ldflags "$ldflags" -o "$tmp/" "$@") >"$tmp/build.log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && log "$name: still building, $((SECONDS - start)) s, $(find "$(go env GOCACHE)" -type f 2>/dev/null | wc -l) files in the Go build cache"
  done
  if ! wait "$pid"; then
    tail -n 40 "$tmp/build.log" >&2
    rm -rf "$tmp"
    die "$name $version: go build failed in $moddir (log above)"
  fi
  rm -f "$tmp/build.log"
  touch "$tmp/.complete"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  log "$name $version: built in $((SECONDS - start)) s"
}

k8s_minor=${KUBERNETES_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
build kubernetes "$KUBERNETES_VERSION" "$here/kubernetes" "-s -w$k8s_ldflags" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
build etcd "$ETCD_VERSION" "$here/etcd" "-s -w" go.etcd.io/etcd/server/v3
# go names the binary after the package directory, `server`.
[ -f "$cache/etcd-$ETCD_VERSION/etcd" ] || mv "$cache/etcd-$ETCD_VERSION/server" "$cache/etcd-$ETCD_VERSION/etcd"
build kwok "$KWOK_VERSION" "$here/kwok" "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
# KWOK's controller runs no stages unless given some; use the ones its pinned module ships
# (kwokctl's defaults): node initialise, node heartbeat with Lease, pod ready/complete/delete.
stages=$cache/kwok-$KWOK_VERSION/stages
if [ ! -f "$stages/.complete" ]; then
  src=$(cd "$here/kwok" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
  [ -d "$src/kustomize/stage" ] || die "kwok module source not found (go mod download sigs.k8s.io/kwok@$KWOK_VERSION)"
  mkdir -p "$stages"
  cp "$src"/kustomize/stage/node/fast/node-initialize.yaml \
     "$src"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
     "$src"/kustomize/stage/pod/fast/pod-ready.yaml \
     "$src"/kustomize/stage/pod/fast/pod-complete.yaml \
     "$src"/kustomize/stage/pod/fast/pod-delete.yaml "$stages/"
  chmod 644 "$stages"/*.yaml
  touch "$stages/.complete"
  log "kwok stages copied to $stages"
fi
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
build helm "$HELM_VERSION" "$here/helm" "$helm_ldflags" helm.sh/helm/v3/cmd/helm

# promtool checks and unit-tests the chart's alert rules (no Prometheus server is run).
build prometheus "$PROMETHEUS_VERSION" "$here/prometheus" \
  "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
  github.com/prometheus/prometheus/cmd/promtool

set_dir=$cache/set-$KUBERNETES_VERSION-$ETCD_VERSION-$KWOK_VERSION-$HELM_VERSION-$PROMETHEUS_VERSION/bin
mkdir -p "$set_dir"
for b in kubernetes-"$KUBERNETES_VERSION"/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl} \
         etcd-"$ETCD_VERSION"/etcd kwok-"$KWOK_VERSION"/kwok helm-"$HELM_VERSION"/helm \
         prometheus-"$PROMETHEUS_VERSION"/promtool; do
  [ -x "$cache/$b" ] || die "missing $cache/$b after build"
  ln -sfn "$cache/$b" "$set_dir/$(basename "$b")"
done
ln -sfn "$stages" "$set_dir/kwok-stages"
"$set_dir/kube-apiserver" --version >&2
log "tools ready in $set_dir ($(du -sh "$cache" | cut -f1) in $cache)"
echo "$set_dir"
