#!/usr/bin/env bash
# Make a fresh Debian machine ready to build and run hammer2fs:
#   libfuse3 runtime, libfuse3-dev, pkg-config
#             - native-shim/fuse_ll.node, our libfuse3 low-level FUSE binding
#               (runtime package libfuse3-3 on Debian 12, libfuse3-4 on 13)
#   fuse3     - fusermount3, which mounting, unmounting and auto_unmount run
#   python3   - the fixture comparison tools used by the tests
#   gcc       - builds native-shim (FUSE binding, image locking, device sizes)
# then installs the npm packages and compiles the TypeScript.
set -euo pipefail
cd "$(dirname "$0")/.."

have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }
need=()
have_lib 'libfuse3.so.3 ' || need+=(libfuse3)
[ -e /usr/include/fuse3/fuse_lowlevel.h ] || need+=(libfuse3-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v cc >/dev/null 2>&1 || need+=(gcc)

if ((${#need[@]})); then
  SUDO=
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  pkgs=()
  for p in "${need[@]}"; do
    # libfuse3's runtime package is named after its soname version.
    if [ "$p" = libfuse3 ]; then
      p=libfuse3-3
      apt-cache show libfuse3-3 >/dev/null 2>&1 || p=libfuse3-4
    fi
    pkgs+=("$p")
  done
  echo "hammer2fs: installing system packages: ${pkgs[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

# The FUSE device: load the module if it is missing (possible only as root).
if [ ! -e /dev/fuse ] && [ "$(id -u)" = 0 ]; then modprobe fuse 2>/dev/null || true; fi

stamp=node_modules/.hammer2fs-installed
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  touch "$stamp"
fi
# (Re)build the native pieces when one is missing or older than its source.
stale() { [ ! -f "native-shim/build/Release/$1.node" ] || [ "native-shim/$1.c" -nt "native-shim/build/Release/$1.node" ]; }
if stale hammer2_shim || stale fuse_ll; then node native-shim/build.js; fi
npx tsc -p tsconfig.json
