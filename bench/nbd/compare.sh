#!/usr/bin/env bash
# Time the kcopyd command against Debian's nbdcopy copying a file to an
# nbdkit export and back, and kcopyd with 1, 2, 4 and 8 connections.
#
# usage: bench/nbd/compare.sh [SIZE_MIB]
#
# For each nbdkit plugin (file, memory) and each direction (file -> NBD,
# NBD -> file, and NBD -> NBD from an nbdkit memory export), every tool
# copies the same SIZE_MIB MiB RUNS times against freshly started servers,
# the tools taking turns within each round. The
# median time of each is printed with its ratio to nbdcopy's (below 1:
# kcopyd is faster). The first run of each tool is checked byte for byte.
#
# Both tools make the copy durable: kcopyd flushes by default, nbdcopy is
# given --flush. Otherwise each tool runs with its defaults (nbdcopy: up to
# 4 connections, 64 requests of 256 KiB per connection; kcopyd: its
# --connections default, 4 jobs of 512 KiB sub-jobs).
#
# Environment:
#   SIZE_MIB   MiB to copy (default 1024; also $1)
#   RUNS       runs per tool (default 3); the median is reported
#   PLUGINS    nbdkit plugins to serve the export (default "file memory")
#   DIRS       directions (default "to from between": file -> NBD,
#              NBD -> file, nbdkit memory -> NBD)
#   SWEEP      kcopyd --connections values also measured (default "1 2 4 8";
#              empty: only kcopyd's default)
#   KCOPYD     kcopyd binary to time (default: built from this tree)
#   KCOPYD_ARGS extra arguments for every kcopyd run (default none)
#   NBDCOPY_ARGS arguments for every nbdcopy run (default --flush)
#   GOBENCH    1: also time BenchmarkCopyToNBD of device/nbd (file -> NBD)
#
# Needs nbdkit, nbdcopy (libnbd-bin) and go. Everything runs on a Unix
# socket in a temporary directory, removed at exit. Between runs the script
# calls sync, so that no run pays for the write-back of the one before.
set -euo pipefail

size_mib=${SIZE_MIB:-${1:-1024}}
runs=${RUNS:-3}
plugins=${PLUGINS:-file memory}
dirs=${DIRS:-to from between}
sweep=${SWEEP-1 2 4 8}
nbdcopy_args=${NBDCOPY_ARGS---flush}
kcopyd_args=${KCOPYD_ARGS:-}

for tool in nbdkit nbdcopy go; do
	command -v "$tool" >/dev/null || { echo "compare.sh: $tool is not installed" >&2; exit 2; }
done

repo=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/nbdbench.XXXXXX")
server_pid=
source_pid=
cleanup() {
	for pid in $server_pid $source_pid; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

src=$tmp/src.img
export_img=$tmp/export.img
dst=$tmp/dst.img
sock=$tmp/nbd.sock
uri="nbd+unix:///?socket=$sock"
source_sock=$tmp/source.sock
source_uri="nbd+unix:///?socket=$source_sock"

kcopyd=${KCOPYD:-}
if [ -z "$kcopyd" ]; then
	echo "== building kcopyd"
	(cd "$repo" && go build -o "$tmp/kcopyd" ./cmd/kcopyd)
	kcopyd=$tmp/kcopyd
fi

echo "== source: $size_mib MiB in $src"
# Random-ish: a random MiB repeated with a per-MiB counter, so that the data
# neither compresses nor costs minutes of /dev/urandom, and has no zeroes
# for either tool to skip.
head -c 1048576 /dev/urandom >"$tmp/block"
for ((i = 0; i < size_mib; i++)); do
	printf '%016d' "$i"
	tail -c +17 "$tmp/block"
done >"$src"

# start_server PLUGIN FILL: a fresh nbdkit export of size_mib MiB, holding
# the source's data when FILL is 1.
start_server() {
	local plugin=$1 fill=$2
	rm -f "$sock"
	case $plugin in
	memory) nbdkit -f -U "$sock" memory "${size_mib}M" >/dev/null & ;;
	file)
		rm -f "$export_img"
		if [ "$fill" = 1 ]; then
			cp "$src" "$export_img"
		else
			truncate -s "${size_mib}M" "$export_img"
		fi
		nbdkit -f -U "$sock" file "$export_img" >/dev/null &
		;;
	*) echo "compare.sh: unknown plugin $plugin (file or memory)" >&2; exit 2 ;;
	esac
	server_pid=$!
	for ((i = 0; i < 500; i++)); do
		[ -S "$sock" ] && break
		sleep 0.02
	done
	[ -S "$sock" ] || { echo "compare.sh: nbdkit did not start" >&2; exit 1; }
	if [ "$plugin" = memory ] && [ "$fill" = 1 ]; then
		nbdcopy "$src" "$uri"
	fi
}

stop_server() {
	kill "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	server_pid=
}

# start_source: an nbdkit memory export holding the source's data, for
# NBD -> NBD copies. It serves every run of the direction.
start_source() {
	rm -f "$source_sock"
	nbdkit -f -U "$source_sock" memory "${size_mib}M" >/dev/null &
	source_pid=$!
	for ((i = 0; i < 500; i++)); do
		[ -S "$source_sock" ] && break
		sleep 0.02
	done
	[ -S "$source_sock" ] || { echo "compare.sh: nbdkit did not start" >&2; exit 1; }
	nbdcopy "$src" "$source_uri"
}

