#!/usr/bin/env bash
# The test command: sets up everything a fresh machine needs, then runs every check.
#   1. the pinned Rust toolchain (rust-toolchain.toml; rustup installs it when missing)
#   2. the control-plane tools, built from pinned Go modules into a cache (slow once)
#   3. formatting, lints, generated-CRD drift, unit, property and integration tests of the
#      whole workspace: the controller (this package) and the lab (lab/)
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
command -v go >/dev/null || { echo "go not found: install Go 1.26 (needed to build the control plane)" >&2; exit 1; }

step "Rust toolchain"
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
step "control-plane tools (lab/tools/install.sh)"
tools_bin=$(bash lab/tools/install.sh)
export KUBE_FAILOVER_TOOLS_BIN=$tools_bin
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
step "cargo test"
cargo test --locked --workspace --no-fail-fast
