#!/usr/bin/env bash
# bench-engine.sh - the same ONNX model, batch size and thread count on
#   zinfer-engine  build/zinfer bench (single process)
#   onnxruntime    npm onnxruntime-node, CPU EP         (tools/bench/ort_bench.js)
#   pytorch        Debian python3-torch, eager mode     (tools/bench/torch_bench.py)
# and a table of samples/s and p50/p99 latency per batch, each with its ratio
# to zinfer-engine. See tools/bench/README.md.
#
# usage: tools/bench/bench-engine.sh [BUILD_DIR] [--models "mlp fashion-mnist transformer_block"]
#            [--batches "1 16 64"] [--threads 2] [--seconds 5] [--retries 2]
#            [--torch-blas-threads K]
#
# --retries R: a run during which other processes kept more than 0.2 cores
# busy ("other load") is measured again, up to R more times; the least
# disturbed run is kept.
# --torch-blas-threads K: OpenBLAS threads inside the PyTorch run (default: the
# --threads value; left alone, OpenBLAS would use one per core); see README.md.
#
# Writes BUILD_DIR/bench/engine.csv. A runtime that is missing or fails gets
# "unavailable: <reason>" in its row; the script still exits 0 then (it exits
# non-zero only for bad arguments). Not part of `make test`.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

BUILD=build
MODELS="mlp fashion-mnist transformer_block"
BATCHES="1 16 64"
THREADS=2
SECONDS_PER=5
TORCH_BLAS=""
RETRIES=2
DISTURBED=0.2
PYTHON="${BENCH_PYTHON:-/usr/bin/python3}"
NODE="${NODE:-node}"

usage() {
    sed -n '2,21p' "$HERE/$(basename "${BASH_SOURCE[0]}")" | sed 's/^# \{0,1\}//'
    echo "models: mlp fashion-mnist transformer_block resnet_tiny small_mlp resnet18"
    echo "(resnet18: BUILD_DIR/bench/resnet18.onnx, made by tools/bench/make_resnet18.py)"
}

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --models) MODELS="${2:?--models needs a value}"; shift 2 ;;
        --batches) BATCHES="${2:?--batches needs a value}"; shift 2 ;;
        --threads) THREADS="${2:?--threads needs a value}"; shift 2 ;;
        --seconds) SECONDS_PER="${2:?--seconds needs a value}"; shift 2 ;;
        --retries) RETRIES="${2:?--retries needs a value}"; shift 2 ;;
        --torch-blas-threads) TORCH_BLAS="${2:?--torch-blas-threads needs a value}"; shift 2 ;;
        --*) echo "bench-engine: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) BUILD="$1"; shift ;;
    esac
done

case "$THREADS" in ''|*[!0-9]*|0) echo "bench-engine: --threads needs an integer >= 1" >&2; exit 2 ;; esac
TORCH_BLAS="${TORCH_BLAS:-$THREADS}"
case "$RETRIES" in ''|*[!0-9]*) echo "bench-engine: --retries needs an integer >= 0" >&2; exit 2 ;; esac
case "$TORCH_BLAS" in ''|*[!0-9]*|0) echo "bench-engine: --torch-blas-threads needs an integer >= 1" >&2; exit 2 ;; esac
for b in $BATCHES; do
    case "$b" in ''|*[!0-9]*|0) echo "bench-engine: bad batch '$b'" >&2; exit 2 ;; esac
done
if ! awk -v s="$SECONDS_PER" 'BEGIN { exit !(s + 0 > 0) }'; then
    echo "bench-engine: --seconds needs a number > 0" >&2; exit 2
fi

cd "$ROOT" || exit 2
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
ZINFER="$BUILD/zinfer"
OUT_DIR="$BUILD/bench"
CSV="$OUT_DIR/engine.csv"
mkdir -p "$OUT_DIR" || exit 2
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

. "$HERE/bench-lib.sh"   # model_path
for m in $MODELS; do
    model_path "$m" > /dev/null || { echo "bench-engine: unknown model '$m'" >&2; usage >&2; exit 2; }
done

# A run may take SECONDS plus model load and warm-up; never hang the bench.
LIMIT="$(awk -v s="$SECONDS_PER" 'BEGIN { printf "%d", s * 3 + 120 }')"

