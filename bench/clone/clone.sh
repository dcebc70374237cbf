#!/usr/bin/env bash
# clone.sh: measures `kcopyd clone` (README "kcopyd clone"; results in
# docs/CLONE-PERFORMANCE.md). Two modes:
#
# The comparison (default), per SOURCE (an nbdkit `file` export of random
# data, read-only; with --delay behind nbdkit's delay filter, a slow remote
# store), N interleaved rounds, medians shown:
#   1. first byte: from starting `kcopyd clone` (new DEST, new metadata) to
#      a completed 4 KiB read of the export by qemu-io; against the same
#      qemu-io read of SOURCE directly (the client's own start-up and
#      handshake). It should be the handshake, not the copy.
#   2. read during hydration: nbdcopy of the whole export to null: right
#      after (1), while the background copy runs; against nbdcopy of SOURCE
#      to null:. The share of regions hydrated when the read ended is shown.
#   3. hydration: `kcopyd clone --until-hydrated` with no client; against
#      `kcopyd copy --create` of the same data. DEST is checked with cmp.
#   Once per SOURCE, untimed, the export read during hydration is copied to
#   a file and checked with cmp.
#
# The region-size sweep (--sweep), per SOURCE and region size
# (--region-sizes), N rounds, medians shown:
#   - hydration time with no client (DEST checked with cmp);
#   - latency of 4 KiB reads and of 4 KiB writes at random offsets in
#     regions not hydrated yet (the upper half of the export; background
#     copying slowed to --rate 1M so that it stays in the lower half), one
#     qemu-io client issuing them one at a time. A write smaller than a
#     region copies the region first, so write latency grows with the
#     region size; the writes are read back and checked.
#
# The page cache is dropped before every timed step (as root; otherwise
# the header says it was not), then the programs are run once with --help
# or --version so that binaries are warm and data cold. Every process and file the script starts or
# makes is removed at exit, also on error or Ctrl-C.
#
# Usage: bench/clone/clone.sh [options] [-- CLONE-OPTIONS...]
#   --size SIZE          SOURCE size, a multiple of 4 MiB (default 1G)
#   --runs N             rounds; medians shown (default 3)
#   --delay LIST         comma-separated nbdkit delay-filter read delays in
#                        ms, one SOURCE each; 0 = no filter (default 0,2)
#   --sweep              run the region-size sweep instead of the comparison
#   --all                run both
#   --region-sizes LIST  sweep region sizes (default 4K,16K,64K,256K,1M,4M;
#                        with --quick 4K,64K,1M)
#   --quick              --size 64M --runs 1 --delay 0,2, 3 region sizes: a
#                        smoke test (--all in about a minute)
#   --dir DIR            where the files go (default /work, else /var/tmp;
#                        not tmpfs); needs 4 x SIZE free
#   --kcopyd PATH        time this binary instead of building ./cmd/kcopyd
#   --doc FILE           write the tables into FILE's marked sections
#                        (default docs/CLONE-PERFORMANCE.md)
#   --no-doc             only print them
#   -- CLONE-OPTIONS     extra options for every kcopyd clone
# Exit status: 0 when everything ran and every check passed, 1 otherwise,
# 2 for bad usage. Nothing printed is a claim until run on a quiet machine.
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "$0")/../.." && pwd)
cmdline="bench/clone/clone.sh${*:+ $*}"
size=1G runs=3 delays=0,2 mode=main kcopyd="" dir="" quick=0
rsizes=
doc=$repo/docs/CLONE-PERFORMANCE.md

usage() { sed -n '/^# Usage:/,/^# 2 for bad usage/p' "$0" | sed 's/^# \{0,1\}//'; }
die() {
	echo "clone.sh: $*" >&2
	exit 2
}
while (($#)); do
	case $1 in
	--size) size=${2:?}; shift 2 ;;
	--runs) runs=${2:?}; shift 2 ;;
	--delay) delays=${2:?}; shift 2 ;;
	--sweep) mode=sweep; shift ;;
	--all) mode=all; shift ;;
	--region-sizes) rsizes=${2:?}; shift 2 ;;
	--quick) size=64M runs=1 delays=0,2 quick=1; shift ;;
	--dir) dir=${2:?}; shift 2 ;;
	--kcopyd) kcopyd=${2:?}; shift 2 ;;
	--doc) doc=${2:?}; shift 2 ;;
	--no-doc) doc=; shift ;;
	--) shift; break ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown option $1" ;;
	esac
