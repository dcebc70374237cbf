#!/usr/bin/env bash
# run.sh: the project's benchmark. Times `kcopyd` against the usual tools
# for every job it does (file, O_DIRECT, loop devices, fan-out, zeroing on a
# file, a loop device and NBD, sparse files, many small regions, NBD both
# ways and NBD to NBD) and checks the accuracy of --throttle and --rate.
#
# Fair by construction: in each round every tool of a case runs once, in
# turn; the page cache is dropped before every run; the flush (sync) is
# inside every tool's time; every kcopyd output is compared with the source
# (cmp), and each peer's output once. One table: median time, ratio to the
# best peer, CPU seconds (user+sys), peak RSS. The table, the machine and
# the command line go into docs/PERFORMANCE.md with a gnuplot chart.
#
# Usage: bench/run.sh [--quick] [--size SIZE] [--runs N] [--dir DIR]
#                     [--only LIST] [--kcopyd PATH] [--no-doc] [--install]
# See bench/README.md.
# Commands are single-quoted on purpose: they expand in the bash -c that runs them.
# shellcheck disable=SC2016
set -euo pipefail
export LC_ALL=C

prog=${0##*/}
repo=$(cd "$(dirname "$0")/.." && pwd)
cmdline="bench/run.sh${*:+ $*}"
all_cases=file,direct,loop,fanout,zero-file,zero-loop,zero-nbd,sparse,regions,nbd-from,nbd-to,nbd-nbd,throttle,rate

usage() {
	cat <<EOF
Usage: $prog [options]

Benchmarks kcopyd against dd, cp, qemu-img, nbdcopy, dcfldd, tee, fallocate,
blkdiscard and a 16-goroutine pread/pwrite loop, and checks --throttle and
--rate. Needs root (drop_caches, loop devices).

Options:
  --size SIZE     bytes per copy, a multiple of 1MiB (default 1G)
  --runs N        timed runs per tool; the median is shown (default 3)
  --quick         --size 128M --runs 1, and 5 s instead of 10 s for --rate
  --dir DIR       work directory on the disk to measure (default: /work,
                  else /var/tmp); a temporary directory inside it is removed
                  on exit
  --only LIST     comma-separated subset of:
                  $all_cases
  --kcopyd PATH   time this binary instead of building ./cmd/kcopyd
  --doc FILE      where to write the results (default docs/PERFORMANCE.md;
                  the part between the bench markers is replaced)
  --no-doc        print the table only
  --install       apt-get the missing tools first
  -h, --help      this help
EOF
}

die() {
	echo "$prog: $*" >&2
	exit 2
}

# ---------------------------------------------------------------- options
size_arg=1G runs=3 dir='' only=$all_cases kcopyd_bin='' doc=$repo/docs/PERFORMANCE.md install=0 rate_secs=10
while (($#)); do
	case $1 in
	--size) size_arg=${2:?}; shift 2 ;;
	--runs) runs=${2:?}; shift 2 ;;
	--quick) size_arg=128M runs=1 rate_secs=5; shift ;;
	--dir) dir=${2:?}; shift 2 ;;
	--only) only=${2:?}; shift 2 ;;
	--kcopyd) kcopyd_bin=${2:?}; shift 2 ;;
	--doc) doc=${2:?}; shift 2 ;;
	--no-doc) doc=; shift ;;
	--install) install=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