# ---- availability of each runtime --------------------------------------------
ZI_WHY=""; ORT_WHY=""; TORCH_WHY=""
if [ ! -x "$ZINFER" ]; then
    ZI_WHY="unavailable: ${ZINFER#"$ROOT"/} not built (cmake --build ${BUILD#"$ROOT"/})"
elif ! "$ZINFER" bench --help 2>/dev/null | grep -q -- '--csv'; then
    ZI_WHY="unavailable: ${ZINFER#"$ROOT"/} has no 'bench --csv' command"
fi
if ! command -v "$NODE" > /dev/null 2>&1; then
    ORT_WHY="unavailable: node not found (apt-get install nodejs npm)"
elif [ ! -d "$HERE/node_modules/onnxruntime-node" ]; then
    ORT_WHY="unavailable: npm package onnxruntime-node missing (cd tools/bench && npm ci --ignore-scripts)"
elif ! ( cd "$HERE" && "$NODE" -e 'require("onnxruntime-node")' ) > "$TMP/ort.err" 2>&1; then
    ORT_WHY="unavailable: onnxruntime-node does not load: $(grep -m1 -i error "$TMP/ort.err" | cut -c1-120)"
fi
if [ ! -x "$PYTHON" ]; then
    TORCH_WHY="unavailable: $PYTHON not found"
elif ! "$PYTHON" -c 'import torch' > "$TMP/torch.err" 2>&1; then
    TORCH_WHY="unavailable: python3-torch missing (apt-get install python3-torch)"
fi

# ---- environment --------------------------------------------------------------
CPU="$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')"
ISA="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' | grep -x -E 'avx2|fma|avx512f|avx512bw|avx512vl|avx512dq|avx512_bf16|amx_tile' | tr '\n' ' ')"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "== zinfer engine benchmark: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "   models: $MODELS; batches: $BATCHES; threads: $THREADS; seconds per run: $SECONDS_PER;" \
     "retries: $RETRIES;" \
     "pytorch's OpenBLAS threads: $TORCH_BLAS; nice: $(nice)"
echo "   cpu: ${CPU:-?}; $(nproc) cores; ISA: ${ISA:-?}"
echo "   load average before: $LOAD_BEFORE (other processes on the machine skew the figures)"
echo "   env: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-(unset)} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE-(unset)}" \
     "OMP_NUM_THREADS=${OMP_NUM_THREADS-(unset)} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS-(unset)}" \
     "OMP_WAIT_POLICY=${OMP_WAIT_POLICY-(unset)}"
echo "        (zinfer re-executes itself with OPENBLAS_CORETYPE only when OpenBLAS chose" \
     "a weaker core than the CPU has; the peers get the environment above)"

