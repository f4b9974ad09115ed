#!/usr/bin/env bash
# bench-pipeline.sh - the zinfer pipeline (broker + stages + exec workers over
# ZeroMQ ipc, all on this host) with the model cut into K = 1, 2, 3 segments,
# driven by `zinfer bench --plan`: samples/s and per-request p50/p99 latency.
# See tools/bench/README.md.
#
# usage: tools/bench/bench-pipeline.sh [BUILD_DIR] [--models "mlp fashion-mnist resnet18"]
#            [--batches "1 16 64"] [--segments "1 2 3"] [--threads 2] [--seconds 5]
#            [--seconds-resnet18 S] [--concurrency C] [--csv FILE]
#
# For each model, batch B and K: `zinfer plan MODEL --ipc TMPDIR` (for K > 1 with
# --batch B --calibrate N: cuts on node times measured at that batch) with one exec
# replica per segment (--replica k@local:1:2:T, T = max(1, THREADS / K) threads:
# the exec threads add up to THREADS, or to K when K > THREADS, which the table
# flags as oversubscribed), `zinfer up PLAN` (waits for its "ready" line), one
# warm-up round of C requests, then `zinfer bench --plan PLAN --batch B
# --concurrency C --duration S --csv`, then the pipeline is stopped.
# Micro-batches of 16 rows and C (requests in flight) max(2, ceil(4 / ceil(B / 16))):
# at least 4 micro-batches of 16 in flight (4 requests at B = 1 or 16); at B = 64
# one task per request and C = 8 (ResNet-18: tasks of 16 and C = 2). For K > 1
# the planner may split a layer across the boundary (model.splits).
#
# Writes BUILD_DIR/bench/pipeline.csv (or --csv FILE). A failure (not built,
# model missing, pipeline not ready, bench error) gives "unavailable: <reason>"
# in that row; the script still exits 0 (non-zero only for bad arguments).
# Every process it starts is stopped on exit, Ctrl-C or SIGTERM.
set -uo pipefail

# All in one function: bash parses it whole before running, so an edit of this
# file during a run cannot break the run.
main() {

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

BUILD=build
MODELS="mlp fashion-mnist resnet18"
BATCHES="1 16 64"
SEGMENTS="1 2 3"
THREADS=2
SECONDS_PER=5
SECONDS_R18=""
CONC=""
CSV=""
READY_TIMEOUT=60

usage() {
    sed -n '2,24p' "$HERE/$(basename "${BASH_SOURCE[0]}")" | sed 's/^# \{0,1\}//'
    echo "models: mlp fashion-mnist transformer_block resnet_tiny small_mlp resnet18"
}
bad() { echo "bench-pipeline: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --models) MODELS="${2:?--models needs a value}"; shift 2 ;;
        --batches) BATCHES="${2:?--batches needs a value}"; shift 2 ;;
        --segments) SEGMENTS="${2:?--segments needs a value}"; shift 2 ;;
        --threads) THREADS="${2:?--threads needs a value}"; shift 2 ;;
        --seconds) SECONDS_PER="${2:?--seconds needs a value}"; shift 2 ;;
        --seconds-resnet18) SECONDS_R18="${2:?--seconds-resnet18 needs a value}"; shift 2 ;;
        --concurrency) CONC="${2:?--concurrency needs a value}"; shift 2 ;;
        --csv) CSV="${2:?--csv needs a value}"; shift 2 ;;
        --*) echo "bench-pipeline: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) BUILD="$1"; shift ;;
    esac
done

isint() { case "$1" in ''|*[!0-9]*|0) return 1 ;; esac; [ "$1" -ge 1 ]; }
isnum() { awk -v s="$1" 'BEGIN { exit !(s ~ /^[0-9]*\.?[0-9]+$/ && s + 0 > 0) }'; }
isint "$THREADS" || bad "--threads needs an integer >= 1"
[ -z "$CONC" ] || isint "$CONC" || bad "--concurrency needs an integer >= 1"
for b in $BATCHES; do isint "$b" || bad "bad batch '$b'"; done
for k in $SEGMENTS; do isint "$k" || bad "bad segment count '$k'"; done
[ -n "$MODELS" ] && [ -n "$BATCHES" ] && [ -n "$SEGMENTS" ] || bad "--models, --batches and --segments need values"
isnum "$SECONDS_PER" || bad "--seconds needs a number > 0"
SECONDS_R18="${SECONDS_R18:-$SECONDS_PER}"
isnum "$SECONDS_R18" || bad "--seconds-resnet18 needs a number > 0"