done
extra=("$@")
bytes=$(numfmt --from=iec "${size%B}") || die "bad --size $size"
((bytes >= 8 << 20 && bytes % (4 << 20) == 0)) || die "--size must be a multiple of 4 MiB, at least 8 MiB"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive number"
[[ $delays =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--delay must be a list of milliseconds, such as 0,2"
[[ -n $rsizes ]] || rsizes=$( ((quick)) && echo 4K,64K,1M || echo 4K,16K,64K,256K,1M,4M)
rslist=()
for r in ${rsizes//,/ }; do
	n=$(numfmt --from=iec "$r") || die "bad region size $r"
	((n >= 4096 && n <= bytes / 4 && (n & (n - 1)) == 0)) || die "region size $r: a power of two from 4K to SIZE/4"
	rslist+=("$n")
done
for t in nbdkit nbdcopy qemu-io cmp shuf numfmt; do
	command -v "$t" >/dev/null || die "$t is not installed (Debian: nbdkit libnbd-bin qemu-utils)"
done
if [[ -z $dir ]]; then
	for d in /work /var/tmp; do
		[[ -d $d && -w $d && $(stat -f -c %T "$d") != tmpfs ]] && { dir=$d; break; }
	done
fi
[[ -d $dir && $(stat -f -c %T "$dir") != tmpfs ]] || die "no work directory on a disk: use --dir"
avail=$(df -P -B1 "$dir" | awk 'NR==2 {print $4}')
((avail >= 4 * bytes)) || die "$dir has $((avail >> 20)) MiB free; need 4 x SIZE"

work=$(mktemp -d "$dir/clonebench.XXXXXX")
PIDS=()
cleanup() {
	local rc=$? p
	trap - EXIT INT TERM
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf -- "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
failures=0
fail() {
	echo "FAILED: $*" >&2
	failures=$((failures + 1))
}
forget() { # PID: no longer needs killing at exit
	local i
	for i in "${!PIDS[@]}"; do [[ ${PIDS[i]} != "$1" ]] || unset "PIDS[i]"; done
}

if [[ -z $kcopyd ]]; then
	kcopyd=$work/kcopyd
	(cd "$repo" && go build -o "$kcopyd" ./cmd/kcopyd) || die "go build failed"
fi
root=no
[[ $(id -u) == 0 ]] && root=yes
# drop_caches: the data goes cold, then the programs are loaded again, so
# that start-up times measure the clone, not reading binaries from disk.
drop_caches() {
	[[ $root == yes ]] || return 0
	sync
	echo 3 >/proc/sys/vm/drop_caches
	"$kcopyd" --help >/dev/null
	qemu-io --version >/dev/null
	nbdcopy --version >/dev/null
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2}'; }
last() { local a; read -ra a <<<"$1"; echo "${a[-1]}"; } # last "LIST": the newest run
med() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | median; } # med "LIST": the median
secs() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.4f", b - a}'; }
uri() { echo "nbd+unix:///?socket=$1"; }
waitsock() {
	local i
	for ((i = 0; i < 500; i++)); do
		[[ -S $1 ]] && return 0
		sleep 0.01
	done
	die "no socket $1"
}

# ---------------------------------------------------------------- servers
# start_source DELAY: an nbdkit file export of src.img (read-only), behind
# the delay filter when DELAY (ms) is not 0; sets SRC to its URL.
declare -A NBDKIT=()
start_source() {
	local sock=$work/src$1.sock args=()
	((${1} == 0)) || args=(--filter=delay)
	args+=(file "$work/src.img")
	((${1} == 0)) || args+=("rdelay=${1}ms")
	rm -f "$sock"
	nbdkit -f -r -U "$sock" "${args[@]}" >/dev/null 2>&1 &
	NBDKIT[$1]=$!
	PIDS+=($!)
	waitsock "$sock"
	SRC=$(uri "$sock")
}
stop_source() {
	kill "${NBDKIT[$1]}" 2>/dev/null || true
	wait "${NBDKIT[$1]}" 2>/dev/null || true
	forget "${NBDKIT[$1]}"
	unset "NBDKIT[$1]"
}

# reset_dest: no DEST, metadata or socket left (done before the page cache
# is dropped: deleting a large file takes time of its own).
reset_dest() {
	rm -f "$work/dst.img" "$work/meta" "$work/clone.sock" "$work/err.fifo"
	mkfifo "$work/err.fifo"
}
# start_clone ARGS...: starts kcopyd clone --quiet --json ARGS with a new
# DEST and metadata (after reset_dest), serving on clone.sock, and returns
# once it serves (its "serving" line on stderr). Sets CPID and URL.
start_clone() {
	local line
	"$kcopyd" clone --quiet --json --create "${extra[@]}" "$@" "$work/dst.img" \
		--metadata "$work/meta" --socket "$work/clone.sock" >"$work/status.json" 2>"$work/err.fifo" &
	CPID=$!
	PIDS+=("$CPID")
	exec {CFD}<"$work/err.fifo"
	while IFS= read -r -t 120 -u "$CFD" line; do
		[[ $line == *"serving "* ]] && { URL=$(uri "$work/clone.sock"); return 0; }
		echo "$line" >&2
	done
	die "kcopyd clone $* exited, or did not serve within 2 minutes"
}
# stop_clone: SIGINT, wait for the clean exit (status 0) and the JSON
# status; sets HYD to the percentage of regions hydrated at exit.
stop_clone() {
	local rc=0
	kill -INT "$CPID"
	wait "$CPID" || rc=$?
	forget "$CPID"
	cat <&"$CFD" >"$work/clone.err" || true
	exec {CFD}<&-
	((rc == 0)) || fail "kcopyd clone exited with status $rc: $(cat "$work/clone.err")"
	HYD=$(grep -o '"\(hydrated_\)\{0,1\}regions":[0-9]*' "$work/status.json" | tr -dc '0-9\n' | paste -sd' ' |
		awk '{printf "%.0f", $1 ? 100 * $2 / $1 : 0}')
}

# read4k URL: one qemu-io process reading 4 KiB at offset 0.
read4k() { qemu-io -r -f raw -c "read 0 4k" "$1" >/dev/null; }
# hydrate ARGS...: kcopyd clone --until-hydrated with no client, timed into
# T; DEST checked against SOURCE.
hydrate() {
	reset_dest
	drop_caches
	local t0=$EPOCHREALTIME
	"$kcopyd" clone --quiet --create --until-hydrated "${extra[@]}" "$@" "$work/dst.img" \
		--metadata "$work/meta" --socket "$work/clone.sock" >/dev/null || fail "kcopyd clone --until-hydrated $*"
	T=$(secs "$t0")
	cmp -s "$work/src.img" "$work/dst.img" || fail "kcopyd clone --until-hydrated $*: DEST differs from SOURCE"
}

# ---------------------------------------------------------------- header
machine=(
	"date: $(date -u '+%Y-%m-%d %H:%M UTC'); kcopyd $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
	"CPU: $(nproc) x $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); memory $(free -g | awk '/^Mem/ {print $2}') GiB"
	"kernel: $(uname -sr); work directory on $(stat -f -c %T "$dir") ($(df -P "$dir" | awk 'NR==2 {print $1}'))"
	"tools: $(nbdkit --version | head -1), $(nbdcopy --version | head -1), $(qemu-io --version | head -1 | cut -d'(' -f1)"
	"load before the run: $(cut -d' ' -f1-3 /proc/loadavg); page cache dropped before each timed step: $root"
	"SOURCE $(numfmt --to=iec "$bytes") of random data, nbdkit file plugin, read-only, Unix socket; $runs round(s), medians shown"
	"command: $cmdline"
)
printf '%s\n' "${machine[@]}"
start=$SECONDS
head -c "$bytes" /dev/urandom >"$work/src.img"

# ---------------------------------------------------------------- comparison
# main_round DELAY: one round of the comparison against SOURCE $SRC.
declare -A R=() # "delay|row" -> runs
main_round() {
	local d=$1 t0
	reset_dest
	drop_caches
	t0=$EPOCHREALTIME
	start_clone "$SRC"
	R[$d|serving]+="$(secs "$t0") "
	read4k "$URL"
	R[$d|first]+="$(secs "$t0") "
	t0=$EPOCHREALTIME
	nbdcopy "$URL" null: || fail "nbdcopy of the export"
	R[$d|read]+="$(secs "$t0") "
	stop_clone
	R[$d|hyd]+="$HYD "

	drop_caches
	t0=$EPOCHREALTIME
	read4k "$SRC"
	R[$d|first-src]+="$(secs "$t0") "
	drop_caches
	t0=$EPOCHREALTIME
	nbdcopy "$SRC" null: || fail "nbdcopy of SOURCE"
	R[$d|read-src]+="$(secs "$t0") "

	hydrate "$SRC"
	R[$d|clone]+="$T "
	rm -f "$work/dst.img"
	drop_caches
	t0=$EPOCHREALTIME
	"$kcopyd" copy --quiet --create "$SRC" "$work/dst.img" || fail "kcopyd copy"
	R[$d|copy]+="$(secs "$t0") "
	cmp -s "$work/src.img" "$work/dst.img" || fail "kcopyd copy: DEST differs from SOURCE"
	rm -f "$work/dst.img"
}
# main_check: the export read during hydration, copied to a file, is SOURCE.
main_check() {
	reset_dest
	start_clone "$SRC"
	nbdcopy "$URL" "$work/read.img" || fail "nbdcopy of the export to a file"
	stop_clone
	cmp -s "$work/src.img" "$work/read.img" || fail "the export read during hydration differs from SOURCE"
	echo "  checked: the export read while ${HYD}% was hydrated equals SOURCE (cmp)"
	rm -f "$work/read.img" "$work/dst.img"
}
run_main() {
	local d r
	for d in ${delays//,/ }; do
		start_source "$d"
		echo "SOURCE delay ${d} ms:"
		main_check
		for ((r = 1; r <= runs; r++)); do
			main_round "$d"
			echo "  round $r: serving $(last "${R[$d|serving]}") s, first byte $(last "${R[$d|first]}") s (SOURCE $(last "${R[$d|first-src]}")), read $(last "${R[$d|read]}") s at $(last "${R[$d|hyd]}")% hydrated (SOURCE $(last "${R[$d|read-src]}")), hydration $(last "${R[$d|clone]}") s (copy $(last "${R[$d|copy]}"))"
		done
		stop_source "$d"
	done
}
main_table() {
	local d m p mb
	echo "ratio = kcopyd clone / against. When run as root, the page cache was dropped before each timed step and the programs (kcopyd, qemu-io, nbdcopy) loaded again, so data is read cold and binaries warm."
	echo
	echo "| SOURCE | measurement | kcopyd clone s | against | s | ratio | clone runs (s) | against runs (s) |"
	echo "|---|---|---:|---|---:|---:|---|---|"
	for d in ${delays//,/ }; do
		local src="nbdkit file"
		((d == 0)) || src="nbdkit file + delay ${d} ms/read"
		row() { # title key peer peerkey
			m=$(med "${R[$d|$2]}")
			p=$(med "${R[$d|$4]}")
			printf '| %s | %s | %.3f | %s | %.3f | %.2f | %s | %s |\n' "$src" "$1" "$m" "$3" "$p" \
				"$(awk -v a="$m" -v b="$p" 'BEGIN {print (b > 0 ? a / b : 0)}')" "${R[$d|$2]% }" "${R[$d|$4]% }"
		}
		m=$(med "${R[$d|serving]}")
		printf '| %s | export serving (its URL printed), from process start | %.3f | – | – | – | %s | – |\n' "$src" "$m" "${R[$d|serving]% }"
		row "first 4 KiB read (qemu-io), from process start" first "qemu-io on SOURCE" first-src
		mb=$(awk -v s="$(med "${R[$d|read]}")" -v b="$bytes" 'BEGIN {printf "%.0f", b / s / 1048576}')
		row "nbdcopy export → null: during hydration ($mb MiB/s; $(printf %.0f "$(med "${R[$d|hyd]}")")% hydrated at its end)" read "nbdcopy SOURCE → null:" read-src
		row "hydration, no client (--until-hydrated)" clone "kcopyd copy --create" copy
	done
}

# ---------------------------------------------------------------- sweep
# latency_round DELAY RS: 4 KiB reads, then 4 KiB writes, of regions not
# hydrated yet, one at a time by one qemu-io; appends medians (ms) to
# R[DELAY|RS|read] and R[DELAY|RS|write], and checks the writes by reading
# them back.
latency_round() {
	local d=$1 rs=$2 slot=${rslist[-1]} half=$((bytes / 2)) n k i cmds=() checks=() out
	for i in "${rslist[@]}"; do ((i <= slot)) || slot=$i; done
	n=$((half / slot))
	k=$((n / 2 < 16 ? n / 2 : 16))
	mapfile -t offs < <(shuf -i 0-$((n - 1)) -n $((2 * k)) | while read -r s; do
		echo $((half + s * slot + (RANDOM % (slot / 4096)) * 4096))
	done)
	for ((i = 0; i < k; i++)); do cmds+=(-c "read ${offs[i]} 4k"); done
	for ((i = k; i < 2 * k; i++)); do
		cmds+=(-c "write -P 0xa5 ${offs[i]} 4k")
		checks+=(-c "read -P 0xa5 ${offs[i]} 4k")
	done
	reset_dest
	drop_caches
	start_clone --region-size "$rs" --rate 1M "$SRC"
	out=$(qemu-io -f raw "${cmds[@]}" "$URL") || fail "qemu-io on the export (region size $rs)"
	# "4 KiB, 1 ops; 00.00 sec (… and N ops/sec)": latency 1000/N ms.
	mapfile -t lat < <(sed -n 's/.* and \([0-9.]*\) ops\/sec.*/\1/p' <<<"$out" | awk '{printf "%.3f\n", 1000 / $1}')
	((${#lat[@]} == 2 * k)) || fail "qemu-io printed ${#lat[@]} timings, want $((2 * k))"
	R[$d|$rs|read]+="$(printf '%s\n' "${lat[@]:0:k}" | median) "
	R[$d|$rs|write]+="$(printf '%s\n' "${lat[@]:k}" | median) "
	out=$(qemu-io -r -f raw "${checks[@]}" "$URL" 2>&1) || fail "qemu-io read-back (region size $rs)"
	grep -q "verification failed" <<<"$out" && fail "region size $rs: a write did not read back"
	stop_clone
}
run_sweep() {
	local d r rs
	for d in ${delays//,/ }; do
		start_source "$d"
		echo "SOURCE delay ${d} ms:"
		for ((r = 1; r <= runs; r++)); do
			for rs in "${rslist[@]}"; do
				hydrate --region-size "$rs" "$SRC"
				R[$d|$rs|hyd]+="$T "
				latency_round "$d" "$rs"
				echo "  round $r, region size $(numfmt --to=iec "$rs"): hydration $T s, 4 KiB read $(last "${R[$d|$rs|read]}") ms, write $(last "${R[$d|$rs|write]}") ms"
			done
		done
		stop_source "$d"
	done
}
sweep_table() {
	local d rs src
	echo "4 KiB requests by one qemu-io, one at a time, at random 4 KiB-aligned offsets in regions not hydrated yet (background copy at --rate 1M, far below them); medians over the requests, then over the rounds. A 4 KiB write to 4 KiB regions covers its region whole and copies nothing."
	echo
	echo "| SOURCE | region size | hydration s | 4 KiB read ms | 4 KiB write ms | hydration runs (s) | read runs (ms) | write runs (ms) |"
	echo "|---|---|---:|---:|---:|---|---|---|"
	for d in ${delays//,/ }; do
		src="nbdkit file"
		((d == 0)) || src="nbdkit file + delay ${d} ms/read"
		for rs in "${rslist[@]}"; do
			printf '| %s | %s | %.3f | %.2f | %.2f | %s | %s | %s |\n' "$src" "$(numfmt --to=iec "$rs")" \
				"$(med "${R[$d|$rs|hyd]}")" "$(med "${R[$d|$rs|read]}")" "$(med "${R[$d|$rs|write]}")" \
				"${R[$d|$rs|hyd]% }" "${R[$d|$rs|read]% }" "${R[$d|$rs|write]% }"
		done
	done
}

# ---------------------------------------------------------------- run, report
# write_section NAME FILE: replaces the clone-NAME section of $doc by FILE.
write_section() {
	local name=$1 body=$2 sec=$work/section.md
	{
		echo "<!-- clone-$name:begin: written by bench/clone/clone.sh; edits here are overwritten -->"
		printf -- '- %s\n' "${machine[@]}"
		echo
		cat "$body"
		echo "<!-- clone-$name:end -->"
	} >"$sec"
	if [[ -f $doc ]] && grep -q "^<!-- clone-$name:begin" "$doc"; then
		awk -v f="$sec" -v b="^<!-- clone-$name:begin" -v e="^<!-- clone-$name:end" \
			'$0 ~ b {while ((getline l < f) > 0) print l; skip = 1; next} $0 ~ e {skip = 0; next} !skip' "$doc" >"$work/doc.new"
	else
		{ [[ -f $doc ]] && cat "$doc" && echo; cat "$sec"; } >"$work/doc.new"
	fi
	cat "$work/doc.new" >"$doc"
	echo "wrote the $name table into $doc"
}
if [[ $mode != sweep ]]; then
	run_main
	main_table >"$work/main.md"
	echo
	cat "$work/main.md"
	echo
fi
if [[ $mode != main ]]; then
	echo "region-size sweep:"
	run_sweep
	sweep_table >"$work/sweep.md"
	echo
	cat "$work/sweep.md"
	echo
fi
echo "total time: $((SECONDS - start)) s; load after: $(cut -d' ' -f1-3 /proc/loadavg)"
if ((failures)); then
	echo "$failures failure(s): see above; no table written" >&2
	exit 1
fi
if [[ -n $doc ]]; then
	[[ $mode == sweep ]] || write_section bench "$work/main.md"
	[[ $mode == main ]] || write_section sweep "$work/sweep.md"
fi
