#!/usr/bin/env bash
# Long stress runs with the xfstests tools (not part of this tree; give the
# paths of binaries you built from ltp/fsx.c and ltp/fsstress.c):
#
#   bash scripts/long-stress.sh FSX FSSTRESS [FSX_OPS] [FSSTRESS_OPS]
#
# 1. fsx, FSX_OPS operations (default 1,000,000) on a 4 GiB image;
# 2. fsstress -p 4 -n FSSTRESS_OPS (default 50,000) on a 1 GiB image, with
#    a writer beside it that fills the image so that the mount runs bulkfree
#    by itself;
# each followed by our fsck and, with H2_REF_FSCK=path, the reference's.
# Exit status 0 when every step passed.
set -uo pipefail
FSX=${1:?path to fsx}
FSSTRESS=${2:?path to fsstress}
FSX_OPS=${3:-1000000}
FSS_OPS=${4:-50000}
cd "$(dirname "$0")/.."
REPO=$PWD
BIN=$REPO/dist/src/cli
work=$(mktemp -d /var/tmp/h2stress.XXXXXX)
export HAMMER2_RUNDIR=$work/run HAMMER2_QUIET_SHIM=1
fail=0
cleanup() {
	for m in "$work"/mnt*; do fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null; done
	rm -rf "$work"
}
trap cleanup EXIT

fscks() {
	local img=$1 what=$2
	if node "$BIN/fsck_hammer2.js" -q "$img" >"$work/fsck.out" 2>&1; then
		echo "$what: fsck clean"
	else
		echo "$what: FSCK FAILED"; tail -5 "$work/fsck.out"; fail=1
	fi
	if [ -n "${H2_REF_FSCK:-}" ]; then
		if "$H2_REF_FSCK" -q "$img" >"$work/ref.out" 2>&1; then
			echo "$what: reference fsck clean"
		else
			echo "$what: REFERENCE FSCK FAILED"; tail -5 "$work/ref.out"; fail=1
		fi
	fi
}

unmountit() { # mountpoint: unmount and wait until its daemon let go of the image
	fusermount3 -u "$1" || return 1
	for _ in $(seq 100); do pgrep -f "mount_hammer2.js.*$1\$" >/dev/null || return 0; sleep 0.1; done
	echo "the daemon of $1 did not exit"; return 1
}

mountit() { # image mountpoint [options]
	mkdir -p "$2"
	node "$BIN/mount_hammer2.js" ${3:+-o "$3"} "$1@DATA" "$2" || { echo "mount of $1 failed"; exit 1; }
}

# 1. fsx
truncate -s 4G "$work/fsx.img"
node "$BIN/newfs_hammer2.js" "$work/fsx.img" >/dev/null
mountit "$work/fsx.img" "$work/mnt1"
t0=$(date +%s)
if "$FSX" -q -N "$FSX_OPS" -S 1 "$work/mnt1/fsx.file" >"$work/fsx.log" 2>&1; then
	echo "fsx: $FSX_OPS operations passed in $(( $(date +%s) - t0 )) s"
else
	echo "fsx: FAILED after $(( $(date +%s) - t0 )) s"; tail -20 "$work/fsx.log"; fail=1
fi
cp "$work/mnt1/fsx.file" "$work/fsx.live"
unmountit "$work/mnt1" || fail=1
fscks "$work/fsx.img" "fsx image"
mountit "$work/fsx.img" "$work/mnt1" ro
if cmp -s "$work/mnt1/fsx.file" "$work/fsx.live"; then echo "fsx: the file reads back identical after a remount"; else echo "fsx: FILE DIFFERS after remount"; fail=1; fi
unmountit "$work/mnt1"

# 2. fsstress with bulkfree on a full image
truncate -s 1G "$work/fss.img"
node "$BIN/newfs_hammer2.js" "$work/fss.img" >/dev/null
mountit "$work/fss.img" "$work/mnt2"
mkdir -p "$work/mnt2/stress" "$work/mnt2/fill"
(
	# Fill and empty the image again and again: the mount must bulkfree by itself.
	i=0 ok=0
	while [ -d "$work/mnt2/fill" ]; do
		if dd if=/dev/urandom of="$work/mnt2/fill/f$((i % 6))" bs=1M count=100 status=none 2>/dev/null; then
			ok=$((ok + 1)); echo "$ok" >"$work/filled"
		fi
		i=$((i + 1))
	done
) &
filler=$!
t0=$(date +%s)
if "$FSSTRESS" -p 4 -n "$FSS_OPS" -s 1 -d "$work/mnt2/stress" >"$work/fsstress.log" 2>&1; then
	echo "fsstress: -p 4 -n $FSS_OPS passed in $(( $(date +%s) - t0 )) s"
else
	echo "fsstress: exit $? after $(( $(date +%s) - t0 )) s"; tail -10 "$work/fsstress.log"; fail=1
fi
rm -rf "$work/mnt2/fill"
wait "$filler" 2>/dev/null
# Over 1 GiB written into the 1 GiB image while fsstress ran: freed space came back by bulkfree.
filled=$(( $(cat "$work/filled" 2>/dev/null || echo 0) * 100 ))
if [ "$filled" -gt 1100 ]; then
	echo "fsstress: the filler wrote $filled MiB into the 1 GiB image beside it (space came back by bulkfree)"
else
	echo "fsstress: the filler wrote only $filled MiB: bulkfree never had to run"; fail=1
fi
(cd "$work/mnt2" && find . -type f -exec md5sum {} + | sort >"$work/live.md5") || { echo "fsstress: the live tree did not read whole"; fail=1; }
[ -s "$work/live.md5" ] || { echo "fsstress: no files to compare"; fail=1; }
unmountit "$work/mnt2" || fail=1
fscks "$work/fss.img" "fsstress image"
mountit "$work/fss.img" "$work/mnt2" ro
(cd "$work/mnt2" && find . -type f -exec md5sum {} + | sort >"$work/after.md5") || { echo "fsstress: the remounted tree did not read whole"; fail=1; }
if cmp -s "$work/live.md5" "$work/after.md5"; then echo "fsstress: every file's MD5 the same after a read-only remount ($(wc -l <"$work/live.md5") files)"; else echo "fsstress: FILES DIFFER after remount"; fail=1; fi
unmountit "$work/mnt2"
exit $fail
