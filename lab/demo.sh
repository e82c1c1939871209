#!/usr/bin/env bash
# The main job on a fresh machine: the packages the build needs, then the failover
# demonstration (`kube-failover-lab demo`, which ends once the failover is shown; to keep
# a control plane running and try things by hand, see `cargo lab playground`).
# The control-plane tools are built on first use (lab/tools/install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
command -v go >/dev/null || { echo "go not found: install Go 1.26 (needed to build the control plane)" >&2; exit 1; }
bash lab/tools/packages.sh build
exec cargo run --release -p kube-failover-lab -- demo "$@"