cd "$ROOT" || exit 2
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
ZINFER="$BUILD/zinfer"
OUT_DIR="$BUILD/bench"
CSV="${CSV:-$OUT_DIR/pipeline.csv}"
mkdir -p "$OUT_DIR" || exit 2

. "$HERE/bench-lib.sh"   # model_path, session_pids, stop_pipeline
for m in $MODELS; do
    model_path "$m" > /dev/null || { echo "bench-pipeline: unknown model '$m'" >&2; usage >&2; exit 2; }
done

# ---- cleanup: the pipeline runs in its own process group ----------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/zi-bench-pipe.XXXXXX")" || exit 2
UP_PID=""
cleanup() { stop_pipeline; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ZI_WHY=""
if [ ! -x "$ZINFER" ]; then
    ZI_WHY="unavailable: ${ZINFER#"$ROOT"/} not built (cmake --build ${BUILD#"$ROOT"/})"
elif ! { "$ZINFER" bench --help 2>&1 || true; } | grep -- '--plan' > /dev/null; then
    ZI_WHY="unavailable: ${ZINFER#"$ROOT"/} has no 'bench --plan'"
fi

# CPU time (s) of the pipeline's processes (session UP_PID) + this
# shell's waited-for children; the machine's busy time; wall time.
snap() {
    times > "$TMP/times"
    SNAP_CHILD="$(awk 'NR == 2 { n = split($0, t, " "); s = 0
        for (i = 1; i <= n; i++) { split(t[i], p, "m"); s += p[1] * 60 + p[2] } print s }' "$TMP/times")"
    local grp=0
    if [ -n "$UP_PID" ]; then
        grp="$(cat /proc/[0-9]*/stat 2> /dev/null | awk -v g="$UP_PID" -v hz="$(getconf CLK_TCK)" '
            { sub(/^[0-9]+ \(.*\) /, ""); if ($4 == g) s += $12 + $13 } END { printf "%.2f", s / hz }')"
    fi
    SNAP_CHILD="$(awk -v a="$SNAP_CHILD" -v b="$grp" 'BEGIN { print a + b }')"
    SNAP_BUSY="$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat)"
    SNAP_WALL="$(date +%s.%N)"
}
other_load() {
    awk -v c0="$1" -v b0="$2" -v w0="$3" -v c1="$SNAP_CHILD" -v b1="$SNAP_BUSY" -v w1="$SNAP_WALL" \
        -v hz="$(getconf CLK_TCK)" 'BEGIN { w = w1 - w0; if (w <= 0) exit
            o = ((b1 - b0) / hz - (c1 - c0)) / w; if (o < 0) o = 0; printf "%.2f", o }'
}

# drive DIR NAME LIMIT CMD... : run a `zinfer bench` (output DIR/NAME.out,
# .err) for at most LIMIT s; stop it early (exit 125) when a pipeline process
# crashes (zinfer up logs "killed by signal"): a crash is a result, not a wait.
drive() {
    local dir="$1" name="$2" limit="$3"; shift 3
    timeout "$limit" "$@" > "$dir/$name.out" 2> "$dir/$name.err" &
    local pid=$! t0=$SECONDS
    while kill -0 "$pid" 2> /dev/null; do
        if grep -q 'killed by signal' "$dir/up.log" 2> /dev/null && [ $((SECONDS - t0)) -ge 2 ]; then
            kill -TERM "$pid" 2> /dev/null; wait "$pid" 2> /dev/null; return 125
        fi
        sleep 0.2
    done
    wait "$pid"
}
fail_reason() {   # DIR NAME RC LIMIT WHAT -> "unavailable: ..."
    local dir="$1" name="$2" rc="$3" limit="$4" what="$5" msg
    if [ "$rc" -eq 125 ] || grep -q 'killed by signal' "$dir/up.log" 2> /dev/null; then
        msg="$(grep -m1 'killed by signal' "$dir/up.log" | sed 's/.*UP-RESTART: //; s/ after .*//; s/ (pid [0-9]*)//')"
        echo "unavailable: $msg during the $what (see ${OUT_DIR#"$ROOT"/}/pipeline-logs/)"
        return
    fi
    msg="$(grep -v '^\s*$' "$dir/$name.err" | grep -v '^[0-9]* s: \|^\[' | tail -n 1 | cut -c1-120)"
    [ "$rc" -eq 124 ] && msg="timed out after ${limit}s"
    echo "unavailable: zinfer bench ($what) failed (exit $rc): ${msg:-no output}"
}

