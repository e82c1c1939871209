#!/usr/bin/env bash
# Runs two Kubernetes manifest checkers, kube-score and checkov, on the rendered chart, with
# the findings the chart accepts on purpose skipped by their check IDs (why each stays is
# in charts/kube-failover/values.yaml, above `agent:`). Exits non-zero on any other
# finding. Two passes, so that a skip needed for the agent hides nothing of the rest:
#   1. the chart as installed by default (no agent), with the chart-wide skips only;
#   2. the chart with agent.enabled=true, with the agent's skips as well.
#
#   charts/check.sh
#
# Installs the pinned tools on first use, outside the work tree:
#   kube-score  built from its Go module (`go install`; needs go)
#   checkov     in a Python venv (`pip install`; needs python3)
#
# Environment (all optional):
#   HELM        helm binary (default: the pinned helm built by lab/tools/install.sh)
#   TOOLS_DIR   where the tools are kept (default ~/.cache/kube-failover/tools)
#   Further arguments are passed to `helm template` in both passes (e.g. --set ...).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
chart=$root/charts/kube-failover
tools=${TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-failover/tools}

KUBE_SCORE_VERSION=v1.20.0
CHECKOV_VERSION=3.3.30

helm=${HELM:-}
if [ -z "$helm" ]; then
  helm="$(bash "$root/lab/tools/install.sh")/helm"
fi

kube_score=$tools/kube-score-$KUBE_SCORE_VERSION/kube-score
if [ ! -x "$kube_score" ]; then
  echo "installing kube-score $KUBE_SCORE_VERSION into $(dirname "$kube_score")" >&2
  GOBIN=$(dirname "$kube_score") go install "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION"
fi
checkov=$tools/checkov-$CHECKOV_VERSION/bin/checkov
if [ ! -x "$checkov" ]; then
  echo "installing checkov $CHECKOV_VERSION into $tools/checkov-$CHECKOV_VERSION" >&2
  python3 -m venv "$tools/checkov-$CHECKOV_VERSION"
  "$tools/checkov-$CHECKOV_VERSION/bin/pip" install --quiet "checkov==$CHECKOV_VERSION"
fi

# Accepted everywhere: the controller's Deployment and the agent's DaemonSet alike.
kube_score_common=(
  # imagePullPolicy IfNotPresent: a restart must not depend on the registry, least of all
  # on a node cut off from the network. Pin image.digest instead.
  --ignore-test container-image-pull-policy
  # The controller's NetworkPolicy is opt-in (networkPolicy.enabled: it needs the API
  # server's addresses, which differ per cluster); the agent is on the host network, where
  # NetworkPolicies do not apply.
  --ignore-test pod-networkpolicy
  # Checked although optional: both Pods run with seccomp RuntimeDefault.
  --enable-optional-test container-seccomp-profile
)
checkov_common=(
  CKV_K8S_15  # Image Pull Policy should be Always: as container-image-pull-policy above.
  CKV_K8S_43  # Image should use digest: no image is published; set image.digest.
  CKV_K8S_38  # Service account token mounted: both talk to the API server.
  CKV2_K8S_6  # Pods without a NetworkPolicy: as pod-networkpolicy above.
)
# Accepted for the agent only (what it needs on the node; values.yaml says why).
kube_score_agent=(
  # uid and gid 0: its added capabilities take effect for root only, and the CRI socket
  # is root's.
  --ignore-test container-security-context-user-group-id
  # No CPU limit: throttling would delay the heartbeat and fence a healthy node. Memory
  # and ephemeral-storage limits are still required.
  --ignore-container-cpu-limit
)
checkov_agent=(
  CKV_K8S_11  # CPU limits should be set: as --ignore-container-cpu-limit above.
  CKV_K8S_19  # Host network: it brings the virtual IPs up on the node's interface.
  CKV_K8S_23  # Root containers: as container-security-context-user-group-id above.
  CKV_K8S_25  # Added capabilities: NET_ADMIN (netlink addresses), NET_RAW (ARP/NA).
  CKV_K8S_40  # High UID: uid 0, as CKV_K8S_23.
)

join() {
  local IFS=,
  echo "$*"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0

# check NAME HELM_ARGS... -- KUBE_SCORE_ARGS... -- CHECKOV_SKIPS...
check() {
  local name=$1
  shift
  local helm_args=() ks_args=() ck_skips=()
  while [ "$1" != -- ]; do helm_args+=("$1"); shift; done
  shift
  while [ "$1" != -- ]; do ks_args+=("$1"); shift; done
  shift
  ck_skips=("$@")
  local manifest=$work/$name.yaml
  "$helm" template kube-failover "$chart" --namespace kube-failover "${helm_args[@]}" >"$manifest"

  echo "== $name: kube-score $KUBE_SCORE_VERSION"
  if "$kube_score" score "${ks_args[@]}" --exit-one-on-warning --output-format ci "$manifest" >"$work/$name.ks"; then
    echo "no findings"
  else
    failed=1
  fi
  # Only what fails: kube-score's ci format lists every passed and skipped check too.
  grep -E '^\[(CRITICAL|WARNING)\]' "$work/$name.ks" || true

  echo "== $name: checkov $CHECKOV_VERSION (skipped: $(join "${ck_skips[@]}"))"
  # Offline: --skip-download and BC_SKIP_MAPPING keep checkov from fetching guidelines.
  if BC_SKIP_MAPPING=TRUE "$checkov" --quiet --compact --skip-download --framework kubernetes \
    --skip-check "$(join "${ck_skips[@]}")" -f "$manifest" >"$work/$name.ck" 2>"$work/$name.ck.err"; then
    grep -E '^(Passed|Failed) checks' "$work/$name.ck" || true
  else
    failed=1
    cat "$work/$name.ck"
    if [ ! -s "$work/$name.ck" ]; then cat "$work/$name.ck.err" >&2; fi
  fi
}

check chart "$@" -- \
  "${kube_score_common[@]}" -- \
  "${checkov_common[@]}"
check chart+agent --set agent.enabled=true "$@" -- \
  "${kube_score_common[@]}" "${kube_score_agent[@]}" -- \
  "${checkov_common[@]}" "${checkov_agent[@]}"

if [ "$failed" != 0 ]; then
  echo "findings above: fix them, or accept them here with the reason in values.yaml" >&2
  exit 1
fi
echo "no findings beyond those accepted"
