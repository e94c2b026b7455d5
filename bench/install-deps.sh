#!/usr/bin/env bash
# Everything `npm run bench` needs, installed only where missing (idempotent):
#   hammer2fs itself  - scripts/ensure-deps.sh (libfuse, npm packages, the
#                       native shim, the TypeScript build)
#   fuse2fs           - the C FUSE ext4 driver hammer2fs is compared with
#   e2fsprogs         - mkfs.ext4 for its image
#   fio               - random I/O (without it the bench uses a built-in driver)
#   tar, coreutils    - the source-tree workload, sync -f
#   rsync             - what mirroring is compared with (--mirror)
# With --system, only the Debian packages (the bench calls it that way when a
# tool is missing at run time).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" != --system ]; then
  bash scripts/ensure-deps.sh
fi

need=()
command -v fuse2fs >/dev/null 2>&1 || need+=(fuse2fs)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v tar >/dev/null 2>&1 || need+=(tar)
command -v sync >/dev/null 2>&1 || need+=(coreutils)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v fusermount >/dev/null 2>&1 || command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
want=()
command -v fio >/dev/null 2>&1 || want+=(fio)

if ((${#need[@]} + ${#want[@]})); then
  SUDO=
  [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "bench: installing system packages: ${need[*]} ${want[*]}" >&2
  $SUDO apt-get update -qq
  if ((${#need[@]})); then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if ((${#want[@]})); then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${want[@]}" >/dev/null ||
      echo "bench: could not install fio; random I/O will use the built-in driver" >&2
  fi
fi