# run_one MODEL PATH BATCH K -> a CSV row on stdout
run_one() {
    local name="$1" path="$2" batch="$3" k="$4" secs="$SECONDS_PER" why="$ZI_WHY"
    local per=$((THREADS / k)) conc="$CONC" dir="$TMP/$1-b$3-k$4" reps=() s note="" line="" rc
    [ "$per" -ge 1 ] || per=1
    [ "$name" = resnet18 ] && secs="$SECONDS_R18"
    # Tasks of 16 rows up to batch 16; a batch of 64 goes whole (one task:
    # a quarter of the messages) with 8 requests in flight, which keep every
    # segment busy without a bubble. ResNet-18 (38 MB per batch-64 request,
    # seconds per task) keeps tasks of 16 and 2 requests.
    local micro=16
    if [ -z "$conc" ]; then
        if [ "$batch" -ge 64 ] && [ "$name" != resnet18 ]; then
            micro=64; conc=8
        else
            local tasks=$(( (batch + 15) / 16 ))
            conc=$(( (4 + tasks - 1) / tasks )); [ "$conc" -ge 2 ] || conc=2
        fi
    fi
    [ $((per * k)) -gt "$THREADS" ] && note="oversubscribed: $((per * k)) exec threads on $(nproc) cores"
    [ -z "$why" ] && [ ! -f "$path" ] && why="unavailable: $path not found"
    mkdir -p "$dir"
    if [ -z "$why" ]; then
        for s in $(seq 0 $((k - 1))); do reps+=(--replica "$s@local:1:2:$per"); done
        reps+=(--micro-batch "$micro")
        # Cuts balanced on node times measured at this batch (a few runs for
        # ResNet-18, whose batch-64 run takes over a second).
        local cal=20; [ "$name" = resnet18 ] && cal=3
        [ "$k" -gt 1 ] && reps+=(--batch "$batch" --calibrate "$cal")
        if ! "$ZINFER" plan "$path" -o "$dir/plan.json" --ipc "$dir" "${reps[@]}" --explain \
                > "$dir/plan.log" 2>&1; then
            why="unavailable: zinfer plan failed: $(grep -v '^\s*$' "$dir/plan.log" | tail -n 1 | cut -c1-120)"
        fi
    fi
    if [ -z "$why" ]; then
        setsid "$ZINFER" up "$dir/plan.json" --log-level warn > "$dir/up.log" 2>&1 &
        UP_PID=$!
        local t_end=$((SECONDS + READY_TIMEOUT))
        while ! grep -q 'zinfer up: ready' "$dir/up.log" 2> /dev/null; do
            if ! kill -0 "$UP_PID" 2> /dev/null; then
                why="unavailable: zinfer up exited: $(grep -v '^\s*$' "$dir/up.log" | tail -n 1 | cut -c1-120)"; break
            fi
            if [ "$SECONDS" -ge "$t_end" ]; then
                why="unavailable: zinfer up not ready after ${READY_TIMEOUT}s"; break
            fi
            sleep 0.1
        done
    fi
    if [ -z "$why" ]; then
        # Warm-up: one round of requests (loads caches, fills the workers' arenas).
        drive "$dir" warm 120 "$ZINFER" bench --plan "$dir/plan.json" --batch "$batch" \
            --concurrency "$conc" --count "$conc" --deadline 60000 --timeout 60000 --csv
        rc=$?
        [ $rc -ne 0 ] && why="$(fail_reason "$dir" warm $rc 120 "warm-up")"
    fi
    if [ -z "$why" ]; then
        local limit; limit="$(awk -v s="$secs" 'BEGIN { printf "%d", s + 120 }')"
        snap; local c0="$SNAP_CHILD" b0="$SNAP_BUSY" w0="$SNAP_WALL"
        drive "$dir" bench "$limit" "$ZINFER" bench --plan "$dir/plan.json" --batch "$batch" \
            --concurrency "$conc" --duration "$secs" --deadline 60000 --timeout 60000 --csv
        rc=$?
        snap; local other; other="$(other_load "$c0" "$b0" "$w0")"
        line="$(grep '^zinfer-pipeline,' "$dir/bench.out" | tail -n 1)"
        if [ $rc -ne 0 ] || [ "$(echo "$line" | awk -F, '{ print NF }')" != 10 ]; then
            why="$(fail_reason "$dir" bench $rc "$limit" "bench")"
        elif awk -v s="$(echo "$line" | cut -d, -f6)" 'BEGIN { exit !(s + 0 <= 0) }'; then
            why="unavailable: no request answered ($(echo "$line" | cut -d, -f10) failed)"
        else
            local errs; errs="$(echo "$line" | cut -d, -f10)"
            [ "$errs" != 0 ] && note="${note:+$note; }$errs requests failed"
            line="$(echo "$line" | awk -F, -v o="$other" '{ printf "%s,%s,%s,%s", $6, $7, $8, o }')"
        fi
        grep -q 'UP-RESTART' "$dir/up.log" && note="${note:+$note; }a process restarted (see up.log)"
    fi
    stop_pipeline
    if [ -f "$dir/up.log" ] && { [ -n "$why" ] || [[ "$note" == *restarted* ]]; }; then
        mkdir -p "$OUT_DIR/pipeline-logs"
        cp "$dir/up.log" "$OUT_DIR/pipeline-logs/$name-b$batch-k$k.up.log" 2> /dev/null
    fi
    if [ -n "$why" ]; then
        note="${why//,/;}"; line=",,,"
    fi
    echo "zinfer-pipeline,$name,$path,$batch,$k,$((per * k)),$per,$conc,$line,${note//,/;}"
}

