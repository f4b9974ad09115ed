#!/usr/bin/env bash
# The zinfer demo (`make demo`): Fashion-MNIST through a pipeline on this host.
#
#   bash examples/demo.sh BUILD_DIR
#
# Plans the Fashion-MNIST CNN into 2 segments served by 2 replicas of unequal
# capacity each (segment 0: R = 3 and 1, segment 1: R = 2 and 1; credits
# proportional), starts the pipeline with `zinfer up` on ipc endpoints in a
# temporary directory, streams the 10,000 test images through it, and prints
# the accuracy of the pipeline's answers beside the single-process engine's
# (they must be equal, image by image, or the demo fails), the throughput,
# p50/p99 latency, and each replica's share of the tasks beside the share
# T*R_i/sum(R) that its capacity predicts. Every process it started is
# stopped on exit, whatever happens.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: bash examples/demo.sh BUILD_DIR" >&2
  exit 2
fi
BUILD=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."
ZINFER=$BUILD/zinfer
OUT=$BUILD/demo
DATA=/usr/share/datasets/fashion-mnist
MODEL=examples/fashion-mnist/model.onnx

for f in "$ZINFER" "$BUILD/zinfer-broker" "$BUILD/zinfer-exec"; do
  [ -x "$f" ] || { echo "demo: $f is missing: build first (make build)" >&2; exit 1; }
done
for f in t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [ -r "$DATA/$f.gz" ] || { echo "demo: $DATA/$f.gz is missing (Debian: dataset-fashion-mnist)" >&2; exit 1; }
done
command -v python3 > /dev/null || { echo "demo: python3 is needed to print the shares" >&2; exit 1; }

mkdir -p "$OUT"
RUN=$(mktemp -d /tmp/zinfer-demo.XXXXXX)   # ipc endpoints: short paths
UP_PID=
cleanup() {
  local status=$?
  if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2> /dev/null; then
    kill -TERM "$UP_PID" 2> /dev/null || true
    wait "$UP_PID" 2> /dev/null || true
  fi
  rm -rf "$RUN"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== zinfer demo: Fashion-MNIST through a 2-segment pipeline on this host"
echo
for f in t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [ -s "$OUT/$f" ] || gunzip -c "$DATA/$f.gz" > "$OUT/$f"
done
IMAGES=$OUT/t10k-images-idx3-ubyte
LABELS=$OUT/t10k-labels-idx1-ubyte

echo "-- plan: 2 segments, replicas of capacity 3+1 and 2+1"
"$ZINFER" plan "$MODEL" -o "$OUT/plan.json" --ipc "$RUN" \
  --replica 0@local:3:3 --replica 0@local:1:1 \
  --replica 1@local:2:2 --replica 1@local:1:1 \
  --input-dtype uint8 --input-shape -1,28,28,1 \
  --pre cast=float32 --pre scale=0.00392156862745098 --pre hwc_to_chw \
  --post softmax --explain
echo

echo "-- zinfer up (logs in $OUT/up.log)"
"$ZINFER" up "$OUT/plan.json" > "$RUN/up.out" 2> "$OUT/up.log" &
UP_PID=$!
# Wait for the "ready" line zinfer up prints once the broker reports every
# segment served (zinfer up itself waits on HEALTH; this waits on it).
for _ in $(seq 300); do
  grep -q "ready" "$RUN/up.out" && break
  kill -0 "$UP_PID" 2> /dev/null || { echo "demo: zinfer up exited:" >&2; tail -20 "$OUT/up.log" >&2; exit 1; }
  sleep 0.1
done
grep -q "ready" "$RUN/up.out" || { echo "demo: the pipeline is not ready after 30 s:" >&2; tail -20 "$OUT/up.log" >&2; exit 1; }
# Ready means every segment has a live replica; for exact shares wait for
# all four (one that registers late would miss the first tasks).
for _ in $(seq 100); do
  "$ZINFER" stats --plan "$OUT/plan.json" --json > "$RUN/stats.json" 2> /dev/null \
    && python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))
sys.exit(0 if all(r["live"] for g in s["segments"] for r in g["replicas"]) else 1)' "$RUN/stats.json" \
    && break
  sleep 0.1
done
cat "$RUN/up.out"
echo

echo "-- streaming the 10,000 test images through the pipeline (64 a request, 8 in flight)"
"$ZINFER" infer --plan "$OUT/plan.json" --idx "$IMAGES" --labels "$LABELS" \
  --batch 64 --concurrency 8 --predictions "$OUT/pipeline-predictions.txt" \
  | tee "$RUN/infer.out"
echo

echo "-- the same images in this process (zinfer eval, the single-process engine)"
"$ZINFER" eval "$MODEL" --images "$IMAGES" --labels "$LABELS" \
  --predictions "$OUT/engine-predictions.txt" | tee "$RUN/eval.out"
echo

"$ZINFER" stats --plan "$OUT/plan.json" --json > "$OUT/stats.json"

pipeline_acc=$(sed -n 's/^accuracy: //p' "$RUN/infer.out")
engine_acc=$(sed -n 's/^accuracy: //p' "$RUN/eval.out")
throughput=$(sed -n 's/^throughput: //p' "$RUN/infer.out")
latency=$(sed -n 's/^latency: //p' "$RUN/infer.out")
same=yes
cmp -s "$OUT/pipeline-predictions.txt" "$OUT/engine-predictions.txt" || same=no

echo "== results"
echo "accuracy, pipeline:       $pipeline_acc"
echo "accuracy, single process: $engine_acc"
if [ "$same" = yes ]; then
  echo "                          (equal: all 10,000 predicted classes are the same)"
fi
echo "throughput:               $throughput"
echo "latency per request:      $(echo "$latency" | sed 's/, p90 [^,]*//; s/, max .*//')"
echo
python3 - "$OUT/stats.json" <<'EOF'
import json, sys
stats = json.load(open(sys.argv[1]))
print("each replica's share of its segment's tasks, beside T*R_i/sum(R):")
print(f"  {'segment':>7}  {'replica':<8} {'R':>4}  {'tasks':>6}  {'T*R_i/sum(R)':>12}  {'share':>6}  {'R_i/sum(R)':>10}")
for seg in stats["segments"]:
    reps = seg["replicas"]
    total = sum(r["tasks"] for r in reps)
    cap = sum(r["capacity"] for r in reps)
    for r in sorted(reps, key=lambda r: r["name"]):
        want = total * r["capacity"] / cap
        print(f"  {seg['index']:>7}  {r['name']:<8} {r['capacity']:>4g}  {r['tasks']:>6}  {want:>12.2f}"
              f"  {100 * r['tasks'] / max(total, 1):>5.1f}%  {100 * r['capacity'] / cap:>9.1f}%")
EOF
echo

if [ -z "$pipeline_acc" ] || [ "$pipeline_acc" != "$engine_acc" ] || [ "$same" != yes ]; then
  echo "demo: FAILED: the pipeline's answers differ from the single-process engine's" >&2
  exit 1
fi
echo "demo: OK (stopping the pipeline)"