# ---- one measurement ----------------------------------------------------------
# run_one RUNTIME SHORT_NAME MODEL_PATH BATCH -> appends a row to $TMP/rows:
#   runtime|model|batch|samples/s|p50|p99|other_load|note   (note = "unavailable: ..." or "")
# and the runtime's kernel line (from stderr) to $TMP/kernel.RUNTIME.
run_one() {
    local rt="$1" name="$2" path="$3" batch="$4" why="" line="" other="" out="$TMP/out" err="$TMP/err"
    local try=0 rc msg cur c0 b0 w0
    case "$rt" in
        zinfer-engine) why="$ZI_WHY" ;;
        onnxruntime) why="$ORT_WHY" ;;
        pytorch) why="$TORCH_WHY" ;;
    esac
    [ -z "$why" ] && [ ! -f "$path" ] && why="unavailable: $path not found"
    # Measure; while other processes disturbed the run (other load > DISTURBED),
    # measure again, up to RETRIES more times, and keep the least disturbed.
    while [ -z "$why" ]; do
        : > "$out"; : > "$err"
        snap; c0="$SNAP_CHILD"; b0="$SNAP_BUSY"; w0="$SNAP_WALL"
        case "$rt" in
            zinfer-engine)
                timeout "$LIMIT" "$ZINFER" bench --model "$path" --batch "$batch" \
                    --threads "$THREADS" --seconds "$SECONDS_PER" --csv > "$out" 2> "$err" ;;
            onnxruntime)
                timeout "$LIMIT" "$NODE" "$HERE/ort_bench.js" "$path" "$batch" "$THREADS" \
                    "$SECONDS_PER" > "$out" 2> "$err" ;;
            pytorch)
                TORCH_BENCH_BLAS_THREADS="$TORCH_BLAS" timeout "$LIMIT" "$PYTHON" \
                    "$HERE/torch_bench.py" "$name" "$batch" "$THREADS" "$SECONDS_PER" "$path" \
                    > "$out" 2> "$err" ;;
        esac
        rc=$?
        snap; cur="$(other_load "$c0" "$b0" "$w0")"
        grep '^kernel: ' "$err" | tail -n 1 | sed 's/^kernel: //' > "$TMP/kernel.$rt.new"
        [ -s "$TMP/kernel.$rt.new" ] && mv "$TMP/kernel.$rt.new" "$TMP/kernel.$rt"
        local got
        got="$(grep "^$rt," "$out" | tail -n 1)"
        if [ $rc -ne 0 ] || [ "$(echo "$got" | awk -F, '{ print NF }')" != 7 ]; then
            msg="$(grep -v '^\s*$' "$err" | grep -v '^kernel: \|^info: ' | tail -n 1 | cut -c1-140)"
            [ $rc -eq 124 ] && msg="timed out after ${LIMIT}s"
            why="unavailable: $rt failed (exit $rc): ${msg:-no output}"
            line=""
            break
        fi
        if [ -z "$line" ] || awk -v a="$cur" -v b="$other" 'BEGIN { exit !(a + 0 < b + 0) }'; then
            line="$got"; other="$cur"
        fi
        awk -v o="$other" -v d="$DISTURBED" 'BEGIN { exit !(o + 0 > d + 0) }' || break
        [ "$try" -ge "$RETRIES" ] && break
        try=$((try + 1))
        sleep 2
    done
    if [ -n "$line" ]; then
        echo "$line" | awk -F, -v rt="$rt" -v n="$name" -v b="$batch" -v o="$other" \
            'BEGIN { OFS = "|" } { print rt, n, b, $5, $6, $7, o, "" }' >> "$TMP/rows"
    else
        printf '%s|%s|%s|||||%s\n' "$rt" "$name" "$batch" "${why//|//}" >> "$TMP/rows"
    fi
}

# What else ran on the machine during a measurement, in cores: busy CPU time
# of the whole machine (/proc/stat) minus this script's children's CPU time
# (bash's `times`, which must run in this shell, not a subshell), over wall
# time. Above ~0.2 the figures of that row are disturbed by other processes.
snap() {
    times > "$TMP/times"
    SNAP_CHILD="$(awk 'NR == 2 { n = split($0, t, " "); s = 0
        for (i = 1; i <= n; i++) { split(t[i], p, "m"); s += p[1] * 60 + p[2] } print s }' "$TMP/times")"
    SNAP_BUSY="$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat)"
    SNAP_WALL="$(date +%s.%N)"
}
other_load() {   # uses SNAP_* of before and after
    awk -v c0="$1" -v b0="$2" -v w0="$3" -v c1="$SNAP_CHILD" -v b1="$SNAP_BUSY" -v w1="$SNAP_WALL" \
        -v hz="$(getconf CLK_TCK)" 'BEGIN { w = w1 - w0; if (w <= 0) exit
            o = ((b1 - b0) / hz - (c1 - c0)) / w; if (o < 0) o = 0; printf "%.2f", o }'
}

# zinfer's BLAS core: the CSV line does not carry it; one short non-CSV run does.
zinfer_kernel() {
    local path="$1" core
    core="$(timeout 60 "$ZINFER" bench --model "$path" --batch 1 --threads "$THREADS" \
        --seconds 0.05 --warmup 0 2>&1 | sed -n 's/.*BLAS core \([^ ,;]*\).*/\1/p' | head -n 1)"
    [ -n "$core" ] && if [ "${ZI_NN_NO_AVX512:-0}" = 0 ] && grep -qw avx512f /proc/cpuinfo; then echo "MatMul/Gemm: own AVX-512 GEMM (lib/zi_gemm.c: weights packed once, bias+act fused); Conv: own AVX-512 kernel (lib/zi_conv.c: shifted input rows, bias+act+2x2 pool fused); OpenBLAS $core on the portable paths"; else echo "OpenBLAS $core sgemm for MatMul/Gemm/Conv (no AVX-512 or ZI_NN_NO_AVX512 set)"; fi > "$TMP/kernel.zinfer-engine"
}

