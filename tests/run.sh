#!/usr/bin/env bash
# The test command: sets up everything a fresh machine needs, then runs every check.
#   0. system packages the build and tests use (protoc; iproute2, python3, containerd)
#   1. the pinned Rust toolchain (rust-toolchain.toml; rustup installs it when missing)
#   2. the control-plane tools, built from pinned Go modules into a cache (slow once)
#   3. formatting, what each product links, lints, generated-CRD drift, unit, property and
#      integration tests of the whole workspace (crates/, the binary, the lab)
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
command -v go >/dev/null || { echo "go not found: install Go 1.26 (needed to build the control plane)" >&2; exit 1; }

# The test build needs room: say so plainly rather than fail mid-link with ENOSPC.
free_kib=$(df -Pk . | awk 'NR==2 {print $4}')
if [ "${free_kib:-0}" -lt $((12 * 1024 * 1024)) ]; then
  echo "warning: $((free_kib / 1024 / 1024)) GiB free here; the test build needs about 12 GiB" >&2
fi

step "system packages (lab/tools/packages.sh)"
bash lab/tools/packages.sh test
[ "$(id -u)" = 0 ] || echo "warning: not root: the virtual IP and container runtime tests (tests/vip.rs, tests/cri.rs) will fail" >&2

step "Rust toolchain"
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
step "control-plane tools (lab/tools/install.sh)"
tools_bin=$(bash lab/tools/install.sh)
export KUBE_FAILOVER_TOOLS_BIN=$tools_bin
step "cargo fmt --check"
cargo fmt --all -- --check
step "what each product links (cargo tree)"
# The plugin must build for macOS and Windows: no controller, no agent, no gRPC or protoc
# step, no netlink, on any target. The shipped binary never links the lab.
forbidden_in_plugin='^(kube-failover-controller|kube-failover-agent|kube-failover-lab|tonic|tonic-build|tonic-prost-build|prost|prost-build|k8s-cri|rtnetlink|netlink-[a-z-]+|pnet[a-z_]*|protoc-[a-z-]+) '
plugin_tree=$(cargo tree --locked -p kubectl-failover -e normal,build --target all --prefix none)
if bad=$(grep -E "$forbidden_in_plugin" <<<"$plugin_tree" | sort -u) && [ -n "$bad" ]; then
  printf 'kubectl-failover links what it must not:\n%s\n' "$bad" >&2; exit 1
fi
echo "kubectl-failover: $(sort -u <<<"$plugin_tree" | wc -l) crates, none of controller, agent, gRPC, protoc or netlink"
if cargo tree --locked -p kube-failover -e normal,build --prefix none | grep -q '^kube-failover-lab '; then
  echo "kube-failover links the lab" >&2; exit 1
fi
step "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
step "cargo test"
cargo test --locked --workspace --no-fail-fast
