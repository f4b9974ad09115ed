# bench-lib.sh - sourced by bench-engine.sh, bench-pipeline.sh and bench-pair.sh: where the
# bench models are, and how to stop a pipeline that `zinfer up` runs.
# Needs ROOT and BUILD (absolute) set by the caller; UP_PID is the pid of a
# `zinfer up` started with setsid (or empty).

# model_path NAME -> the model's path relative to ROOT (fails for an unknown name)
model_path() {
    case "$1" in
        fashion-mnist) echo examples/fashion-mnist/model.onnx ;;
        mlp|transformer_block|resnet_tiny|small_mlp) echo "tests/models/$1/model.onnx" ;;
        resnet18) echo "${BUILD#"$ROOT"/}/bench/resnet18.onnx" ;;   # tools/bench/make_resnet18.py
        *) return 1 ;;
    esac
}

# `zinfer up` is started with setsid: it leads a new session, and every process
# it starts (each in its own process group) stays in that session.
session_pids() {
    cat /proc/[0-9]*/stat 2> /dev/null | awk -v s="$1" '{ pid = $1; sub(/^[0-9]+ \(.*\) /, "")
        if ($4 == s) print pid }'
}

# stop_pipeline: SIGTERM to zinfer up (it stops the broker first, then the
# rest), up to 10 s, then SIGKILL to whatever of its session is left.
stop_pipeline() {
    [ -n "$UP_PID" ] || return 0
    local i p
    kill -TERM "$UP_PID" 2> /dev/null
    for i in $(seq 1 100); do
        [ -z "$(session_pids "$UP_PID")" ] && break
        sleep 0.1
    done
    for p in $(session_pids "$UP_PID"); do kill -KILL "$p" 2> /dev/null; done
    wait "$UP_PID" 2> /dev/null
    UP_PID=""
}
