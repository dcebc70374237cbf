#!/usr/bin/env bash
# clone.sh: measures `kcopyd clone` (see README "kcopyd clone"):
#   1. time until the first byte of the export is readable (process start to
#      a completed 4 KiB read by qemu-io): the handshake, not the copy;
#   2. read throughput of the export (nbdcopy to null:) while hydration runs,
#      against nbdcopy reading SOURCE directly;
#   3. total hydration time with no client (--until-hydrated), against
#      `kcopyd copy` of the same data.
# SOURCE is a file of random data served by nbdkit (optionally behind the
# delay filter, a slow remote store); DEST a file on --dir. Caches are dropped
# before each timed step when run as root. Nothing here is a claim until run
# on a quiet machine.
#
# Usage: bench/clone/clone.sh [--dir DIR] [--size SIZE] [--delay MS]
#                             [--kcopyd PATH] [-- CLONE-OPTIONS...]
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${TMPDIR:-/var/tmp}
size=1G
delay=0
kcopyd=
while [ $# -gt 0 ]; do
	case $1 in
	--dir) dir=$2; shift 2 ;;
	--size) size=$2; shift 2 ;;
	--delay) delay=$2; shift 2 ;;
	--kcopyd) kcopyd=$2; shift 2 ;;
	--) shift; break ;;
	-h|--help) sed -n '2,17p' "$0"; exit 0 ;;
	*) echo "clone.sh: unknown option $1" >&2; exit 1 ;;
	esac
done
extra=("$@")
for t in nbdkit nbdcopy qemu-io; do
	command -v "$t" >/dev/null || { echo "clone.sh: $t is not installed" >&2; exit 1; }
done
work=$(mktemp -d "$dir/clonebench.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
if [ -z "$kcopyd" ]; then
	kcopyd=$work/kcopyd
	(cd "$repo" && go build -o "$kcopyd" ./cmd/kcopyd)
fi

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
dropcaches() { [ "$(id -u)" = 0 ] && sync && echo 3 > /proc/sys/vm/drop_caches || true; }
waitsock() { for _ in $(seq 500); do [ -S "$1" ] && return 0; sleep 0.01; done; return 1; }

bytes=$(numfmt --from=iec "${size%B}")
head -c "$bytes" /dev/urandom > "$work/src.img"
filters=()
[ "$delay" != 0 ] && filters=(--filter=delay)
nbdkit -f --exit-with-parent -U "$work/src.sock" "${filters[@]}" file "$work/src.img" \
	$([ "$delay" != 0 ] && echo "rdelay=${delay}ms") &
pids+=($!)
waitsock "$work/src.sock"
src="nbd+unix:///?socket=$work/src.sock"
url="nbd+unix:///?socket=$work/clone.sock"

echo "size $size, SOURCE nbdkit file${filters:+ + delay ${delay}ms}, kcopyd clone ${extra[*]}"

# 1. Time to the first byte (binaries already in the page cache).
t0=$(now)
"$kcopyd" clone --quiet --create "${extra[@]}" "$src" "$work/dst.img" --metadata "$work/m" --socket "$work/clone.sock" >/dev/null &
pids+=($!); cpid=$!
waitsock "$work/clone.sock"
qemu-io -f raw -c "read 0 4k" "$url" >/dev/null
echo "first byte readable after $(since "$t0") s"

# 2. Read throughput of the export during hydration, and of SOURCE.
t0=$(now); nbdcopy "$url" null:; texp=$(since "$t0")
echo "nbdcopy of the export during hydration: $texp s"
kill -INT "$cpid"; wait "$cpid" || true
dropcaches
t0=$(now); nbdcopy "$src" null:; echo "nbdcopy of SOURCE directly: $(since "$t0") s"

# 3. Total hydration time, and kcopyd copy.
rm -f "$work/dst.img" "$work/m" "$work/clone.sock"
dropcaches
t0=$(now)
"$kcopyd" clone --quiet --create --until-hydrated "${extra[@]}" "$src" "$work/dst.img" --metadata "$work/m" --socket "$work/clone.sock" >/dev/null
echo "hydration with no client: $(since "$t0") s"
cmp "$work/src.img" "$work/dst.img"
rm -f "$work/dst.img"
dropcaches
t0=$(now)
"$kcopyd" copy --quiet --create "$src" "$work/dst.img"
echo "kcopyd copy: $(since "$t0") s"
