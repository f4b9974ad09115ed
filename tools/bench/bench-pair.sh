#!/usr/bin/env bash
# bench-pair.sh - the 2-segment pipeline against the single-process engine,
# measured in alternation: R rounds of (engine, pipeline), each S seconds, at
# batch 64 with the same cores busy, and the median of the per-round ratios.
# See tools/bench/README.md.
#
# usage: tools/bench/bench-pair.sh [BUILD_DIR] [--models "mlp fashion-mnist"]
#            [--rounds 3] [--seconds 5] [--threads 2] [--batch 64] [--csv FILE]
#
# This VM's speed moves by up to 40 % between minutes for every runtime (the
# engine's Fashion-MNIST batch 64 ran 47.5k-68k samples/s in one afternoon),
# so a ratio of two figures taken minutes apart says as much about the VM as
# about zinfer. Here each pipeline run has an engine run right before it, and
# the median of R such pairs is the figure.
#
# Per model: `zinfer plan MODEL --ipc TMP --replica 0@local:1:2:T --replica
# 1@local:1:2:T --batch B --calibrate 20 --micro-batch B --client-shm`
# (T = THREADS / 2), `zinfer up`, a warm-up of 8 requests; then per round
# `zinfer bench --model MODEL --batch B --threads THREADS --seconds S` (the
# pipeline stays up, idle: its processes sleep in poll), `zinfer bench --plan
# PLAN --batch B --concurrency 8 --duration S` with a client that sends its
# inputs through the socket (the plan without client_shm: the default), and
# the same with the plan as made (inputs in the client's shared memory,
# broker.client_shm). Rows: pair,model,round,engine,pipeline,ratio and
# pair-median,model,,engine median,pipeline median,median ratio; the same as
# pair-client-shm and pair-client-shm-median. A model whose pipeline does not
# come up gets "unavailable: <reason>".
# Every process it starts is stopped on exit, Ctrl-C or SIGTERM.
set -uo pipefail

main() {

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BUILD=build
MODELS="mlp fashion-mnist"
ROUNDS=3
SECS=5
THREADS=2
BATCH=64
CSV=""

usage() { sed -n '2,24p' "$HERE/$(basename "${BASH_SOURCE[0]}")" | sed 's/^# \{0,1\}//'; }
bad() { echo "bench-pair: $*" >&2; exit 2; }
isint() { case "$1" in ''|*[!0-9]*) return 1 ;; esac; [ "$1" -ge 1 ]; }

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --models) MODELS="${2:?--models needs a value}"; shift 2 ;;
        --rounds) ROUNDS="${2:?--rounds needs a value}"; shift 2 ;;
        --seconds) SECS="${2:?--seconds needs a value}"; shift 2 ;;
        --threads) THREADS="${2:?--threads needs a value}"; shift 2 ;;
        --batch) BATCH="${2:?--batch needs a value}"; shift 2 ;;
        --csv) CSV="${2:?--csv needs a value}"; shift 2 ;;
        --*) echo "bench-pair: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) BUILD="$1"; shift ;;
    esac
done
isint "$ROUNDS" || bad "--rounds needs an integer >= 1"
isint "$SECS" || bad "--seconds needs an integer >= 1"
isint "$THREADS" || bad "--threads needs an integer >= 1"
isint "$BATCH" || bad "--batch needs an integer >= 1"
[ -n "${MODELS// /}" ] || bad "--models is empty"

cd "$ROOT" || exit 2
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
ZINFER="$BUILD/zinfer"
CSV="${CSV:-$BUILD/bench/pair.csv}"
mkdir -p "$(dirname "$CSV")" || exit 2
PER=$((THREADS / 2)); [ "$PER" -ge 1 ] || PER=1

