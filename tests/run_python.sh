#!/usr/bin/env bash
# ctest-timeout: 120
#
# The Python client (examples/clients/python) and the custom Python stage
# (examples/custom-stage) against the real programs:
#
#  1. Stage level, no broker: a fake broker (Python) binds to_preprocess and
#     preprocessed, and drives the built-in zinfer-preprocess and stage.py
#     with the same TASKs, encoded by zinfer_client.encode_tensors (so the C
#     decoder checks the client's encoding): the outputs are bit-identical,
#     every header field is kept, a wrong dtype is answered ERROR 400 with the
#     same reason, and each exits 0 within 2 s of SIGTERM.
#  2. `zinfer up` of a Fashion-MNIST plan (ipc endpoints; clients send uint8
#     [N,28,28,1]; preprocess cast, scale, hwc_to_chw): infer.py's argmax on
#     64 test images equals `zinfer eval --predictions`, prediction for
#     prediction; the library (sync and async) gives the same; a wrong dtype
#     raises ZinferError 400 and the pipeline still answers afterwards.
#  3. The same plan with the built-in preprocess replaced by the custom
#     Python stage: the same predictions, logits bit-identical to step 2's,
#     the wrong dtype rejected by stage.py (400), and stage.py really ran.
#
# Skipped (exit 77 with "SKIPPED: reason"; ctest shows it as skipped) when
# /usr/bin/python3 cannot import zmq, msgpack and numpy (tools/install-deps
# installs python3-zmq, python3-msgpack, python3-numpy).
#
#   bash tests/run_python.sh <build dir>        (from the repository root)
set -uo pipefail
build=$(cd "${1:?usage: run_python.sh <build dir>}" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3
model=$here/examples/fashion-mnist/model.onnx
data=/usr/share/datasets/fashion-mnist

if [ ! -x "$py" ]; then
  echo "SKIPPED: $py not found (tools/install-deps installs Debian's python3)"
  exit 77
fi
if ! why=$("$py" -c 'import zmq, msgpack, numpy' 2>&1); then
  echo "SKIPPED: $py cannot import zmq, msgpack and numpy: ${why##*$'\n'}"
  echo "         (tools/install-deps installs python3-zmq python3-msgpack python3-numpy)"
  exit 77
fi
for f in "$build/zinfer" "$build/zinfer-preprocess" "$data/t10k-images-idx3-ubyte.gz"; do
  if [ ! -e "$f" ]; then
    echo "run_python: $f missing" >&2
    exit 1
  fi
done

# ipc paths must stay under 107 bytes: a short directory under /tmp.
tmp=$(mktemp -d /tmp/zi-py.XXXXXX)
up_pid=
failures=0

fail () {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# Stop the running `zinfer up` (its own process group: setsid), wait for
# it, and check it stopped every child; on a timeout kill the group.
stop_up () {
  [ -n "$up_pid" ] || return 0
  local pid=$up_pid
  up_pid=
  kill -TERM -- "-$pid" 2>/dev/null
  local _
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    fail "zinfer up (pid $pid) did not stop within 10 s of SIGTERM"
    kill -KILL -- "-$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    fail "zinfer up exited with status $rc"
  fi
}

# Processes still running from this test: everything started here has the
# temp directory in its command line (--plan $tmp/...).
leftovers () {
  pgrep -f -- "$tmp/" || true
}

# A clean run of `zinfer up`: no child restarted or killed, every child
# exited with status 0, no sanitizer report.
#   check_up_log FILE
check_up_log () {
  local bad
  local re='UP-RESTART|UP-KILLED|UP-EXITED: .* (exited with status [1-9]|signal|ended with)'
  bad=$(grep -E "$re|Sanitizer|runtime error" "$1")
  if [ -n "$bad" ]; then
    fail "$(basename "$1"): a process did not run cleanly:"
    echo "$bad" | head -10 >&2
  fi
}

cleanup () {
  local rc=$?
  stop_up
  local left
  left=$(leftovers)
  if [ -n "$left" ]; then
    echo "FAIL: processes left behind:" >&2
    ps -o pid,ppid,args -p "$(echo "$left" | paste -sd,)" >&2
    for p in $left; do
      kill -KILL "$p" 2>/dev/null
    done
    rc=1
  fi
  if [ "$rc" -ne 0 ]; then
    for f in "$tmp"/*.err; do
      [ -s "$f" ] || continue
      echo "---- $(basename "$f") (last 40 lines)" >&2
      tail -n 40 "$f" >&2
    done
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# ---------------------------------------------------------------------------
# The Python side of the test.
cat > "$tmp/check.py" <<'EOF'
#!/usr/bin/python3
"""Helpers for run_python.sh: check.py COMMAND ARGS (see each function)."""
import json
import os
import signal
import subprocess
import sys
import time

import msgpack
import numpy as np
import zmq

HERE = os.environ["ZI_HERE"]
sys.path.insert(0, os.path.join(HERE, "examples", "clients", "python"))
from zinfer_client import Client, ZinferError, encode_tensors  # noqa: E402
from infer import read_idx  # noqa: E402

STAGE = os.path.join(HERE, "examples", "custom-stage", "stage.py")


def die(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def derive(base_path, out_dir, custom):
    """A copy of the plan with ipc endpoints in out_dir; with custom, the
    built-in preprocess replaced by stage.py (model inputs kept)."""
    with open(base_path) as f:
        plan = json.load(f)
    os.makedirs(out_dir, exist_ok=True)
    base_dir = os.path.dirname(os.path.abspath(base_path))
    plan["model"]["path"] = os.path.normpath(os.path.join(base_dir, plan["model"]["path"]))
    for name, ep in plan["broker"]["endpoints"].items():
        ep["bind"] = ep["connect"] = f"ipc://{out_dir}/{name}"
    if custom:
        stages = [s for s in plan["stages"] if s["kind"] != "preprocess"]
        if len(stages) != len(plan["stages"]) - 1:
            die("the plan does not have exactly one built-in preprocess stage")
        stages.insert(0, {"kind": "custom", "replaces": "preprocess",
                          "command": ["/usr/bin/python3", STAGE],
                          "replicas": [{"name": "pypre0", "host": "local"}]})
        plan["stages"] = stages
    path = os.path.join(out_dir, "plan.json")
    with open(path, "w") as f:
        json.dump(plan, f, indent=1)
    return path, plan


def cmd_derive(base, out_dir, custom):
    print(derive(base, out_dir, custom == "custom")[0])


def cmd_stages(build, base, tmp):
    """Step 1: the built-in preprocess and stage.py, driven by a fake broker."""
    ctx = zmq.Context()
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, size=(5, 28, 28, 1), dtype=np.uint8)
    x[0, 0, 0, 0], x[0, 0, 1, 0] = 0, 255
    good_t, good_f = encode_tensors({"input": x})
    bad_t, bad_f = encode_tensors({"input": x.astype(np.float32)})
    shape_t, shape_f = encode_tensors({"input": x[:, :27]})
    base_head = {"v": 1, "cmd": "TASK", "mb": 0, "nmb": 1, "seg": 0, "prio": 2,
                 "deadline": 1234, "attempt": 1}
    tasks = [dict(base_head, reqs=[[77, 0, 5]], t=good_t, x_unknown="kept"),
             dict(base_head, reqs=[[78, 0, 5]], t=bad_t),
             dict(base_head, reqs=[[79, 0, 5]], t=shape_t)]
    frames = [good_f, bad_f, shape_f]
    answers = {}
    for custom in (False, True):
        path, plan = derive(base, os.path.join(tmp, "st-c" if custom else "st-b"), custom)
        eps = plan["broker"]["endpoints"]
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDTIMEO, 15000)
        push.bind(eps["to_preprocess"]["bind"])
        pull = ctx.socket(zmq.PULL)
        pull.bind(eps["preprocessed"]["bind"])
        argv = (["/usr/bin/python3", STAGE, "--plan", path, "--name", "pypre0"] if custom
                else [os.path.join(build, "zinfer-preprocess"), "--plan", path, "--name",
                      "pre0"])
        who = "stage.py" if custom else "zinfer-preprocess"
        with open(os.path.join(tmp, f"stage-{'c' if custom else 'b'}.err"), "w") as err:
            proc = subprocess.Popen(argv, stderr=err, stdin=subprocess.DEVNULL)
        try:
            for head, fr in zip(tasks, frames):
                push.send_multipart([msgpack.packb(head)] + fr, copy=False)
            got = []
            for _ in tasks:
                while True:
                    if not pull.poll(15000):
                        die(f"{who}: no answer within 15 s")
                    f = pull.recv_multipart()
                    head = msgpack.unpackb(f[0])
                    # a stage's own liveness beats (HEARTBEAT {name}) are not answers
                    if head.get("cmd") not in ("HEARTBEAT", "DISCONNECT"):
                        break
                got.append((head, f[1:]))
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(2.0)
            except subprocess.TimeoutExpired:
                die(f"{who}: still running 2 s after SIGTERM")
            if rc != 0:
                die(f"{who}: exit status {rc} after SIGTERM")
            with open(os.path.join(tmp, f"stage-{'c' if custom else 'b'}.err")) as f:
                if "Sanitizer" in f.read():
                    die(f"{who}: sanitizer report in its log")
            print(f"  {who}: 3 answers; exit 0 {time.monotonic() - t0:.2f} s after SIGTERM")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            push.close(0)
            pull.close(0)
        answers[custom] = got
    (bh, bf), (ch, cf) = answers[False][0], answers[True][0]
    want = np.ascontiguousarray((x.astype(np.float32) * np.float32(0.00392156862745098))
                                .transpose(0, 3, 1, 2))
    for who, head, fr in (("zinfer-preprocess", bh, bf), ("stage.py", ch, cf)):
        if head.get("cmd") != "TASK" or head.get("reqs") != [[77, 0, 5]]:
            die(f"{who}: answer to the good TASK: {head}")
        for k in ("mb", "nmb", "seg", "prio", "deadline", "attempt"):
            if head.get(k) != tasks[0][k]:
                die(f"{who}: header field {k} = {head.get(k)!r}, sent {tasks[0][k]!r}")
        if head.get("t") != [{"name": "input", "dtype": "float32", "shape": [5, 1, 28, 28]}]:
            die(f"{who}: tensors {head.get('t')}")
        if bytes(fr[0]) != want.tobytes():
            die(f"{who}: the transformed tensor differs from float32(x)*float32(1/255) NCHW")
    if ch.get("x_unknown") != "kept":
        die("stage.py dropped an unknown header field (it must keep every field)")
    for i, rid in ((1, 78), (2, 79)):
        (bh, _), (ch, _) = answers[False][i], answers[True][i]
        for who, head in (("zinfer-preprocess", bh), ("stage.py", ch)):
            if head.get("cmd") != "ERROR" or head.get("id") != rid or head.get("code") != 400:
                die(f"{who}: answer to bad TASK {rid}: {head}")
        if bh.get("reason") != ch.get("reason"):
            die(f"reasons differ: built-in {bh.get('reason')!r}, stage.py {ch.get('reason')!r}")
        print(f"  request {rid}: both ERROR 400: {ch['reason']}")
    print("  stage.py output is bit-identical to zinfer-preprocess's")


def cmd_wait(endpoint, up_pid, timeout_s):
    """Poll HEALTH until ready; fail early if zinfer up died."""
    end = time.monotonic() + float(timeout_s)
    with Client(endpoint) as c:
        while time.monotonic() < end:
            try:
                os.kill(int(up_pid), 0)
            except ProcessLookupError:
                die("zinfer up exited before the pipeline was ready")
            if c.wait_ready(min(1.0, max(0.05, end - time.monotonic()))):
                print(f"  ready after {float(timeout_s) - (end - time.monotonic()):.2f} s")
                return
    die(f"{endpoint}: not ready within {timeout_s} s")


def cmd_client(endpoint, images_path, eval_path, logits_out, compare_with, reason_has):
    """Step 2/3: the library against a running pipeline."""
    images = read_idx(images_path)[:64, :, :, None]
    expected = np.loadtxt(eval_path, dtype=np.int64)
    if expected.shape != (64,):
        die(f"{eval_path}: {expected.shape} predictions, expected 64")
    with Client(endpoint) as c:
        live, ready = c.health()
        if not (live and ready):
            die(f"health: live={live} ready={ready}")
        # Synchronous, 16 images a request (the middle one non-contiguous).
        logits = []
        for first in range(0, 64, 16):
            x = images[first:first + 16]
            if first == 16:
                x = np.asfortranarray(x)
            out = c.infer({"input": x}, timeout_ms=10000)
            if list(out) != ["logits"] or out["logits"].shape != (16, 10):
                die(f"reply: { {k: v.shape for k, v in out.items()} }")
            logits.append(out["logits"])
        logits = np.concatenate(logits)
        pred = logits.argmax(axis=1)
        if not np.array_equal(pred, expected):
            bad = np.flatnonzero(pred != expected)
            die(f"sync predictions differ from zinfer eval at images {bad.tolist()}")
        # Asynchronous: 8 requests in flight, answers matched by id.
        ids = {c.send({"input": images[i:i + 8]}, prio=0): i for i in range(0, 64, 8)}
        apred = np.full(64, -1)
        while ids:
            got = c.recv(timeout_ms=10000)
            if got is None:
                die(f"async: {len(ids)} answers missing after 10 s")
            rid, res = got
            if isinstance(res, ZinferError):
                die(f"async request {rid}: {res}")
            first = ids.pop(rid)
            apred[first:first + 8] = res["logits"].argmax(axis=1)
        if not np.array_equal(apred, expected):
            die("async predictions differ from zinfer eval")
        # A wrong dtype: BAD_REQUEST naming the problem, not retryable.
        try:
            c.infer({"input": images[:2].astype(np.float32)}, timeout_ms=10000)
            die("a float32 input was accepted (the plan says uint8)")
        except ZinferError as e:
            if e.code != 400 or e.name != "BAD_REQUEST" or e.retryable:
                die(f"wrong dtype: {e.code} {e.name} retryable={e.retryable}: {e.reason}")
            if reason_has not in e.reason:
                die(f"wrong dtype: reason {e.reason!r} does not mention {reason_has!r}")
            print(f"  wrong dtype: ZinferError {e.code} {e.name}: {e.reason}")
        # Every dtype the client can send gets through the broker's C
        # decoder (frame sizes and names right) to the stage, which names
        # it: big-endian and non-contiguous arrays included.
        x = images[:2]
        for dt, name in (("<f2", "float16"), ("<f8", "float64"), ("i1", "int8"),
                         ("<i2", "int16"), (">i4", "int32"), ("<i8", "int64"),
                         (">u2", "uint16"), ("<u4", "uint32"), ("<u8", "uint64"),
                         ("?", "bool"), (">f4", "float32")):
            y = x.astype(dt)[:, ::-1]
            try:
                c.infer({"input": y}, timeout_ms=10000)
                die(f"a {name} input was accepted")
            except ZinferError as e:
                if e.code != 400 or f"dtype {name}, expected uint8" not in e.reason:
                    die(f"{dt} input: {e.code} {e.name}: {e.reason}")
        print("  11 other dtypes: each decoded and named by the stage (400)")
        # ... and the pipeline still answers correctly.
        out = c.infer({"input": images[:16]}, timeout_ms=10000)
        if out["logits"].tobytes() != logits[:16].tobytes():
            die("after the bad request the same request got another answer")
        stats = c.stats()
        if not isinstance(stats, dict) or not stats:
            die(f"stats: {stats!r}")
    np.save(logits_out, logits)
    if compare_with != "-":
        ref = np.load(compare_with)
        if ref.tobytes() != logits.tobytes():
            die(f"logits differ from {compare_with} (max abs diff "
                f"{np.abs(ref - logits).max()})")
        print("  logits bit-identical to the built-in preprocess pipeline's")
    print("  library: 64 sync + 64 async predictions equal zinfer eval's")


if __name__ == "__main__":
    globals()["cmd_" + sys.argv[1]](*sys.argv[2:])
EOF
export ZI_HERE=$here
# Keep the source tree clean of __pycache__.
export PYTHONDONTWRITEBYTECODE=1
check () {
  "$py" "$tmp/check.py" "$@"
}

gunzip -c "$data/t10k-images-idx3-ubyte.gz" > "$tmp/images.idx" || exit 1
gunzip -c "$data/t10k-labels-idx1-ubyte.gz" > "$tmp/labels.idx" || exit 1
"$build/zinfer" eval "$model" --images "$tmp/images.idx" --labels "$tmp/labels.idx" \
  --limit 64 --predictions "$tmp/eval.txt" > "$tmp/eval.out" 2> "$tmp/eval.err" \
  || { cat "$tmp/eval.err" >&2; exit 1; }
echo "zinfer eval: $(grep accuracy "$tmp/eval.out")"

mkdir -p "$tmp/ipc"
"$build/zinfer" plan "$model" -o "$tmp/plan.json" --ipc "$tmp/ipc" \
  --input-dtype uint8 --input-shape -1,28,28,1 \
  --pre cast=float32 --pre scale=0.00392156862745098 --pre hwc_to_chw \
  > "$tmp/plan.out" 2> "$tmp/plan.err" || { cat "$tmp/plan.err" >&2; exit 1; }

echo "1. stage level: built-in zinfer-preprocess vs examples/custom-stage/stage.py"
check stages "$build" "$tmp/plan.json" "$tmp" || fail "stage-level check"

# Run one plan with `zinfer up`, check it with infer.py and the library.
#   run_plan NAME PLAN LOGITS_OUT COMPARE_WITH REASON_SUBSTRING
run_plan () {
  local name=$1 plan=$2
  local front
  front=$("$py" -c 'import json, sys
print(json.load(open(sys.argv[1]))["broker"]["endpoints"]["front"]["connect"])' "$plan")
  setsid "$build/zinfer" up "$plan" > "$tmp/up-$name.out" 2> "$tmp/up-$name.err" &
  up_pid=$!
  check wait "$front" "$up_pid" 60 || { fail "$name: pipeline not ready"; stop_up; return; }
  "$py" "$here/examples/clients/python/infer.py" --endpoint "$front" \
    --idx "$tmp/images.idx" --labels "$tmp/labels.idx" --limit 64 --batch 16 \
    --concurrency 4 --predictions "$tmp/py-$name.txt" > "$tmp/infer-$name.out" \
    2> "$tmp/infer-$name.err" || fail "$name: infer.py failed: $(cat "$tmp/infer-$name.err")"
  echo "  infer.py: $(grep accuracy "$tmp/infer-$name.out")"
  if cmp -s "$tmp/py-$name.txt" "$tmp/eval.txt"; then
    echo "  infer.py predictions equal zinfer eval's (64 images)"
  else
    fail "$name: infer.py predictions differ from zinfer eval's:"
    diff "$tmp/py-$name.txt" "$tmp/eval.txt" | head -20 >&2
  fi
  check client "$front" "$tmp/images.idx" "$tmp/eval.txt" "$3" "$4" "$5" \
    || fail "$name: client checks"
}

echo "2. zinfer up with the built-in preprocess"
run_plan builtin "$tmp/plan.json" "$tmp/logits-builtin.npy" - "dtype float32, expected uint8"
stop_up
check_up_log "$tmp/up-builtin.err"
[ -z "$(leftovers)" ] || fail "processes left after stopping the built-in pipeline"

echo "3. zinfer up with the custom Python stage replacing preprocess"
custom_plan=$(check derive "$tmp/plan.json" "$tmp/ipc2" custom) || exit 1
run_plan custom "$custom_plan" "$tmp/logits-custom.npy" "$tmp/logits-builtin.npy" \
  "dtype float32, expected uint8"
if pgrep -f -- "custom-stage/stage.py --plan $tmp/ipc2/plan.json --name pypre0" > /dev/null; then
  echo "  stage.py is running as pypre0"
else
  fail "stage.py (pypre0) is not running under zinfer up"
fi
if pgrep -f -- "zinfer-preprocess --plan $tmp/ipc2/" > /dev/null; then
  fail "the built-in zinfer-preprocess runs although the plan replaced it"
fi
grep -q "CPRE-REJECTED" "$tmp/up-custom.err" \
  || fail "the wrong dtype was not rejected by stage.py (no CPRE-REJECTED in its log)"
stop_up
check_up_log "$tmp/up-custom.err"
[ -z "$(leftovers)" ] || fail "processes left after stopping the custom pipeline"

if [ "$failures" -ne 0 ]; then
  echo "run_python: $failures failure(s)" >&2
  exit 1
fi
echo "run_python: OK"
