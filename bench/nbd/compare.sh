#!/usr/bin/env bash
# Compare copying a file to an NBD export with Debian's nbdcopy and with the
# kcopyd NBD client (device/nbd, through BenchmarkCopyToNBD).
#
# usage: bench/nbd/compare.sh [SIZE_MIB]
#
# Environment:
#   SIZE_MIB   size of the source file in MiB (default 1024; also $1)
#   RUNS       runs per tool (default 3); the median is reported
#   PLUGIN     nbdkit plugin for the target: memory (default) or file
#   CONNS      connections for both tools (default 4)
#   REQUESTS   requests in flight per connection for nbdcopy (default 64)
#   WORKERS    goroutines issuing 1 MiB writes in the Go benchmark (default 16)
#   KCOPYD     path to a kcopyd binary: also time "kcopyd copy SRC DST"
#              (the CLI may not exist yet; left out when unset)
#
# Needs nbdkit, nbdcopy (libnbd-bin) and go. Everything runs on a Unix
# socket in a temporary directory, removed at exit.
set -euo pipefail

size_mib=${SIZE_MIB:-${1:-1024}}
runs=${RUNS:-3}
plugin=${PLUGIN:-memory}
conns=${CONNS:-4}
requests=${REQUESTS:-64}
workers=${WORKERS:-16}

for tool in nbdkit nbdcopy go; do
	command -v "$tool" >/dev/null || { echo "compare.sh: $tool is not installed" >&2; exit 2; }
done

repo=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/nbdbench.XXXXXX")
server_pid=
cleanup() {
	[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

src=$tmp/src.img
sock=$tmp/nbd.sock
uri="nbd+unix:///?socket=$sock"

echo "== source: $size_mib MiB in $src"
# Random-ish: a random MiB repeated with a per-MiB counter, so that the data
# neither compresses nor costs minutes of /dev/urandom.
head -c 1048576 /dev/urandom >"$tmp/block"
for ((i = 0; i < size_mib; i++)); do
	printf '%016d' "$i"
	tail -c +17 "$tmp/block"
done >"$src"

start_server() {
	rm -f "$sock"
	case $plugin in
	memory) nbdkit -f -U "$sock" memory "${size_mib}M" & ;;
	file)
		rm -f "$tmp/dst.img"
		truncate -s "${size_mib}M" "$tmp/dst.img"
		nbdkit -f -U "$sock" file "$tmp/dst.img" &
		;;
	*) echo "compare.sh: PLUGIN must be memory or file" >&2; exit 2 ;;
	esac
	server_pid=$!
	for ((i = 0; i < 500; i++)); do
		[ -S "$sock" ] && return 0
		sleep 0.02
	done
	echo "compare.sh: nbdkit did not start" >&2
	exit 1
}

stop_server() {
	kill "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	server_pid=
}

now() { date +%s.%N; }

calc() { awk "BEGIN { printf \"%.6f\", $* }"; }

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

echo "== building the Go benchmark"
(cd "$repo" && go test -c -o "$tmp/nbd.test" ./device/nbd)

nbdcopy_times=()
go_times=()
kcopyd_times=()
for ((r = 1; r <= runs; r++)); do
	start_server
	t0=$(now)
	nbdcopy --connections="$conns" --requests="$requests" "$src" "$uri"
	t1=$(now)
	stop_server
	nbdcopy_times+=("$(calc "$t1 - $t0")")

	start_server
	out=$(NBD_BENCH_SRC=$src NBD_BENCH_URI=$uri NBD_BENCH_CONNS=$conns NBD_BENCH_WORKERS=$workers \
		"$tmp/nbd.test" -test.run '^$' -test.bench '^BenchmarkCopyToNBD$' -test.benchtime 1x)
	stop_server
	ns=$(echo "$out" | awk '/^BenchmarkCopyToNBD/ {for (i = 1; i <= NF; i++) if ($(i+1) == "ns/op") print $i}')
	[ -n "$ns" ] || { echo "$out" >&2; exit 1; }
	go_times+=("$(calc "$ns / 1000000000")")

	if [ -n "${KCOPYD:-}" ]; then
		start_server
		t0=$(now)
		"$KCOPYD" copy "$src" "$uri"
		t1=$(now)
		stop_server
		kcopyd_times+=("$(calc "$t1 - $t0")")
	fi
	echo "run $r: nbdcopy ${nbdcopy_times[-1]} s, device/nbd ${go_times[-1]} s${KCOPYD:+, kcopyd ${kcopyd_times[-1]} s}"
done

m_nbdcopy=$(printf '%s\n' "${nbdcopy_times[@]}" | median)
m_go=$(printf '%s\n' "${go_times[@]}" | median)
echo
echo "== $size_mib MiB file -> nbdkit $plugin, $conns connections, medians of $runs runs"
printf 'nbdcopy     %8.3f s  %8.1f MiB/s\n' "$m_nbdcopy" "$(calc "$size_mib / $m_nbdcopy")"
printf 'device/nbd  %8.3f s  %8.1f MiB/s\n' "$m_go" "$(calc "$size_mib / $m_go")"
if [ -n "${KCOPYD:-}" ]; then
	m_k=$(printf '%s\n' "${kcopyd_times[@]}" | median)
	printf 'kcopyd copy %8.3f s  %8.1f MiB/s\n' "$m_k" "$(calc "$size_mib / $m_k")"
fi
printf 'ratio device/nbd / nbdcopy time: %.2f (below 1 is faster)\n' "$(calc "$m_go / $m_nbdcopy")"