size=$(numfmt --from=iec "${size_arg%iB}" 2>/dev/null) || die "bad --size '$size_arg'"
((size >= 16 << 20 && size % (1 << 20) == 0)) || die "--size must be a multiple of 1MiB, at least 16MiB"
for c in ${only//,/ }; do [[ ,$all_cases, == *,$c,* ]] || die "unknown case '$c' in --only"; done
want() { [[ ,$only, == *,$1,* ]]; }
[[ $(id -u) == 0 ]] || die "needs root: it drops the page cache and sets up loop devices"

# ---------------------------------------------------------------- tools
have() { command -v "$1" >/dev/null 2>&1; }
declare -A pkg=([qemu-img]=qemu-utils [nbdkit]=nbdkit [nbdcopy]=libnbd-bin [dcfldd]=dcfldd
	[/usr/bin/time]=time [gnuplot]=gnuplot-nox [blkdiscard]=util-linux [go]=golang)
missing=()
for t in "${!pkg[@]}"; do have "$t" || missing+=("${pkg[$t]}"); done
if ((${#missing[@]})); then
	if ((install)); then
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	else
		echo "NOTE: missing ${missing[*]} (rerun with --install); their rows are skipped"
	fi
fi
have /usr/bin/time || die "/usr/bin/time is needed (package time)"

# ---------------------------------------------------------------- work dir
if [[ -z $dir ]]; then
	for d in /work /var/tmp; do
		[[ -d $d && -w $d && $(stat -f -c %T "$d") != tmpfs ]] && { dir=$d; break; }
	done
fi
[[ -d $dir ]] || die "no work directory: use --dir"
[[ $(stat -f -c %T "$dir") != tmpfs ]] || die "$dir is on tmpfs: that measures memory"
need=$((size * 8 + (256 << 20)))
avail=$(df -P -B1 "$dir" | awk 'NR==2 {print $4}')
((avail >= need)) || die "$dir has $((avail >> 20)) MiB free; need $((need >> 20)) MiB (8 x SIZE)"
work=$(mktemp -d "$dir/kcopyd-bench.XXXXXX")

declare -A SERVER=() # socket -> nbdkit pid
LOOPS=()
cleanup() {
	local rc=$? s l
	trap - EXIT INT TERM
	for s in "${!SERVER[@]}"; do stop_server "$s"; done
	for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
	rm -rf -- "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
# start_server SOCK ARGS...: an nbdkit on the Unix socket SOCK.
start_server() {
	local sock=$1 i
	shift
	rm -f "$sock"
	nbdkit -f -U "$sock" "$@" >/dev/null 2>&1 &
	SERVER[$sock]=$!
	for ((i = 0; i < 250; i++)); do
		[[ -S $sock ]] && return 0
		sleep 0.02
	done
	die "nbdkit $* did not start"
}
stop_server() {
	local pid=${SERVER[$1]:-}
	[[ -n $pid ]] || return 0
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	unset "SERVER[$1]"
}
uri() { echo "nbd+unix:///?socket=$1"; }
loop_attach() { # FILE: sets LOOP to a new loop device on FILE, direct I/O on
	LOOP=$(losetup --find --show --direct-io=on "$1")
	LOOPS+=("$LOOP")
}
loop_detach() {
	local l=$1 i
	losetup -d "$l"
	for i in "${!LOOPS[@]}"; do [[ ${LOOPS[i]} != "$l" ]] || unset "LOOPS[i]"; done
}
drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}
same() { cmp -s -n "$size" -- "$1" "$2"; } # the first SIZE bytes are equal
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
calc() { awk "BEGIN {printf \"$2\", $1}"; } # calc EXPR FORMAT

# ---------------------------------------------------------------- kcopyd
if [[ -n $kcopyd_bin ]]; then
	KCOPYD=$(realpath "$kcopyd_bin")
	rev="given binary $KCOPYD"
else
	(cd "$repo" && go build -o "$work/kcopyd" ./cmd/kcopyd) || die "go build ./cmd/kcopyd failed"
	KCOPYD=$work/kcopyd
	rev=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
fi
(cd "$repo" && go build -o "$work/regionloop" ./bench/cmd/regionloop) || die "go build ./bench/cmd/regionloop failed"
export KCOPYD REGIONLOOP=$work/regionloop SIZE=$size

# ---------------------------------------------------------------- data
export SRC=$work/src D1=$work/d1 D2=$work/d2 D3=$work/d3 D4=$work/d4
echo "writing $(numfmt --to=iec "$size") of random data ..."
head -c "$size" /dev/urandom >"$SRC"
sync "$SRC"

# ---------------------------------------------------------------- runner
# A tool is one row: case, name, kind (peer or kcopyd), command, and the
# names of a prep function (run before the cache is dropped), a check
# function (returns non-zero when the output is wrong) and a post function.
# Commands run under bash -c with the exported variables.
declare -a TOOLS=()
declare -A T=() CPU=() RSS=() NOTE=() KIND=() ROWS=()
failures=0
add() { # case name kind cmd prep check [post]
	TOOLS+=("$1"$'\x1f'"$2"$'\x1f'"$3"$'\x1f'"$4"$'\x1f'"$5"$'\x1f'"$6"$'\x1f'"${7:-true}")
	ROWS[$1]+="$2"$'\n'
	KIND["$1|$2"]=$3
}
skip() { # case name why
	ROWS[$1]+="$2"$'\n'
	KIND["$1|$2"]=skip
	NOTE["$1|$2"]=$3
}

run_one() { # case name kind cmd prep check post round
	local cs=$1 name=$2 kind=$3 cmd=$4 prep=$5 check=$6 post=$7 r=$8 rc=0 t0 t1 secs u s m
	$prep
	drop_caches
	t0=$EPOCHREALTIME
	/usr/bin/time -f '%U %S %M' -o "$work/time.out" bash -o pipefail -c "$cmd" >"$work/out.log" 2>&1 || rc=$?
	t1=$EPOCHREALTIME
	if ((rc)); then
		echo "  FAILED ($rc): $name [$cs]: $cmd"
		sed 's/^/    | /' "$work/out.log" | head -10
		NOTE["$cs|$name"]="FAILED (exit $rc)"
		failures=$((failures + 1))
	else
		secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
		read -r u s m <"$work/time.out"
		T["$cs|$name"]+="$secs "
		CPU["$cs|$name"]+="$(awk -v u="$u" -v s="$s" 'BEGIN {print u + s}') "
		((m > ${RSS["$cs|$name"]:-0})) && RSS["$cs|$name"]=$m
		printf '  round %d  %-10s %-40s %8.3f s  %5.2f s CPU  %6.1f MiB\n' "$r" "$cs" "$name" "$secs" \
			"$(awk -v u="$u" -v s="$s" 'BEGIN {print u + s}')" "$(awk -v m="$m" 'BEGIN {print m / 1024}')"
		if [[ $kind == kcopyd || $r == 1 ]]; then
			if ! $check; then
				echo "  MISMATCH: $name [$cs] did not produce the expected output"
				NOTE["$cs|$name"]="OUTPUT WRONG"
				failures=$((failures + 1))
			fi
		fi
	fi
	$post
}

run_case() { # case
	local cs=$1 r t c name kind cmd prep check post
	echo "case $cs:"
	for ((r = 1; r <= runs; r++)); do
		for t in "${TOOLS[@]}"; do
			IFS=$'\x1f' read -r c name kind cmd prep check post <<<"$t"
			[[ $c == "$cs" ]] || continue
			run_one "$c" "$name" "$kind" "$cmd" "$prep" "$check" "$post" "$r"
		done
	done
}

# ---------------------------------------------------------------- prep/check
rm_dests() { rm -f -- "$D1" "$D2" "$D3" "$D4"; }
check_d1() { same "$SRC" "$D1"; }
check_d4() { same "$SRC" "$D1" && same "$SRC" "$D2" && same "$SRC" "$D3" && same "$SRC" "$D4"; }
check_loop() { same "$SRC" "$DSTLOOP"; }
check_zero_d1() { cmp -s -n "$size" -- "$D1" /dev/zero; }
check_zero_loop() { cmp -s -n "$size" -- "$DSTLOOP" /dev/zero; }
check_zero_export() { cmp -s -n "$size" -- "$EXPORT" /dev/zero; }
check_sparse() { same "$SPARSE" "$D1"; }
check_regions() { "$REGIONLOOP" -check "$REGIONS" "$SRC" "$D1"; }
written_d1() { rm_dests; cp --reflink=never "$SRC" "$D1"; }
written_loop() { dd if="$SRC" of="$DSTLOOP" bs=4M oflag=direct conv=fsync status=none; }
sized_d1() { rm_dests; truncate -s "$size" "$D1"; }
export_written() { # a fresh nbdkit file export holding data
	stop_server "$SOCK"
	cp --reflink=never "$SRC" "$EXPORT"
	start_server "$SOCK" file "$EXPORT"
}
export_empty() { # a fresh nbdkit file export of SIZE, no data
	stop_server "$SOCK"
	rm -f "$EXPORT"
	truncate -s "$size" "$EXPORT"
	start_server "$SOCK" file "$EXPORT"
}
check_export() { same "$SRC" "$EXPORT"; }
stop_export() { stop_server "$SOCK"; }
export EXPORT=$work/export SOCK=$work/nbd.sock SRCSOCK=$work/src.sock SPARSE=$work/sparse REGIONS=$work/regions
export URI SRCURI
URI=$(uri "$SOCK")
SRCURI=$(uri "$SRCSOCK")
KC='"$KCOPYD" copy -q'

# ---------------------------------------------------------------- cases
declare -A CASE_TITLE=(
	[file]="file -> file (page cache)" [direct]="file -> file, O_DIRECT" [loop]="loop -> loop (direct-io loops)"
	[fanout]="1 -> 4 files" [zero-file]="zero a written file" [zero-loop]="zero a loop device"
	[zero-nbd]="zero an NBD export (nbdkit file)" [sparse]="sparse file, 10 % data"
	[regions]="random 64 KiB regions" [nbd-from]="nbdkit file -> file" [nbd-to]="file -> nbdkit file"
	[nbd-nbd]="nbdkit memory -> nbdkit file"
)
qi() { have qemu-img; }
nc() { have nbdcopy && have nbdkit; }

setup_file() {
	add file "dd bs=1M conv=fsync" peer 'dd if="$SRC" of="$D1" bs=1M conv=fsync status=none' rm_dests check_d1
	add file "cp; sync FILE" peer 'cp --reflink=never "$SRC" "$D1" && sync "$D1"' rm_dests check_d1
	if qi; then add file "qemu-img convert; sync FILE" peer 'qemu-img convert -f raw -O raw "$SRC" "$D1" && sync "$D1"' rm_dests check_d1; else skip file qemu-img "not installed"; fi
	if nc; then add file "nbdcopy --flush FILE FILE" peer 'nbdcopy --flush "$SRC" "$D1"' rm_dests check_d1; else skip file nbdcopy "not installed"; fi
	add file "kcopyd copy --create" kcopyd "$KC"' --create "$SRC" "$D1"' rm_dests check_d1
	# Without zero detection the engine offloads to copy_file_range: what
	# the sparse default costs on a file system without reflink.
	add file "kcopyd copy --no-sparse --create" kcopyd "$KC"' --no-sparse --create "$SRC" "$D1"' rm_dests check_d1
}
setup_direct() {
	# dd bs=1M is the issue's CPU reference for --direct (see cpu_verdicts).
	add direct "dd bs=1M iflag,oflag=direct" peer 'dd if="$SRC" of="$D1" bs=1M iflag=direct oflag=direct conv=fsync status=none' rm_dests check_d1
	add direct "dd bs=4M iflag,oflag=direct" peer 'dd if="$SRC" of="$D1" bs=4M iflag=direct oflag=direct conv=fsync status=none' rm_dests check_d1
	if qi; then add direct "qemu-img -t none -T none; sync" peer 'qemu-img convert -t none -T none -f raw -O raw "$SRC" "$D1" && sync "$D1"' rm_dests check_d1; else skip direct qemu-img "not installed"; fi
	add direct "kcopyd copy --direct --create" kcopyd "$KC"' --direct --create "$SRC" "$D1"' rm_dests check_d1
}
setup_loop() {
	cp --reflink=never "$SRC" "$work/loopsrc"
	fallocate -l "$size" "$work/loopdst"
	loop_attach "$work/loopsrc"
	SRCLOOP=$LOOP
	loop_attach "$work/loopdst"
	DSTLOOP=$LOOP
	export SRCLOOP DSTLOOP
	add loop "dd bs=4M iflag,oflag=direct" peer 'dd if="$SRCLOOP" of="$DSTLOOP" bs=4M iflag=direct oflag=direct conv=fsync status=none' true check_loop
	if qi; then add loop "qemu-img -t none -T none -n" peer 'qemu-img convert -n -t none -T none -f raw -O raw "$SRCLOOP" "$DSTLOOP"' true check_loop; fi
	add loop "kcopyd copy" kcopyd "$KC"' "$SRCLOOP" "$DSTLOOP"' true check_loop
	add loop "kcopyd copy --direct" kcopyd "$KC"' --direct "$SRCLOOP" "$DSTLOOP"' true check_loop
}
setup_fanout() {
	add fanout "4 x dd bs=1M conv=fsync (parallel)" peer 'for d in "$D1" "$D2" "$D3" "$D4"; do dd if="$SRC" of="$d" bs=1M conv=fsync status=none & done; wait' rm_dests check_d4
	add fanout "dd | tee x3 > 4th; sync FILES" peer 'dd if="$SRC" bs=1M status=none | tee "$D1" "$D2" "$D3" >"$D4" && sync "$D1" "$D2" "$D3" "$D4"' rm_dests check_d4
	if have dcfldd; then add fanout "dcfldd of= x4; sync FILES" peer 'dcfldd if="$SRC" of="$D1" of="$D2" of="$D3" of="$D4" bs=1M status=off && sync "$D1" "$D2" "$D3" "$D4"' rm_dests check_d4; else skip fanout dcfldd "not installed"; fi
	add fanout "kcopyd copy --create (4 DESTs)" kcopyd "$KC"' --create "$SRC" "$D1" "$D2" "$D3" "$D4"' rm_dests check_d4
	add fanout "kcopyd copy --direct --create (4 DESTs)" kcopyd "$KC"' --direct --create "$SRC" "$D1" "$D2" "$D3" "$D4"' rm_dests check_d4
}
setup_zero_file() {
	add zero-file "fallocate --zero-range; sync FILE" peer 'fallocate --zero-range -o 0 -l "$SIZE" "$D1" && sync "$D1"' written_d1 check_zero_d1
	add zero-file "fallocate --punch-hole; sync FILE" peer 'fallocate --punch-hole -o 0 -l "$SIZE" "$D1" && sync "$D1"' written_d1 check_zero_d1
	add zero-file "kcopyd zero" kcopyd '"$KCOPYD" zero -q "$D1"' written_d1 check_zero_d1
}
setup_zero_loop() {
	fallocate -l "$size" "$work/zeroloop"
	loop_attach "$work/zeroloop"
	export DSTLOOP=$LOOP
	add zero-loop "blkdiscard -z; sync DEV" peer 'blkdiscard -z "$DSTLOOP" && sync "$DSTLOOP"' written_loop check_zero_loop
	add zero-loop "kcopyd zero" kcopyd '"$KCOPYD" zero -q "$DSTLOOP"' written_loop check_zero_loop
}
setup_zero_nbd() {
	add zero-nbd "nbdcopy --flush from nbdkit null" peer 'nbdcopy --flush -- [ nbdkit --exit-with-parent null size="$SIZE" ] "$URI"' export_written check_zero_export stop_export
	add zero-nbd "kcopyd zero" kcopyd '"$KCOPYD" zero -q "$URI"' export_written check_zero_export stop_export
}
setup_sparse() {
	# 10 % data: 1 MiB of random data at the start of every 10 MiB.
	local i
	truncate -s "$size" "$SPARSE"
	for ((i = 0; i < size >> 20; i += 10)); do
		dd if="$SRC" of="$SPARSE" bs=1M count=1 skip="$i" seek="$i" conv=notrunc status=none
	done
	sync "$SPARSE"
	if qi; then add sparse "qemu-img convert; sync FILE" peer 'qemu-img convert -f raw -O raw "$SPARSE" "$D1" && sync "$D1"' rm_dests check_sparse; fi
	add sparse "cp --sparse=always; sync FILE" peer 'cp --sparse=always "$SPARSE" "$D1" && sync "$D1"' rm_dests check_sparse
	add sparse "kcopyd copy --create" kcopyd "$KC"' --create "$SPARSE" "$D1"' rm_dests check_sparse
}
setup_regions() {
	# 61 % of the 64 KiB slots, in random order (20,000 at 2 GiB, as in
	# issue 8), each copied to the same offset.
	local slots=$((size >> 16))
	NREG=$((slots * 61 / 100))
	((NREG <= 20000)) || NREG=20000
	shuf -i 0-$((slots - 1)) -n "$NREG" --random-source=<(yes) | awk '{o = $1 * 65536; print o, 65536, o}' >"$REGIONS"
	CASE_TITLE[regions]="$NREG random 64 KiB regions"
	add regions "regionloop (16 goroutines pread/pwrite)" peer '"$REGIONLOOP" -workers 16 "$REGIONS" "$SRC" "$D1"' sized_d1 check_regions
	add regions "kcopyd copy --regions --jobs 16" kcopyd "$KC"' --regions "$REGIONS" --jobs 16 "$SRC" "$D1"' sized_d1 check_regions
}
setup_nbd_from() {
	start_server "$SRCSOCK" -r file "$SRC"
	add nbd-from "nbdcopy --flush" peer 'nbdcopy --flush "$SRCURI" "$D1"' rm_dests check_d1
	add nbd-from "kcopyd copy --create" kcopyd "$KC"' --create "$SRCURI" "$D1"' rm_dests check_d1
}
setup_nbd_to() {
	add nbd-to "nbdcopy --flush" peer 'nbdcopy --flush "$SRC" "$URI"' export_empty check_export stop_export
	add nbd-to "kcopyd copy" kcopyd "$KC"' "$SRC" "$URI"' export_empty check_export stop_export
}
setup_nbd_nbd() {
	start_server "$SRCSOCK" memory "$size"
	nbdcopy "$SRC" "$SRCURI"
	add nbd-nbd "nbdcopy --flush" peer 'nbdcopy --flush "$SRCURI" "$URI"' export_empty check_export stop_export
	add nbd-nbd "kcopyd copy" kcopyd "$KC"' "$SRCURI" "$URI"' export_empty check_export stop_export
}
teardown() { # after each case: servers, loops, files
	local s l
	for s in "${!SERVER[@]}"; do stop_server "$s"; done
	for l in "${LOOPS[@]}"; do loop_detach "$l"; done
	rm -f -- "$D1" "$D2" "$D3" "$D4" "$EXPORT" "$work"/loop* "$work/zeroloop" "$SPARSE"
}

# ---------------------------------------------------------------- accuracy
# io_ticks (ms the device had I/O in flight) of a block device.
io_ticks() { awk '{print $10}' "/sys/block/${1#/dev/}/stat"; }
declare -A ACC=() # name -> "measured|target|ok"
measure_throttle() {
	cp --reflink=never "$SRC" "$work/loopsrc"
	fallocate -l "$size" "$work/loopdst"
	local s d p a b c e t0 t1 n share ref=
	loop_attach "$work/loopsrc"
	s=$LOOP
	loop_attach "$work/loopdst"
	d=$LOOP
	for p in 100 50; do
		# Copy again and again for at least rate_secs, so that the share
		# is taken over a window as long as the --rate one.
		drop_caches
		a=$(io_ticks "$s") b=$(io_ticks "$d") n=0
		t0=$EPOCHREALTIME
		while ((n == 0)) || awk -v t0="$t0" -v t="$EPOCHREALTIME" -v w="$rate_secs" 'BEGIN {exit !(t - t0 < w)}'; do
			"$KCOPYD" copy -q --direct --throttle "$p" "$s" "$d"
			n=$((n + 1))
		done
		t1=$EPOCHREALTIME
		c=$(io_ticks "$s") e=$(io_ticks "$d")
		same "$SRC" "$d" || { echo "  MISMATCH: throttle $p"; failures=$((failures + 1)); }
		# The share of the wall time with I/O in flight on the busier of the
		# two devices (the kernel's throttle counts kcopyd's I/O time).
		share=$(awk -v a="$a" -v b="$b" -v c="$c" -v e="$e" -v t0="$t0" -v t1="$t1" \
			'BEGIN {x = c - a; y = e - b; if (y > x) x = y; printf "%.1f", 100 * x / ((t1 - t0) * 1000)}')
		printf '  --throttle %-3s %d copies in %6.2f s: I/O-time share %s %%\n' "$p" "$n" "$(calc "$t1 - $t0" '%.2f')" "$share"
		[[ -n $ref ]] || ref=$share
	done
	ok=$(awk -v x="$share" 'BEGIN {print (x >= 45 && x <= 55) ? "yes" : "NO"}')
	ACC["--throttle 50: I/O-time share over $rate_secs s"]="$share % (--throttle 100: $ref %)|45-55 %|$ok"
	loop_detach "$s"
	loop_detach "$d"
	rm -f "$work/loopsrc" "$work/loopdst"
}
# measure_rate copies SIZE with --rate SIZE/rate_secs and samples the bytes
# the process has written (wchar in /proc/PID/io) every 0.1 s. The rate
# held is taken from the first sample with data written to the first with
# all of it: the copy phase, which --rate governs. Start-up and the final
# flush are outside it; the whole process's average is shown beside it.
measure_rate() {
	local rate=$((size / rate_secs)) t0 t1 pid got whole ok samples=$work/rate.samples
	rm_dests
	drop_caches
	t0=$EPOCHREALTIME
	"$KCOPYD" copy -q --create --rate "$rate" "$SRC" "$D1" &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		echo "$EPOCHREALTIME $(awk '$1 == "wchar:" {print $2}' "/proc/$pid/io" 2>/dev/null)"
		sleep 0.1
	done >"$samples"
	wait "$pid" || { echo "  FAILED: kcopyd --rate"; failures=$((failures + 1)); }
	t1=$EPOCHREALTIME
	check_d1 || { echo "  MISMATCH: rate"; failures=$((failures + 1)); }
	got=$(awk -v s="$size" '$2 > 0 && !a {a = $1; w = $2} $2 >= s {b = $1; exit}
		END {if (b > a) printf "%.1f", (s - w) / (b - a) / 1048576; else print "?"}' "$samples")
	whole=$(awk -v s="$size" -v t0="$t0" -v t1="$t1" 'BEGIN {printf "%.1f", s / (t1 - t0) / 1048576}')
	ok=$(awk -v g="$got" -v r="$rate" 'BEGIN {x = g * 1048576 / r; print (g != "?" && x >= 0.95 && x <= 1.05) ? "yes" : "NO"}')
	printf '  --rate %s/s for %d s: %s MiB/s while copying, %s MiB/s start to exit\n' "$(numfmt --to=iec "$rate")" "$rate_secs" "$got" "$whole"
	ACC["--rate $(numfmt --to=iec "$rate")/s over $rate_secs s"]="$got MiB/s while copying ($whole start to exit, with start-up and flush)|$(calc "$rate / 1048576" '%.1f') MiB/s +-5 %|$ok"
	rm_dests
}

# median_of KEY LIST: the median of the CPU or time list of row KEY.
median_of() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | median; }

# cpu_verdicts adds the issue's CPU and memory targets to the accuracy
# table: kcopyd --direct at most 1.5 x the CPU of dd bs=1M
# iflag,oflag=direct; buffered no more than dd bs=1M; peak RSS < 64 MiB.
cpu_verdicts() {
	local k d ok gib
	gib=$(calc "$size / 1073741824" '%.6f')
	k=${CPU["direct|kcopyd copy --direct --create"]:-} d=${CPU["direct|dd bs=1M iflag,oflag=direct"]:-}
	if [[ -n $k && -n $d ]]; then
		k=$(median_of "$k") d=$(median_of "$d")
		ok=$(awk -v k="$k" -v d="$d" 'BEGIN {print (k <= 1.5 * d) ? "yes" : "NO"}')
		ACC["CPU s per GiB, file -> file --direct"]="$(calc "$k / $gib" '%.2f') (dd bs=1M direct $(calc "$d / $gib" '%.2f'))|<= 1.5 x dd|$ok"
	fi
	k=${CPU["file|kcopyd copy --create"]:-} d=${CPU["file|dd bs=1M conv=fsync"]:-}
	if [[ -n $k && -n $d ]]; then
		k=$(median_of "$k") d=$(median_of "$d")
		ok=$(awk -v k="$k" -v d="$d" 'BEGIN {print (k <= d) ? "yes" : "NO"}')
		ACC["CPU s per GiB, file -> file buffered"]="$(calc "$k / $gib" '%.2f') (dd bs=1M $(calc "$d / $gib" '%.2f'))|<= dd|$ok"
	fi
	local key max=0
	for key in "${!RSS[@]}"; do
		[[ ${KIND[$key]:-} == kcopyd ]] && ((RSS[$key] > max)) && max=${RSS[$key]}
	done
	if ((max > 0)); then
		ok=$(awk -v m="$max" 'BEGIN {print (m < 65536) ? "yes" : "NO"}')
		ACC["peak RSS of kcopyd, any case"]="$(calc "$max / 1024" '%.1f') MiB|< 64 MiB|$ok"
	fi
}

# ---------------------------------------------------------------- machine
fsdev=$(findmnt -n -o SOURCE -T "$dir")
blk=$(lsblk -no PKNAME "$fsdev" 2>/dev/null | head -1)
[[ -n $blk ]] || blk=$(basename "$(realpath "$fsdev")")
machine=(
	"date: $(date -u '+%Y-%m-%d %H:%M UTC'); kcopyd $rev"
	"CPU: $(nproc) x $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); memory $(free -h | awk '/^Mem:/ {print $2}')"
	"kernel: $(uname -sr)"
	"file system: $(findmnt -n -o FSTYPE,SOURCE,OPTIONS -T "$dir")"
	"disk: $blk, $(sed 's/1/rotational/; s/0/non-rotational/' "/sys/block/$blk/queue/rotational" 2>/dev/null), scheduler $(cat "/sys/block/$blk/queue/scheduler" 2>/dev/null || echo '?')"
	"load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
	"size $(numfmt --to=iec "$size"), $runs round(s), median shown; command: $cmdline"
)
printf '%s\n' "${machine[@]}"

# ---------------------------------------------------------------- run
start=$SECONDS
cases=()
for cs in ${all_cases//,/ }; do
	want "$cs" || continue
	case $cs in
	throttle) echo "case throttle:"; measure_throttle; continue ;;
	rate) echo "case rate:"; measure_rate; continue ;;
	zero-nbd | nbd-*) nc || { echo "case $cs: skipped (nbdkit/nbdcopy missing)"; continue; } ;;
	esac
	"setup_${cs//-/_}"
	cases+=("$cs")
	run_case "$cs"
	teardown
done

# ---------------------------------------------------------------- report
cpu_verdicts
table=$work/table.md
chart=$work/chart.dat
: >"$table"
: >"$chart"
if ((${#cases[@]})); then
	echo "| case | tool | median s | × best peer | CPU s | peak RSS MiB | runs (s) |"
	echo "|---|---|---:|---:|---:|---:|---|"
fi >"$table"
for cs in "${cases[@]}"; do
	best=
	while IFS= read -r name; do
		[[ -n $name && ${KIND["$cs|$name"]} == peer && -n ${T["$cs|$name"]:-} ]] || continue
		m=$(tr ' ' '\n' <<<"${T["$cs|$name"]}" | sed '/^$/d' | median)
		[[ -z $best ]] || awk -v a="$m" -v b="$best" 'BEGIN {exit !(a < b)}' && best=$m
	done <<<"${ROWS[$cs]}"
	while IFS= read -r name; do
		[[ -n $name ]] || continue
		key="$cs|$name"
		if [[ -z ${T[$key]:-} ]]; then
			echo "| ${CASE_TITLE[$cs]} | $name | – | – | – | – | ${NOTE[$key]:-} |" >>"$table"
			continue
		fi
		m=$(tr ' ' '\n' <<<"${T[$key]}" | sed '/^$/d' | median)
		cpu=$(tr ' ' '\n' <<<"${CPU[$key]}" | sed '/^$/d' | median)
		ratio=–
		[[ -z $best ]] || ratio=$(awk -v a="$m" -v b="$best" 'BEGIN {printf "%.2f", a / b}')
		label=${name//|/\\|}
		[[ ${KIND[$key]} == kcopyd ]] && label="**$label**"
		printf '| %s | %s | %.3f | %s | %.2f | %.1f | %s%s |\n' "${CASE_TITLE[$cs]}" "$label" "$m" "$ratio" "$cpu" \
			"$(awk -v k="${RSS[$key]:-0}" 'BEGIN {print k / 1024}')" "${T[$key]% }" "${NOTE[$key]:+ ${NOTE[$key]}}" >>"$table"
		[[ ${KIND[$key]} == kcopyd && $ratio != – ]] && printf '"%s: %s"\t%s\n' "$cs" "${name#kcopyd }" "$ratio" >>"$chart"
	done <<<"${ROWS[$cs]}"
done
if ((${#ACC[@]})); then
	{
		echo
		echo "| accuracy | measured | target | met |"
		echo "|---|---|---|---|"
		for k in "${!ACC[@]}"; do IFS='|' read -r a b c <<<"${ACC[$k]}"; echo "| $k | $a | $b | $c |"; done
	} >>"$table"
fi
echo
cat "$table"
echo
echo "total time: $((SECONDS - start)) s; load after: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- doc + chart
if [[ -n $doc ]]; then
	mkdir -p "$(dirname "$doc")"
	svg=$(dirname "$doc")/performance.svg
	if have gnuplot && [[ -s $chart ]]; then
		gnuplot <<EOF
set terminal svg size 900,$((200 + 28 * $(wc -l <"$chart"))) dynamic font "sans,11"
set output "$svg"
set title "kcopyd: time / best peer's time (below 1 = faster than every peer)"
set style fill solid 0.7
set boxwidth 0.6 relative
set yrange [*:*] reverse
set ytics nomirror
set xrange [0:*]
set grid x
set arrow from first 1, graph 0 to first 1, graph 1 back nohead lc rgb "red" dt 2
unset key
plot "$chart" using (\$2/2):0:(\$2/2):(0.3):yticlabels(1) with boxxyerror lc rgb "#4477aa", \
     "$chart" using 2:0:(sprintf("%.2f", \$2)) with labels left offset 0.5,0
EOF
	else
		echo "NOTE: gnuplot missing (Debian gnuplot-nox): no chart"
	fi
	section=$work/section.md
	{
		echo "<!-- bench:begin: written by bench/run.sh; edits here are overwritten -->"
		echo "## Results of \`$cmdline\`"
		echo
		printf -- '- %s\n' "${machine[@]}"
		echo "- wall time includes the flush (sync, fdatasync or --flush) of every tool;"
		echo "  the page cache was dropped before every run; CPU s = user + sys of the tool and its children"
		echo
		cat "$table"
		echo
		[[ -s $svg ]] && echo "![kcopyd time over the best peer's](performance.svg)" && echo
		echo "<!-- bench:end -->"
	} >"$section"
	if [[ -f $doc ]] && grep -q '^<!-- bench:begin' "$doc"; then
		awk -v f="$section" '/^<!-- bench:begin/ {while ((getline l < f) > 0) print l; skip = 1; next}
			/^<!-- bench:end/ {skip = 0; next} !skip' "$doc" >"$work/doc.new"
		cat "$work/doc.new" >"$doc"
	else
		{ [[ -f $doc ]] && cat "$doc" && echo; cat "$section"; } >"$work/doc.new"
		cat "$work/doc.new" >"$doc"
	fi
	echo "wrote $doc${svg:+ and $svg}"
fi
if ((failures)); then
	echo "$failures failure(s): see above" >&2
	exit 1
fi