: > "$TMP/rows"
for m in $MODELS; do
    path="$(model_path "$m")"
    if [ -z "$ZI_WHY" ] && [ -f "$path" ] && [ ! -s "$TMP/kernel.zinfer-engine" ]; then
        zinfer_kernel "$path"
    fi
    for b in $BATCHES; do
        for rt in zinfer-engine onnxruntime pytorch; do
            [ -t 2 ] && printf '   running %-14s %-18s batch %-4s ...\r' "$rt" "$m" "$b" >&2
            run_one "$rt" "$m" "$path" "$b"
        done
    done
done
[ -t 2 ] && printf '%-70s\r' '' >&2

# ---- table + CSV --------------------------------------------------------------
# Ratios are runtime / zinfer-engine for each figure: samples/s > 1x means
# faster than zinfer; p50/p99 > 1x means slower than zinfer.
{
    echo "runtime,model,model_path,batch,threads,samples_per_s,p50_ms,p99_ms,sps_vs_zinfer,p50_vs_zinfer,p99_vs_zinfer,other_load_cores,note"
    awk -F'|' -v t="$THREADS" -v r18="$(model_path resnet18)" '
        function mp(n) { return n == "fashion-mnist" ? "examples/fashion-mnist/model.onnx" : n == "resnet18" ? r18 : "tests/models/" n "/model.onnx" }
        function r(x, z) { return (x != "" && z != "" && z + 0 > 0) ? sprintf("%.3f", x / z) : "" }
        { rows[NR] = $0 }
        $1 == "zinfer-engine" && $4 != "" { zs[$2 "|" $3] = $4; z50[$2 "|" $3] = $5; z99[$2 "|" $3] = $6 }
        END {
            for (i = 1; i <= NR; i++) {
                split(rows[i], f, "|"); k = f[2] "|" f[3]
                note = f[8]; gsub(/,/, ";", note)
                printf "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n", f[1], f[2], mp(f[2]), f[3], t, f[4], f[5], f[6],
                       r(f[4], zs[k]), r(f[5], z50[k]), r(f[6], z99[k]), f[7], note
            }
        }' "$TMP/rows"
} > "$CSV"

echo
awk -F, '
    function cell(v, ratio) { return v == "" ? "" : (ratio == "" ? v : sprintf("%s (%sx)", v, sprintf("%.2f", ratio))) }
    NR == 1 { printf "%-18s %5s  %-14s %-22s %-20s %-20s %s\n", "model", "batch", "runtime", "samples/s (vs zi)", "p50 ms (vs zi)", "p99 ms (vs zi)", "other load"; next }
    {
        if (prev != "" && ($2 "|" $4) != prev) print ""
        prev = $2 "|" $4
        if ($13 != "") printf "%-18s %5s  %-14s %s\n", $2, $4, $1, $13
        else printf "%-18s %5s  %-14s %-22s %-20s %-20s %s\n", $2, $4, $1,
                    cell(sprintf("%.1f", $6), $9), cell(sprintf("%.3f", $7), $10), cell(sprintf("%.3f", $8), $11), $12
    }' "$CSV"
echo
echo "(vs zi) = that figure divided by zinfer-engine's for the same model and batch:"
echo "samples/s above 1x is faster than zinfer; p50/p99 above 1x is slower."
echo "other load = CPU cores that other processes kept busy during that run (of $(nproc));"
echo "a row with more than $DISTURBED was disturbed even after $RETRIES retries: rerun on an idle machine."
echo
echo "kernels:"
for rt in zinfer-engine onnxruntime pytorch; do
    k="$(cat "$TMP/kernel.$rt" 2>/dev/null)"
    printf '   %-14s %s\n' "$rt" "${k:-?}"
done
echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "csv: ${CSV#"$ROOT"/}"
exit 0