echo "== zinfer pipeline benchmark: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "   models: $MODELS; batches: $BATCHES; segments: $SEGMENTS; exec threads in all: $THREADS;" \
     "seconds per run: $SECONDS_PER (resnet18: $SECONDS_R18); concurrency: ${CONC:-auto}; nice: $(nice)"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
{
    echo "runtime,model,model_path,batch,segments,threads,threads_per_replica,concurrency,samples_per_s,p50_ms,p99_ms,other_load_cores,note"
    for m in $MODELS; do
        p="$(model_path "$m")"
        for b in $BATCHES; do
            for k in $SEGMENTS; do
                [ -t 2 ] && printf '   running pipeline %-18s batch %-4s K=%s ...\r' "$m" "$b" "$k" >&2
                run_one "$m" "$p" "$b" "$k"
            done
        done
    done
} > "$CSV.tmp"
[ -t 2 ] && printf '%-70s\r' '' >&2
mv "$CSV.tmp" "$CSV"
echo
awk -F, 'NR == 1 { printf "%-16s %5s  %2s %7s %5s  %10s %10s %10s  %-6s %s\n", "model", "batch", "K", "threads", "conc",
                   "samples/s", "p50 ms", "p99 ms", "other", "note"; next }
    { if (prev != "" && ($2 "|" $4) != prev) print ""; prev = $2 "|" $4
      printf "%-16s %5s  %2s %7s %5s  %10s %10s %10s  %-6s %s\n", $2, $4, $5, $6 "x" $7, $8, $9, $10, $11, $12, $13 }' "$CSV" \
    | sed 's/x\([0-9]*\) / (\1 each)/'
echo
echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "csv: ${CSV#"$ROOT"/}"
exit 0
}
main "$@"
