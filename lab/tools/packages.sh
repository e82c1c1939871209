#!/usr/bin/env bash
# Installs the distribution packages the build and the lab need, if missing (Debian/Ubuntu,
# as root). `packages.sh build`: what compiling the workspace needs (protoc, for the
# container runtime's gRPC API; make and a C compiler, for jemalloc). `packages.sh test`: that, plus what the tests use:
# iproute2 (network namespaces), python3 (client and workload stand-ins), containerd, runc
# and busybox-static (a real container runtime for the self-fencing test), chromium and
# chromium-driver (a real browser, driven through WebDriver, for the dashboard's test).
set -euo pipefail
want=(protobuf-compiler make gcc)
if [ "${1:-build}" = test ]; then
  want+=(iproute2 python3 containerd runc busybox-static chromium chromium-driver)
fi
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]}" >&2
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "not root and no sudo: install ${missing[*]} by hand" >&2; exit 1; }
  sudo=sudo
fi
${sudo:-} apt-get update -qq
DEBIAN_FRONTEND=noninteractive ${sudo:-} apt-get install -y -qq "${missing[@]}" >&2
