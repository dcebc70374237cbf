#!/usr/bin/env bash
# compare.sh: side-by-side copy benchmarks of `kcopyd copy` against dd, cp,
# qemu-img convert, nbdcopy and dcfldd, with fio's raw O_DIRECT bandwidth of
# the same disk as the ceiling. One run, same source file, same disk, caches
# dropped and destinations removed before every timed run, flush included in
# every tool's time, N runs per tool (interleaved), median reported, every
# tool's output compared byte for byte with the source once per case.
#
# Usage: bench/compare.sh [--dir DIR] [--size SIZE] [--runs N] [--quick]
#                         [--install] [--kcopyd PATH] [--only LIST]
#                         [--kcopyd-extra 'ARGS']... [--csv FILE]
# See bench/README.md.
set -euo pipefail
export LC_ALL=C

prog=${0##*/}
repo=$(cd "$(dirname "$0")/.." && pwd)

usage() {
	cat <<EOF
Usage: $prog [options]

Benchmarks \`kcopyd copy\` against dd, cp, qemu-img convert, nbdcopy and dcfldd
on the same source file, with fio's raw O_DIRECT bandwidth as the ceiling.

Options:
  --dir DIR            work directory on the disk to measure (not tmpfs); a
                       temporary directory is made inside it and removed on
                       exit (default: \$TMPDIR, else /work, else /var/tmp)
  --size SIZE          source size, a multiple of 1MiB (default 1G; suffixes
                       K M G = KiB MiB GiB)
  --runs N             timed runs per tool and case; the median is printed
                       (default 3)
  --quick              --size 256M --runs 1
  --only LIST          comma-separated cases to run, of: fio,buffered,direct,
                       fanout,fanout-direct (default: all)
  --kcopyd PATH        use this kcopyd binary instead of building ./cmd/kcopyd
  --kcopyd-extra ARGS  also run "kcopyd copy ARGS ..." in every case as an
                       extra row (e.g. '--sub-job-size 1M'); repeatable
  --csv FILE           also write every timed run to FILE as CSV
  --install            install missing tools with apt-get (root only):
                       qemu-utils nbdkit libnbd-bin fio dcfldd time
  -h, --help           this help
EOF
}

# ---------------------------------------------------------------- options
dir=
size_arg=1G
runs=3
install=0
kcopyd_bin=
only=fio,buffered,direct,fanout,fanout-direct
csv=
extras=()

die() {
	echo "$prog: $*" >&2
	exit 2
}

while (($#)); do
	case $1 in
	--dir) dir=${2:?--dir needs a value}; shift 2 ;;
	--dir=*) dir=${1#*=}; shift ;;
	--size) size_arg=${2:?--size needs a value}; shift 2 ;;
	--size=*) size_arg=${1#*=}; shift ;;
	--runs) runs=${2:?--runs needs a value}; shift 2 ;;
	--runs=*) runs=${1#*=}; shift ;;
	--quick) size_arg=256M; runs=1; shift ;;
	--only) only=${2:?--only needs a value}; shift 2 ;;
	--only=*) only=${1#*=}; shift ;;
	--kcopyd) kcopyd_bin=${2:?--kcopyd needs a value}; shift 2 ;;
	--kcopyd=*) kcopyd_bin=${1#*=}; shift ;;
	--kcopyd-extra) extras+=("${2:?--kcopyd-extra needs a value}"); shift 2 ;;
	--kcopyd-extra=*) extras+=("${1#*=}"); shift ;;
	--csv) csv=${2:?--csv needs a value}; shift 2 ;;
	--csv=*) csv=${1#*=}; shift ;;
	--install) install=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done

[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, not '$runs'"
size=$(numfmt --from=iec "${size_arg%iB}" 2>/dev/null) || die "bad --size '$size_arg'"
((size > 0 && size % 1048576 == 0)) || die "--size must be a positive multiple of 1MiB, not '$size_arg'"
for c in ${only//,/ }; do
	case $c in fio | buffered | direct | fanout | fanout-direct) ;;
	*) die "unknown case '$c' in --only" ;;
	esac
done
want() { [[ ,$only, == *,$1,* ]]; }

is_root=0
[[ $(id -u) == 0 ]] && is_root=1

# ---------------------------------------------------------------- tools
declare -A pkg_of=([qemu-img]=qemu-utils [nbdkit]=nbdkit [nbdcopy]=libnbd-bin
	[fio]=fio [dcfldd]=dcfldd [/usr/bin/time]=time)
missing_pkgs=()
for t in qemu-img nbdkit nbdcopy fio dcfldd /usr/bin/time; do
	command -v "$t" >/dev/null 2>&1 || missing_pkgs+=("${pkg_of[$t]}")
done
if ((${#missing_pkgs[@]})); then
	if ((install && is_root)); then
		echo "installing: ${missing_pkgs[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_pkgs[@]}" >/dev/null
	elif ((install)); then
		echo "NOTE: --install needs root; not installing: ${missing_pkgs[*]}"
	else
		echo "NOTE: missing packages (rerun as root with --install): ${missing_pkgs[*]}"
	fi
fi
[[ -x /usr/bin/time ]] || die "/usr/bin/time is needed for max RSS (package 'time'; use --install)"
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- work dir
if [[ -z $dir ]]; then
	for d in "${TMPDIR:-}" /work /var/tmp; do
		[[ -n $d && -d $d && -w $d ]] || continue
		[[ $(stat -f -c %T "$d") == tmpfs ]] && continue
		dir=$d
		break
	done
	[[ -n $dir ]] || die "no disk-backed work directory found; use --dir"
fi
[[ -d $dir ]] || die "--dir $dir is not a directory"
fstype=$(findmnt -n -o FSTYPE -T "$dir" 2>/dev/null || stat -f -c %T "$dir")
[[ $fstype != tmpfs && $fstype != ramfs ]] ||
	die "--dir $dir is on $fstype: this measures memory, not the disk"
need=$((size * 6 + 256 * 1048576))
avail=$(($(df -P -B1 "$dir" | awk 'NR==2 {print $4}')))
((avail >= need)) || die "$dir has $((avail >> 20)) MiB free, need $((need >> 20)) MiB (6 x SIZE)"

work=$(mktemp -d "$dir/kcopyd-bench.XXXXXX")
cleanup() {
	local rc=$?
	# Only our own children: jobs of this shell.
	local p
	for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
	rm -rf -- "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- kcopyd
if [[ -n $kcopyd_bin ]]; then
	[[ -x $kcopyd_bin ]] || die "--kcopyd $kcopyd_bin is not executable"
	KCOPYD=$(realpath "$kcopyd_bin")
else
	have go || die "go not found; build kcopyd yourself and pass --kcopyd PATH"
	echo "building kcopyd from $repo ..."
	(cd "$repo" && go build -o "$work/kcopyd" ./cmd/kcopyd) || die "go build ./cmd/kcopyd failed"
	KCOPYD=$work/kcopyd
fi

# ---------------------------------------------------------------- facts
mb() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1e6 }'; }
hr() { printf '%*s\n' 100 '' | tr ' ' -; }

dev=$(df -P "$dir" | awk 'NR==2 {print $1}')
blk=$(basename "$(realpath "$dev" 2>/dev/null || echo "$dev")")
sched=$(cat "/sys/block/$blk/queue/scheduler" 2>/dev/null | sed 's/ *$//' || echo '?')
hr
echo "kcopyd copy benchmark  $(date -u '+%Y-%m-%d %H:%M UTC')"
hr
echo "machine : $(uname -srm), $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo))"
echo "memory  : $(free -h | awk '/^Mem:/ {print $2 " total, " $7 " available"}')"
echo "work dir: $work"
echo "          $fstype on $dev (scheduler: $sched), $(findmnt -n -o OPTIONS -T "$dir" 2>/dev/null || echo '?')"
echo "load    : $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) before the run"
echo "size    : $size bytes ($(numfmt --to=iec "$size")), $runs run(s) per tool, median shown; MB = 10^6 bytes"
echo "kcopyd  : $KCOPYD: $("$KCOPYD" version 2>/dev/null | head -1)"
[[ -n $kcopyd_bin ]] || echo "          built from $repo at $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?')"
printf 'peers   : %s; %s; %s; %s; %s; %s\n' "$(dd --version | head -1)" \
	"$(have qemu-img && qemu-img --version | head -1 || echo 'qemu-img missing')" \
	"$(have nbdcopy && nbdcopy --version | head -1 || echo 'nbdcopy missing')" \
	"$(have nbdkit && nbdkit --version | head -1 || echo 'nbdkit missing')" \
	"$(have dcfldd && dcfldd --version 2>&1 | head -1 || echo 'dcfldd missing')" \
	"$(have fio && fio --version || echo 'fio missing')"
echo "WARNING : this machine may be shared and noisy (other jobs use the same CPUs and"
echo "          disk); compare rows of one run, and repeat before drawing conclusions."
if ((is_root)); then
	echo "caches  : page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every run"
else
	echo "caches  : NOT dropped (not root): buffered reads may come from the page cache"
fi
hr

drop_caches() {
	sync
	if ((is_root)); then echo 3 >/proc/sys/vm/drop_caches; fi
}

# ---------------------------------------------------------------- source
export SRC=$work/src D1=$work/dst1 D2=$work/dst2 D3=$work/dst3 D4=$work/dst4 KCOPYD
export SIZE=$size
echo "writing $(numfmt --to=iec "$size") of random data to $SRC ..."
head -c "$size" /dev/urandom >"$SRC"
sync -d "$SRC"

# ---------------------------------------------------------------- results
declare -A T    # "case|tool" -> space-separated wall times (s)
declare -A RSS  # "case|tool" -> max of max RSS (KiB)
declare -A CPU  # "case|tool" -> space-separated user+sys CPU times (s)
declare -A NOTE # "case|tool" -> note shown after the table
declare -A KIND # "case|tool" -> peer | kcopyd | fio
declare -A ROWS # case -> newline-separated tools in order
failures=0
[[ -n $csv ]] && echo "case,tool,run,seconds,max_rss_kib,cpu_seconds" >"$csv"

record() { # case tool seconds rss_kib cpu_seconds
	T["$1|$2"]+="$3 "
	CPU["$1|$2"]+="$5 "
	local old=${RSS["$1|$2"]:-0}
	((${4:-0} > old)) && RSS["$1|$2"]=$4
	[[ -z $csv ]] || echo "$1,\"$2\",$run,$3,${4:-0},$5" >>"$csv"
	return 0
}

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print ""; else if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

# Each tool is: case, name, kind, number of destinations, prep, command.
# prep "none": destinations do not exist when the tool starts (it creates
# them); "sparse": empty sparse files of SIZE exist (for nbdkit, which serves
# a file of fixed size). Neither preallocates blocks. The command runs under
# bash -c with SRC D1..D4 KCOPYD SIZE in the environment.
declare -a TOOLS=()
add() { # case name kind ndest prep command
	TOOLS+=("$1"$'\x1f'"$2"$'\x1f'"$3"$'\x1f'"$4"$'\x1f'"$5"$'\x1f'"$6")
	ROWS[$1]+="$2"$'\n'
	KIND["$1|$2"]=$3
}
skip() { # case name why
	ROWS[$1]+="$2"$'\n'
	KIND["$1|$2"]=skip
	NOTE["$1|$2"]=$3
}

run_tool() { # case name kind ndest prep command verify
	local cs=$1 name=$2 kind=$3 nd=$4 prep=$5 cmd=$6 verify=$7
	local dests=("$D1" "$D2" "$D3" "$D4") i
	rm -f -- "$D1" "$D2" "$D3" "$D4"
	if [[ $prep == sparse ]]; then
		for ((i = 0; i < nd; i++)); do truncate -s "$SIZE" "${dests[i]}"; done
	fi
	drop_caches
	local t0 t1 rc=0
	t0=$EPOCHREALTIME
	/usr/bin/time -f '%M %U %S' -o "$work/time.out" bash -o pipefail -c "$cmd" >"$work/out.log" 2>&1 || rc=$?
	t1=$EPOCHREALTIME
	if ((rc)); then
		echo "  FAILED ($rc): $name [$cs]: $cmd"
		sed 's/^/    | /' "$work/out.log" | head -20
		NOTE["$cs|$name"]="FAILED (exit $rc)"
		failures=$((failures + 1))
		return 0
	fi
	local secs rss cpu
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
	read -r rss cpu < <(tail -1 "$work/time.out" | awk '{ printf "%d %.2f\n", $1, $2 + $3 }')
	record "$cs" "$name" "$secs" "$rss" "$cpu"
	printf '  run %d  %-15s %-36s %7.2f s  %6.2f s CPU  %6.1f MiB RSS\n' "$run" "$cs" "$name" "$secs" "$cpu" \
		"$(awk -v k="$rss" 'BEGIN {print k/1024}')"
	if ((verify)); then
		for ((i = 0; i < nd; i++)); do
			if ! cmp -s -n "$SIZE" -- "$SRC" "${dests[i]}" ||
				[[ $(stat -c %s "${dests[i]}") != "$SIZE" ]]; then
				echo "  MISMATCH: $name [$cs] wrote ${dests[i]} differently from the source"
				NOTE["$cs|$name"]="OUTPUT DIFFERS FROM SOURCE"
				failures=$((failures + 1))
			fi
		done
		[[ -n ${NOTE["$cs|$name"]:-} ]] || NOTE["$cs|$name"]=verified
	fi
}

# ---------------------------------------------------------------- fio
fio_eng=
if want fio && have fio; then
	for e in io_uring libaio; do
		if fio --name=probe --filename="$SRC" --rw=read --bs=4k --size=4k --direct=1 \
			--ioengine=$e --output=/dev/null >/dev/null 2>&1; then
			fio_eng=$e
			break
		fi
	done
fi
declare -A FIO # pattern -> space-separated MB/s
fio_run() { # pattern nwriters with_reader
	local pat=$1 nw=$2 rd=$3 args=() i
	local common=(--bs=1M --iodepth=16 --ioengine="$fio_eng" --direct=1 --size="$SIZE")
	((rd)) && args+=(--name=read --filename="$SRC" --rw=read "${common[@]}")
	for ((i = 1; i <= nw; i++)); do
		rm -f -- "$work/fio.w$i"
		args+=(--name=write$i --filename="$work/fio.w$i" --rw=write --fallocate=none --end_fsync=1 "${common[@]}")
	done
	drop_caches
	fio --output-format=json --output="$work/fio.json" "${args[@]}" >/dev/null
	# Bandwidth of the pattern = source-sized bytes / time of the slowest job,
	# the figure comparable with a copy of SIZE (to nw destinations).
	local ms
	ms=$(jq '[.jobs[].job_runtime] | max' "$work/fio.json")
	local mbs
	mbs=$(awk -v s="$SIZE" -v ms="$ms" 'BEGIN { printf "%.0f", s / (ms / 1000) / 1e6 }')
	FIO[$pat]+="$mbs "
	[[ -z $csv ]] || echo "fio,\"$pat\",$run,$(awk -v ms="$ms" 'BEGIN {print ms/1000}'),0," >>"$csv"
	printf '  run %d  %-15s %-34s %7.2f s  %6s MB/s\n' "$run" fio "$pat" "$(awk -v ms="$ms" 'BEGIN {print ms/1000}')" "$mbs"
	for ((i = 1; i <= nw; i++)); do rm -f -- "$work/fio.w$i"; done
}

if want fio; then
	if [[ -z $fio_eng ]]; then
		echo "NOTE: fio missing or neither io_uring nor libaio works: no ceiling measured"
	elif ! have jq; then
		echo "NOTE: jq missing: no fio ceiling (apt-get install jq)"
		fio_eng=
	else
		echo "fio ceilings (bs=1M, iodepth=16, $fio_eng, O_DIRECT, size=SIZE per job):"
		for ((run = 1; run <= runs; run++)); do
			fio_run "read" 0 1
			fio_run "write" 1 0
			fio_run "1 read + 1 write" 1 1
			fio_run "1 read + 4 writes" 4 1
		done
	fi
fi

# ---------------------------------------------------------------- cases
kc='"$KCOPYD" copy --quiet'
add_kcopyd() { # case base-args ndest dests
	add "$1" "kcopyd${2:+ $2}" kcopyd "$3" none "$kc --create $2 \"\$SRC\" $4"
	local x
	for x in "${extras[@]}"; do
		add "$1" "kcopyd${2:+ $2} $x" kcopyd "$3" none "$kc --create $2 $x \"\$SRC\" $4"
	done
}

if want buffered; then
	cs=buffered
	add $cs "dd bs=1M conv=fsync" peer 1 none 'dd if="$SRC" of="$D1" bs=1M conv=fsync status=none'
	add $cs "cp; sync FILE" peer 1 none 'cp --sparse=never --reflink=never "$SRC" "$D1" && sync "$D1"'
	if have qemu-img; then
		add $cs "qemu-img convert; sync FILE" peer 1 none 'qemu-img convert -f raw -O raw "$SRC" "$D1" && sync "$D1"'
	else skip $cs "qemu-img convert" "not installed (qemu-utils)"; fi
	if have nbdcopy; then
		add $cs "nbdcopy --flush FILE FILE" peer 1 none 'nbdcopy --flush "$SRC" "$D1"'
		if have nbdkit; then
			add $cs "nbdcopy --flush nbdkit file" peer 1 sparse \
				"nbdcopy --flush -- [ nbdkit --exit-with-parent -r file \"\$SRC\" ] [ nbdkit --exit-with-parent file \"\$D1\" ]"
		else skip $cs "nbdcopy nbdkit file" "nbdkit not installed"; fi
	else skip $cs "nbdcopy" "not installed (libnbd-bin)"; fi
	if have dcfldd; then
		add $cs "dcfldd bs=1M; sync FILE" peer 1 none 'dcfldd if="$SRC" of="$D1" bs=1M status=off && sync "$D1"'
	else skip $cs "dcfldd" "not installed (apt-get install dcfldd, or --install)"; fi
	add_kcopyd $cs "" 1 '"$D1"'
fi

if want direct; then
	cs=direct
	add $cs "dd bs=1M iflag,oflag=direct" peer 1 none 'dd if="$SRC" of="$D1" bs=1M iflag=direct oflag=direct conv=fsync status=none'
	add $cs "dd bs=4M iflag,oflag=direct" peer 1 none 'dd if="$SRC" of="$D1" bs=4M iflag=direct oflag=direct conv=fsync status=none'
	if have qemu-img; then
		add $cs "qemu-img -t none -T none; sync" peer 1 none 'qemu-img convert -t none -T none -f raw -O raw "$SRC" "$D1" && sync "$D1"'
	else skip $cs "qemu-img convert" "not installed (qemu-utils)"; fi
	if have nbdcopy && have nbdkit; then
		add $cs "nbdcopy nbdkit cache=none (*)" peer 1 sparse \
			"nbdcopy --flush -- [ nbdkit --exit-with-parent -r file \"\$SRC\" cache=none ] [ nbdkit --exit-with-parent file \"\$D1\" cache=none ]"
		NOTE["$cs|nbdcopy nbdkit cache=none (*)"]="(*) nbdkit 1.32 has no O_DIRECT; cache=none evicts pages instead"
	else skip $cs "nbdcopy nbdkit" "nbdcopy or nbdkit not installed"; fi
	skip $cs "cp, dcfldd" "no O_DIRECT mode"
	add_kcopyd $cs "--direct" 1 '"$D1"'
fi

four='"$D1" "$D2" "$D3" "$D4"'
par_dd() { # dd args: 4 dd processes in parallel, one per destination
	echo "set -e; pids=(); for d in $four; do dd if=\"\$SRC\" of=\"\$d\" $1 status=none & pids+=(\$!); done; for p in \"\${pids[@]}\"; do wait \"\$p\"; done"
}
if want fanout; then
	cs=fanout
	add $cs "4 x dd bs=1M conv=fsync (parallel)" peer 4 none "$(par_dd 'bs=1M conv=fsync')"
	add $cs "dd | tee x3 >4th; sync FILES" peer 4 none \
		"dd if=\"\$SRC\" bs=1M status=none | tee \"\$D1\" \"\$D2\" \"\$D3\" >\"\$D4\" && sync $four"
	if have dcfldd; then
		add $cs "dcfldd of= x4; sync FILES" peer 4 none \
			"dcfldd if=\"\$SRC\" of=\"\$D1\" of=\"\$D2\" of=\"\$D3\" of=\"\$D4\" bs=1M status=off && sync $four"
	else skip $cs "dcfldd" "not installed"; fi
	add_kcopyd $cs "" 4 "$four"
fi

if want fanout-direct; then
	cs=fanout-direct
	add $cs "4 x dd bs=4M direct (parallel)" peer 4 none "$(par_dd 'bs=4M iflag=direct oflag=direct conv=fsync')"
	add_kcopyd $cs "--direct" 4 "$four"
fi

# Interleave: run r of every tool of a case, then run r+1, so that noise from
# other jobs on the machine is spread over all tools instead of hitting one.
cases=()
for c in buffered direct fanout fanout-direct; do want $c && cases+=("$c"); done
for cs in "${cases[@]}"; do
	echo "case $cs:"
	for ((run = 1; run <= runs; run++)); do
		for t in "${TOOLS[@]}"; do
			IFS=$'\x1f' read -r c name kind nd prep cmd <<<"$t"
			[[ $c == "$cs" ]] || continue
			run_tool "$c" "$name" "$kind" "$nd" "$prep" "$cmd" $((run == 1))
		done
	done
done
rm -f -- "$D1" "$D2" "$D3" "$D4"

# ---------------------------------------------------------------- report
fio_med() { echo "${FIO[$1]:-}" | median; }
ceiling_of() { # case -> fio pattern
	case $1 in
	buffered | direct) echo "1 read + 1 write" ;;
	fanout | fanout-direct) echo "1 read + 4 writes" ;;
	esac
}

echo
hr
echo "RESULTS  size=$(numfmt --to=iec "$size")  runs=$runs  (median wall time incl. flush; MB/s = source bytes / time)"
echo "x best = median / best peer's median in the same case (<1 = faster than every peer)"
echo "%fio   = MB/s as a share of fio's O_DIRECT bandwidth for the same I/O pattern"
hr
if [[ -n $fio_eng ]]; then
	printf '%-20s %10s\n' "fio (O_DIRECT)" "MB/s"
	for p in "read" "write" "1 read + 1 write" "1 read + 4 writes"; do
		printf '  %-18s %10s   (runs: %s)\n' "$p" "$(fio_med "$p")" "${FIO[$p]% }"
	done
	r=$(fio_med read) w=$(fio_med write)
	printf '  %-18s %10s   (if reads and writes overlapped perfectly)\n' "min(read, write)" "$((r < w ? r : w))"
	hr
fi
printf '%-14s %-37s %8s %6s %6s %5s %6s %7s  %s\n' case tool "median s" "MB/s" "x best" "%fio" "CPU s" "RSS MiB" "runs (s) / note"
declare -A BEST
for cs in "${cases[@]}"; do
	best=
	while IFS= read -r name; do
		[[ -n $name && ${KIND["$cs|$name"]} == peer && -n ${T["$cs|$name"]:-} ]] || continue
		m=$(echo "${T["$cs|$name"]}" | median)
		if [[ -z $best ]] || awk -v a="$m" -v b="$best" 'BEGIN {exit !(a < b)}'; then best=$m; fi
	done <<<"${ROWS[$cs]}"
	BEST[$cs]=$best
	ceil=
	[[ -n $fio_eng ]] && ceil=$(fio_med "$(ceiling_of "$cs")")
	while IFS= read -r name; do
		[[ -n $name ]] || continue
		key="$cs|$name"
		note=${NOTE[$key]:-}
		if [[ -z ${T[$key]:-} ]]; then
			printf '%-14s %-37s %8s %6s %6s %5s %6s %7s  %s\n' "$cs" " $name" - - - - - - "$note"
			continue
		fi
		m=$(echo "${T[$key]}" | median)
		mbs=$(awk -v s="$SIZE" -v t="$m" 'BEGIN { printf "%.0f", s / t / 1e6 }')
		ratio=-
		[[ -n $best ]] && ratio=$(awk -v a="$m" -v b="$best" 'BEGIN { printf "%.2f", a / b }')
		pct=-
		[[ -n $ceil ]] && pct=$(awk -v a="$mbs" -v c="$ceil" 'BEGIN { printf "%.0f%%", 100 * a / c }')
		rss=$(awk -v k="${RSS[$key]:-0}" 'BEGIN { printf "%.1f", k / 1024 }')
		mark=' '
		[[ ${KIND[$key]} == kcopyd ]] && mark='>'
		cpu=$(echo "${CPU[$key]}" | median)
		printf '%-14s %-37s %8.2f %6s %6s %5s %6.2f %7s  %s%s\n' "$cs" "$mark$name" "$m" "$mbs" "$ratio" "$pct" "$cpu" "$rss" \
			"${T[$key]% }" "${note:+  [$note]}"
	done <<<"${ROWS[$cs]}"
	hr
done
echo "CPU s = median user+sys CPU seconds of the tool and its children (less sensitive to other"
echo "jobs on the machine than wall time). RSS is the largest single process (/usr/bin/time %M):"
echo "for '4 x dd', pipelines and nbdcopy+nbdkit it is the largest process, not their sum."

# ---------------------------------------------------------------- targets
echo
echo "kcopyd against the performance targets (medians of this run):"
for cs in "${cases[@]}"; do
	best=${BEST[$cs]:-}
	while IFS= read -r name; do
		key="$cs|$name"
		[[ -n $name && ${KIND[$key]:-} == kcopyd && -n ${T[$key]:-} ]] || continue
		m=$(echo "${T[$key]}" | median)
		if [[ -n $best ]]; then
			ratio=$(awk -v a="$m" -v b="$best" 'BEGIN { printf "%.2f", a / b }')
			case $cs in
			fanout | fanout-direct) limit=0.60 ;;
			*) limit=1.00 ;;
			esac
			ok=$(awk -v r="$ratio" -v l="$limit" 'BEGIN { print (r <= l) ? "PASS" : "FAIL" }')
			printf '  %-4s %-14s %-36s %5sx best peer (target <= %s)\n' "$ok" "$cs" "$name" "$ratio" "$limit"
		fi
		rssm=$(awk -v k="${RSS[$key]:-0}" 'BEGIN { printf "%.1f", k / 1024 }')
		ok=$(awk -v r="$rssm" 'BEGIN { print (r < 64) ? "PASS" : "FAIL" }')
		printf '  %-4s %-14s %-36s %5s MiB max RSS (target < 64)\n' "$ok" "$cs" "$name" "$rssm"
	done <<<"${ROWS[$cs]}"
done
if [[ -n $fio_eng ]]; then
	for cs in "${cases[@]}"; do
		ceil=$(fio_med "$(ceiling_of "$cs")")
		while IFS= read -r name; do
			key="$cs|$name"
			[[ -n $name && ${KIND[$key]:-} == kcopyd && -n ${T[$key]:-} ]] || continue
			m=$(echo "${T[$key]}" | median)
			mbs=$(awk -v s="$SIZE" -v t="$m" 'BEGIN { printf "%.0f", s / t / 1e6 }')
			ok=$(awk -v a="$mbs" -v c="$ceil" 'BEGIN { print (a >= 0.9 * c) ? "PASS" : "FAIL" }')
			printf '  %-4s %-14s %-36s %5s MB/s = %s of fio "%s" %s MB/s (target >= 90%%)\n' "$ok" "$cs" "$name" \
				"$mbs" "$(awk -v a="$mbs" -v c="$ceil" 'BEGIN { printf "%.0f%%", 100 * a / c }')" "$(ceiling_of "$cs")" "$ceil"
		done <<<"${ROWS[$cs]}"
	done
fi
echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
if ((failures)); then
	echo "$failures FAILURE(S): see above" >&2
	exit 1
fi
