#!/usr/bin/env bash
# Runs every fuzz target in the tree (every "func FuzzX" in a _test.go
# file) for FUZZTIME each (default 20s), one after the other. A target that
# finds a failure stops the script with the go test output; the failing
# input is then in that package's testdata/fuzz/FuzzX/, where it becomes a
# regression test of the ordinary `go test` once committed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
fuzztime=${FUZZTIME:-20s}

targets=()
while IFS= read -r file; do
  dir=$(dirname "$file")
  for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
    targets+=("$dir $name")
  done
done < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | sort)

echo "fuzz: ${#targets[@]} targets, $fuzztime each"
start=$(date +%s)
for t in "${targets[@]}"; do
  read -r dir name <<<"$t"
  echo "fuzz: $name in ./$dir"
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "./$dir"; then
    echo "fuzz: $name failed; the input is in ./$dir/testdata/fuzz/$name/: commit it as a regression test and fix the bug" >&2
    exit 1
  fi
done
echo "fuzz: all ${#targets[@]} targets passed in $(( $(date +%s) - start ))s"
