#!/usr/bin/env bash
# Rewrites the wrapper Go modules under lab/tools/ from versions.env.
#
# Kubernetes and etcd cannot be built with a plain `go install pkg@version`: their go.mod
# files point their own sub-modules at local directories with `replace`, which a dependent
# module ignores. Each wrapper module requires the upstream module at the pinned version
# and, for Kubernetes, replaces every staging module with its published v0.x.y release.
# The list of staging modules is read from the real go.mod, never typed by hand.
#
# Run it by hand after changing versions.env; commit the resulting go.mod and go.sum.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local

gomod_of() { go mod download -json "$1" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p'; }

write_module() { # dir module-path go-version
  local dir=$1 path=$2 gover=$3
  rm -f "$dir/go.mod" "$dir/go.sum"
  (cd "$dir" && go mod init "$path" >/dev/null 2>&1 && go mod edit -go="$gover")
}

# --- Kubernetes -------------------------------------------------------------------------
dir=$here/kubernetes
write_module "$dir" kube-failover.io/controlplane/kubernetes 1.26.0
kmod=$(gomod_of "k8s.io/kubernetes@$KUBERNETES_VERSION")
staging_version="v0.${KUBERNETES_VERSION#v1.}"
args=(-require="k8s.io/kubernetes@$KUBERNETES_VERSION")
while read -r m; do
  args+=(-replace="$m=$m@$staging_version")
done < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\/src\// {print $1}' "$kmod")
(cd "$dir" && go mod edit "${args[@]}")
for t in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  (cd "$dir" && go mod edit -tool="k8s.io/kubernetes/cmd/$t")
done
(cd "$dir" && go mod tidy)
echo "kubernetes: $(grep -c '=> k8s.io' "$dir/go.mod") staging modules replaced with $staging_version"

# --- etcd -------------------------------------------------------------------------------
dir=$here/etcd
write_module "$dir" kube-failover.io/controlplane/etcd 1.25.0
(cd "$dir" && go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION" -tool=go.etcd.io/etcd/server/v3 && go mod tidy)
echo "etcd: server $ETCD_VERSION"

# --- KWOK -------------------------------------------------------------------------------
dir=$here/kwok
write_module "$dir" kube-failover.io/controlplane/kwok 1.26.0
(cd "$dir" && go mod edit -require="sigs.k8s.io/kwok@$KWOK_VERSION" -tool=sigs.k8s.io/kwok/cmd/kwok && go mod tidy)
echo "kwok: $KWOK_VERSION"

# --- Helm -------------------------------------------------------------------------------
dir=$here/helm
write_module "$dir" kube-failover.io/controlplane/helm 1.25.0
(cd "$dir" && go mod edit -require="helm.sh/helm/v3@$HELM_VERSION" -tool=helm.sh/helm/v3/cmd/helm && go mod tidy)
echo "helm: $HELM_VERSION"

# --- promtool ---------------------------------------------------------------------------
dir=$here/prometheus
write_module "$dir" kube-failover.io/controlplane/prometheus 1.26.0
(cd "$dir" && go mod edit -require="github.com/prometheus/prometheus@$PROMETHEUS_VERSION" -tool=github.com/prometheus/prometheus/cmd/promtool && go mod tidy)
echo "prometheus: $PROMETHEUS_VERSION (promtool)"