. "$HERE/bench-lib.sh"   # model_path, session_pids, stop_pipeline
for m in $MODELS; do model_path "$m" > /dev/null || bad "unknown model '$m'"; done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/zi-bench-pair.XXXXXX")" || exit 2
UP_PID=""
cleanup() { stop_pipeline; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "== engine vs 2-segment pipeline, alternating: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "   models: $MODELS; batch $BATCH; $ROUNDS rounds of ${SECS} s each; engine $THREADS threads," \
     "pipeline 2 x $PER; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "kind,model,round,engine_samples_per_s,pipeline_samples_per_s,ratio,note" > "$CSV"
for m in $MODELS; do
    p="$(model_path "$m")"
    dir="$TMP/$m"; mkdir -p "$dir"
    why=""
    [ -x "$ZINFER" ] || why="unavailable: ${ZINFER#"$ROOT"/} not built"
    [ -z "$why" ] && [ ! -f "$p" ] && why="unavailable: $p not found"
    if [ -z "$why" ] && ! "$ZINFER" plan "$p" -o "$dir/plan.json" --ipc "$dir" \
            --replica "0@local:1:2:$PER" --replica "1@local:1:2:$PER" --batch "$BATCH" \
            --calibrate 20 --micro-batch "$BATCH" --client-shm > "$dir/plan.log" 2>&1; then
        why="unavailable: zinfer plan failed: $(tail -n 1 "$dir/plan.log" | cut -c1-120)"
    fi
    if [ -z "$why" ]; then
        # The same plan for a client without shared memory (the broker
        # takes both kinds of request).
        sed 's/"client_shm": true/"client_shm": false/' "$dir/plan.json" > "$dir/plan-inline.json"
        setsid "$ZINFER" up "$dir/plan.json" --log-level warn > "$dir/up.log" 2>&1 &
        UP_PID=$!
        t_end=$((SECONDS + 60))
        while ! grep -q 'zinfer up: ready' "$dir/up.log" 2> /dev/null; do
            kill -0 "$UP_PID" 2> /dev/null || { why="unavailable: zinfer up exited: $(tail -n 1 "$dir/up.log" | cut -c1-120)"; break; }
            [ "$SECONDS" -ge "$t_end" ] && { why="unavailable: zinfer up not ready after 60 s"; break; }
            sleep 0.1
        done
    fi
    if [ -z "$why" ] && ! timeout 120 "$ZINFER" bench --plan "$dir/plan.json" --batch "$BATCH" \
            --concurrency 8 --count 8 > "$dir/warm.out" 2>&1; then
        why="unavailable: warm-up failed: $(tail -n 1 "$dir/warm.out" | cut -c1-120)"
    fi
    if [ -n "$why" ]; then
        echo "   $m: $why"
        echo "pair-median,$m,,,,,${why//,/;}" >> "$CSV"
        stop_pipeline
        continue
    fi
    for k in pair pair-client-shm; do : > "$dir/$k.ratios"; : > "$dir/$k.eng"; : > "$dir/$k.pipe"; done
    for r in $(seq 1 "$ROUNDS"); do
        e="$(timeout $((SECS * 4 + 60)) "$ZINFER" bench --model "$p" --batch "$BATCH" \
                --threads "$THREADS" --seconds "$SECS" --csv 2> /dev/null \
             | awk -F, '$1 == "zinfer-engine" { print $5 }' | tail -n 1)"
        for k in pair pair-client-shm; do
            plan="$dir/plan-inline.json"; [ "$k" = pair ] || plan="$dir/plan.json"
            q="$(timeout $((SECS * 4 + 60)) "$ZINFER" bench --plan "$plan" --batch "$BATCH" \
                    --concurrency 8 --duration "$SECS" --csv 2> /dev/null \
                 | awk -F, '$1 == "zinfer-pipeline" { print $6 }' | tail -n 1)"
            ratio="$(awk -v a="$q" -v b="$e" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.3f", a / b }')"
            printf '   %-14s round %d: engine %9.1f  %-19s %9.1f samples/s  ratio %s\n' "$m" "$r" \
                "${e:-0}" "${k/pair/pipeline}" "${q:-0}" "${ratio:-?}"
            echo "$k,$m,$r,$e,$q,$ratio," >> "$CSV"
            [ -n "$ratio" ] && { echo "$ratio" >> "$dir/$k.ratios"; echo "$e" >> "$dir/$k.eng"; echo "$q" >> "$dir/$k.pipe"; }
        done
    done
    stop_pipeline
    for k in pair pair-client-shm; do
        mr="$(median < "$dir/$k.ratios")"; me="$(median < "$dir/$k.eng")"; mq="$(median < "$dir/$k.pipe")"
        if [ -n "$mr" ]; then
            printf '   %-14s median: engine %.1f, %s %.1f samples/s, ratio %.3fx (rounds: %s)\n' "$m" \
                "$me" "${k/pair/pipeline}" "$mq" "$mr" "$(paste -sd' ' "$dir/$k.ratios")"
            echo "$k-median,$m,,$me,$mq,$mr," >> "$CSV"
        else
            echo "   $m: no round measured both ($k)"
            echo "$k-median,$m,,,,,unavailable: no round measured both" >> "$CSV"
        fi
    done
done
echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "csv: ${CSV#"$ROOT"/}"
exit 0
}
main "$@"
