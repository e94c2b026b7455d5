#!/usr/bin/env bash
# Make a fresh Debian machine ready to build and run hammer2fs:
#   libfuse2  - fuse-native's binding links libfuse.so.2
#   fuse3     - provides fusermount, which mounting and unmounting run
#   python3   - the fixture comparison tools used by the tests
#   gcc       - builds native-shim (image locking, block device sizes)
# then installs the npm packages and compiles the TypeScript.
set -euo pipefail
cd "$(dirname "$0")/.."

have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }
need=()
have_lib 'libfuse.so.2 ' || need+=(libfuse2)
command -v fusermount >/dev/null 2>&1 || command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v cc >/dev/null 2>&1 || need+=(gcc)

if ((${#need[@]})); then
  SUDO=
  [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "hammer2fs: installing system packages: ${need[*]}" >&2
  $SUDO apt-get update -qq
  pkgs=()
  for p in "${need[@]}"; do
    # Debian 13 renamed libfuse2 to libfuse2t64.
    if [ "$p" = libfuse2 ] && ! apt-cache show libfuse2 >/dev/null 2>&1; then p=libfuse2t64; fi
    pkgs+=("$p")
  done
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

# The FUSE device: load the module if it is missing (possible only as root).
if [ ! -e /dev/fuse ] && [ "$(id -u)" = 0 ]; then modprobe fuse 2>/dev/null || true; fi

stamp=node_modules/.hammer2fs-installed
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  touch "$stamp"
fi
[ -f native-shim/build/Release/hammer2_shim.node ] || node native-shim/build.js
npx tsc -p tsconfig.json
