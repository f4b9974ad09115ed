#!/usr/bin/env bash
# ctest-timeout: 600
#
# ONNX backend conformance: run every test folder of Debian's
# libonnx-testdata (node, pytorch-converted, pytorch-operator, simple) and our
# own model folders (tests/models/*, examples/*) through `zinfer conformance`.
# Each test runs in a forked child (--fork) so a crashing kernel is reported
# as CRASH instead of ending the run. Known failures with a reason live in
# tests/conformance_exceptions.txt. Fails when a supported test fails.
#
#   bash tests/run_conformance.sh <build dir>      (from the repository root)
set -uo pipefail
build=${1:?usage: run_conformance.sh <build dir>}
here=$(cd "$(dirname "$0")/.." && pwd)
zinfer="$build/zinfer"
if [ ! -x "$zinfer" ]; then
  echo "run_conformance: $zinfer not found (build the zinfer-cli target)" >&2
  exit 1
fi
data=/usr/share/libonnx-testdata/data
dirs=()
for d in node pytorch-converted pytorch-operator simple; do
  if [ -d "$data/$d" ]; then
    dirs+=("$data/$d")
  else
    echo "run_conformance: $data/$d missing (Debian package libonnx-testdata)" >&2
  fi
done
# Our own folders in the backend-test layout, when present.
for d in "$here"/tests/models "$here"/examples/*; do
  [ -d "$d" ] || continue
  if [ -f "$d/model.onnx" ] || compgen -G "$d/*/model.onnx" > /dev/null; then
    dirs+=("$d")
  fi
done
if [ ${#dirs[@]} -eq 0 ]; then
  echo "run_conformance: no test folders found" >&2
  exit 1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$zinfer" conformance --fork --exceptions "$here/tests/conformance_exceptions.txt" \
    "${dirs[@]}" > "$log" 2>&1
status=$?
# Everything that is not a pass or an expected gap first, then the summary.
grep -E '^(FAIL|ERROR|CRASH|TIMEOUT|EXCEPTED|NOTE) ' "$log"
grep -E '^[^ ]+: [0-9]+ passed / ' "$log" | grep -v '^conformance:'
# The top unsupported reasons, then the overall summary line.
sed -n '/^top unsupported/,$p' "$log"
echo "run_conformance: full report of $(grep -c '' "$log") lines; exit status $status"
exit $status
