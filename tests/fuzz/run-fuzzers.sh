#!/usr/bin/env bash
# Run every libFuzzer harness built in $1 for $2 seconds on a scratch copy of
# its seed corpus (tests/corpus/<target>/), with a 64 MiB malloc limit.
# Fails on any crash, leak, timeout or out-of-memory report.
set -uo pipefail
build=$1
seconds=${2:-60}
here=$(cd "$(dirname "$0")/../.." && pwd)
status=0
ran=0
for bin in "$build"/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  target=${name#fuzz_}
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/corpus" "$work/artifacts"
  if [ -d "$here/tests/corpus/$target" ]; then
    cp -r "$here/tests/corpus/$target/." "$work/corpus/"
  fi
  limit=64
  [ -f "$here/tests/corpus/$target.malloc_limit_mb" ] && limit=$(cat "$here/tests/corpus/$target.malloc_limit_mb")
  echo "fuzz: $name for ${seconds}s (malloc limit ${limit} MiB)"
  if "$bin" -max_total_time="$seconds" -malloc_limit_mb="$limit" -rss_limit_mb=2048 \
       -timeout=10 -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
       "$work/corpus" > "$work/log" 2>&1; then
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$')
    echo "fuzz: $name passed (${execs:-?} executions, 0 crashes)"
  else
    echo "fuzz: $name FAILED"
    tail -n 60 "$work/log"
    status=1
  fi
  ran=$((ran + 1))
  rm -rf "$work"
  trap - EXIT
done
if [ "$ran" -eq 0 ]; then
  echo "fuzz: no harness found in $build"
  exit 1
fi
echo "fuzz: $ran harnesses, $([ $status -eq 0 ] && echo all passed || echo FAILURES)"
exit $status
