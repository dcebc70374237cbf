#!/usr/bin/env bash
# Runs the whole test suite: every package, with the race detector.
#
# Tests that need root (loop devices) or Debian's NBD tools skip with a
# message when those are missing. Run as root, this script first installs
# the tools (nbdkit, qemu-utils, libnbd-bin), so that nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"

need=()
command -v nbdkit   >/dev/null || need+=(nbdkit)
command -v qemu-nbd >/dev/null || need+=(qemu-utils)
command -v nbdcopy  >/dev/null || need+=(libnbd-bin)
command -v losetup  >/dev/null || need+=(util-linux)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v mkfs.xfs >/dev/null || need+=(xfsprogs)
command -v openssl  >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "test.sh: missing ${need[*]}: the tests that need them will skip" >&2
  fi
fi

go vet ./...
go test -race -count=1 -timeout 30m ./... "$@"