stop_source() {
	kill "$source_pid" 2>/dev/null || true
	wait "$source_pid" 2>/dev/null || true
	source_pid=
}

now() { date +%s.%N; }

calc() { awk "BEGIN { printf \"%.6f\", $* }"; }

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# check_copy PLUGIN DIR: the destination of the run just made holds the
# source (the server is still up).
check_copy() {
	local plugin=$1 dir=$2
	if [ "$dir" = from ]; then
		cmp -s "$src" "$dst" || { echo "compare.sh: $dst differs from the source" >&2; exit 1; }
	elif [ "$plugin" = file ]; then
		cmp -s "$src" "$export_img" || { echo "compare.sh: the export differs from the source" >&2; exit 1; }
	else
		nbdcopy "$uri" - | cmp -s "$src" - || { echo "compare.sh: the export differs from the source" >&2; exit 1; }
	fi
}

# run_tool NAME PLUGIN DIR: one timed copy; sets elapsed to the seconds.
run_tool() {
	local name=$1 plugin=$2 dir=$3 from to t0 t1
	local fill=0
	[ "$dir" = from ] && fill=1
	start_server "$plugin" "$fill"
	rm -f "$dst"
	case $dir in
	from) from=$uri to=$dst ;;
	to) from=$src to=$uri ;;
	between) from=$source_uri to=$uri ;;
	esac
	sync
	# shellcheck disable=SC2086 # word splitting of the argument lists is wanted
	case $name in
	nbdcopy)
		t0=$(now)
		nbdcopy $nbdcopy_args "$from" "$to"
		t1=$(now)
		;;
	kcopyd)
		t0=$(now)
		"$kcopyd" copy -q --create $kcopyd_args "$from" "$to"
		t1=$(now)
		;;
	kcopyd-C*)
		t0=$(now)
		"$kcopyd" copy -q --create --connections "${name#kcopyd-C}" $kcopyd_args "$from" "$to"
		t1=$(now)
		;;
	esac
	[ "$r" = 1 ] && check_copy "$plugin" "$dir"
	stop_server
	elapsed=$(calc "$t1 - $t0")
}

tools=(nbdcopy kcopyd)
for n in $sweep; do
	tools+=("kcopyd-C$n")
done

default_conns=$("$kcopyd" copy --help | sed -n 's/.*--connections N .*(default \([0-9]*\)).*/\1/p')
declare -A times
summary=()
for plugin in $plugins; do
	for dir in $dirs; do
		case $dir in
		to) what="file -> nbdkit $plugin" ;;
		from) what="nbdkit $plugin -> file" ;;
		between) what="nbdkit memory -> nbdkit $plugin"; start_source ;;
		*) echo "compare.sh: unknown direction $dir (to, from or between)" >&2; exit 2 ;;
		esac
		echo "== $what"
		for ((r = 1; r <= runs; r++)); do
			line="run $r:"
			for tool in "${tools[@]}"; do
				run_tool "$tool" "$plugin" "$dir"
				times[$plugin,$dir,$tool]+="$elapsed "
				line+=" $tool $(printf '%.3f' "$elapsed")"
			done
			echo "$line"
		done
		[ "$dir" = between ] && stop_source
		m_ref=$(printf '%s\n' ${times[$plugin,$dir,nbdcopy]} | median)
		summary+=("" "$size_mib MiB $what, medians of $runs runs:")
		for tool in "${tools[@]}"; do
			m=$(printf '%s\n' ${times[$plugin,$dir,$tool]} | median)
			case $tool in
			nbdcopy) label="nbdcopy $nbdcopy_args" ;;
			kcopyd) label="kcopyd copy (default: $default_conns connections)" ;;
			*) label="kcopyd copy --connections ${tool#kcopyd-C}" ;;
			esac
			summary+=("$(printf '  %-44s %8.3f s %8.1f MiB/s  time ratio to nbdcopy %.2f' "$label" "$m" "$(calc "$size_mib / $m")" "$(calc "$m / $m_ref")")")
		done
	done
done

if [ "${GOBENCH:-0}" = 1 ]; then
	echo "== device/nbd BenchmarkCopyToNBD (file -> nbdkit memory)"
	(cd "$repo" && go test -c -o "$tmp/nbd.test" ./device/nbd)
	go_times=()
	for ((r = 1; r <= runs; r++)); do
		start_server memory 0
		out=$(NBD_BENCH_SRC=$src NBD_BENCH_URI=$uri NBD_BENCH_CONNS=4 NBD_BENCH_WORKERS=16 \
			"$tmp/nbd.test" -test.run '^$' -test.bench '^BenchmarkCopyToNBD$' -test.benchtime 1x)
		stop_server
		ns=$(echo "$out" | awk '/^BenchmarkCopyToNBD/ {for (i = 1; i <= NF; i++) if ($(i+1) == "ns/op") print $i}')
		[ -n "$ns" ] || { echo "$out" >&2; exit 1; }
		go_times+=("$(calc "$ns / 1000000000")")
	done
	m=$(printf '%s\n' "${go_times[@]}" | median)
	summary+=("" "$(printf '  %-44s %8.3f s %8.1f MiB/s' "device/nbd benchmark (4 conns, 16 workers)" "$m" "$(calc "$size_mib / $m")")")
fi

echo
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(nbdkit --version | head -1), $(nbdcopy --version | head -1)"
printf '%s\n' "${summary[@]}"
