#!/usr/bin/env bash
# The main job, from a fresh machine: install what is needed, build, format
# images/default.img if it does not exist, and mount its DATA PFS.
#   bash scripts/setup.sh [IMAGE] [MOUNTPOINT]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
img=${1:-$repo/images/default.img}
mnt=${2:-$repo/mnt/default}

bash scripts/ensure-deps.sh

# mount -t fuse.hammer2 and fstab lines go through this helper (root only).
if [ "$(id -u)" = 0 ]; then
  sed "s#^HAMMER2FS_DIR=.*#HAMMER2FS_DIR=\${HAMMER2FS_DIR:-$repo}#" scripts/mount.fuse.hammer2 > /sbin/mount.fuse.hammer2
  chmod 755 /sbin/mount.fuse.hammer2
fi

if [ ! -e "$img" ]; then
  mkdir -p "$(dirname "$img")"
  echo "Formatting $img (8 GiB, sparse: it takes only the space its data needs)..."
  node dist/src/cli/newfs_hammer2.js -s 8G "$img"
fi

mkdir -p "$mnt"
if grep -qs " $mnt " /proc/mounts; then
  echo "$mnt is already mounted."
else
  node dist/src/cli/mount_hammer2.js "$img@DATA" "$mnt"
fi
cat <<MSG

hammer2fs: the DATA PFS of $img is mounted at
    $mnt
Unmount with:
    fusermount3 -u $mnt
MSG
