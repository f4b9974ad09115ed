#!/usr/bin/env bash
# ctest-timeout: 180
#
# Many hosts: the same plan on three "hosts", each a network namespace, one
# `zinfer up PLAN --host hN` per host, requests end to end over tcp.
#
#      zi-h1-SFX 10.77.0.1          zi-h2-SFX 10.77.0.2      zi-h3-SFX 10.77.0.3
#      broker (tcp://*:7000..7007)  exec s0r0 (segment 0)    exec s1r0 (segment 1)
#      pre0, part0, clients                                  agg0 (aggregate)
#           |                            |                        |
#           +------ veth ------ br0 (zi-br-SFX) ------ veth ------+
#
# Checks: `zinfer infer` (and the Python client, when /usr/bin/python3 has
# zmq, msgpack and numpy) run from h1 on 64 Fashion-MNIST test images give
# the predictions of `zinfer eval` in one process; the exec and aggregate
# processes really run inside zi-h2 / zi-h3 (`ip netns pids`) and none of
# them in h1; every process stops on SIGTERM and the namespaces are removed,
# also when a check fails (trap).
#
# Network traffic stays inside the namespaces created here (10.77.0.0/24 on
# their veths and bridge); nothing is routed to any other address.
#
# Skipped (exit 77, "SKIPPED: reason"; ctest shows it as skipped, never
# passed) when not root, when `ip netns add` or veth/bridge creation fails
# (e.g. in an unprivileged container), or when /var/run/netns is unusable.
#
#   bash tests/run_netns.sh <build dir>        (from the repository root)
set -uo pipefail
build=$(cd "${1:?usage: run_netns.sh <build dir>}" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
model=$here/examples/fashion-mnist/model.onnx
data=/usr/share/datasets/fashion-mnist
py=/usr/bin/python3
port=7000
export PYTHONDONTWRITEBYTECODE=1      # keep the source tree clean of __pycache__

skip () {
  echo "SKIPPED: $*"
  exit 77
}

for f in "$build/zinfer" "$build/zinfer-broker" "$build/zinfer-exec" \
         "$data/t10k-images-idx3-ubyte.gz"; do
  if [ ! -e "$f" ]; then
    echo "run_netns: $f missing" >&2
    exit 1
  fi
done
if [ "$(id -u)" -ne 0 ]; then
  skip "not root (creating network namespaces needs CAP_SYS_ADMIN and CAP_NET_ADMIN)"
fi
if ! command -v ip > /dev/null; then
  skip "no 'ip' command (Debian package iproute2)"
fi

# Unique per run, so parallel runs do not clash; interface names live inside
# the namespaces, so they need no suffix.
sfx=$$-$RANDOM
ns_br=zi-br-$sfx
hosts=(h1 h2 h3)
declare -A ns addr up_pid
for i in 1 2 3; do
  ns[h$i]=zi-h$i-$sfx
  addr[h$i]=10.77.0.$i
done
created=()
tmp=$(mktemp -d /tmp/zi-netns.XXXXXX)
failures=0

fail () {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# Stop a host's `zinfer up` (its own process group), wait for it.
stop_up () {
  local h=$1 pid=${up_pid[$1]:-}
  [ -n "$pid" ] || return 0
  up_pid[$h]=
  kill -TERM -- "-$pid" 2>/dev/null
  local _
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    fail "$h: zinfer up (pid $pid) did not stop within 10 s of SIGTERM"
    kill -KILL -- "-$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    fail "$h: zinfer up exited with status $rc"
  fi
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
  for h in "${hosts[@]}"; do
    if [ -n "${up_pid[$h]:-}" ]; then
      kill -TERM -- "-${up_pid[$h]}" 2>/dev/null
    fi
  done
  for h in "${hosts[@]}"; do
    stop_up "$h"
  done
  # Whatever still runs inside our namespaces was started by this test.
  local n left
  for n in "${created[@]}"; do
    left=$(ip netns pids "$n" 2>/dev/null)
    if [ -n "$left" ]; then
      echo "FAIL: processes left in $n:" >&2
      ps -o pid,args -p "$(echo "$left" | paste -sd,)" >&2
      for p in $left; do
        kill -KILL "$p" 2>/dev/null
      done
      rc=1
    fi
  done
  for n in "${created[@]}"; do
    ip netns del "$n" 2>/dev/null || echo "run_netns: could not delete namespace $n" >&2
  done
  if [ "$failures" -ne 0 ] && [ "$rc" -eq 0 ]; then
    rc=1
  fi
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
    for f in "$tmp"/*.err; do
      [ -s "$f" ] || continue
      echo "---- $(basename "$f") (last 30 lines)" >&2
      tail -n 30 "$f" >&2
    done
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# ---------------------------------------------------------------------------
# The namespaces: a bridge in zi-br, one veth from each host to it.
if [ ! -d /var/run/netns ] && ! mkdir -p /var/run/netns 2> "$tmp/mkdir.err"; then
  skip "/var/run/netns cannot be created: $(cat "$tmp/mkdir.err")"
fi
if [ ! -w /var/run/netns ]; then
  skip "/var/run/netns is not writable"
fi
for n in "$ns_br" "${ns[h1]}" "${ns[h2]}" "${ns[h3]}"; do
  if ! ip netns add "$n" 2> "$tmp/netns.err"; then
    skip "ip netns add $n failed: $(cat "$tmp/netns.err")"
  fi
  created+=("$n")
  ip -n "$n" link set lo up || skip "cannot bring up loopback in $n"
done
setup_err () {
  skip "cannot build the test network ($1): $(cat "$tmp/link.err")"
}
ip -n "$ns_br" link add br0 type bridge 2> "$tmp/link.err" || setup_err "bridge"
ip -n "$ns_br" link set br0 up 2> "$tmp/link.err" || setup_err "bridge up"
for i in 1 2 3; do
  h=h$i
  ip -n "${ns[$h]}" link add eth0 type veth peer name "v$h" netns "$ns_br" \
    2> "$tmp/link.err" || setup_err "veth $h"
  ip -n "$ns_br" link set "v$h" master br0 2> "$tmp/link.err" || setup_err "veth $h on br0"
  ip -n "$ns_br" link set "v$h" up 2> "$tmp/link.err" || setup_err "veth $h up"
  ip -n "${ns[$h]}" addr add "${addr[$h]}/24" dev eth0 2> "$tmp/link.err" \
    || setup_err "address of $h"
  ip -n "${ns[$h]}" link set eth0 up 2> "$tmp/link.err" || setup_err "eth0 of $h up"
done
echo "namespaces: ${created[*]}; hosts h1..h3 at 10.77.0.1..3 on a bridge"

# ---------------------------------------------------------------------------
# The reference answers and the plan.
gunzip -c "$data/t10k-images-idx3-ubyte.gz" > "$tmp/images.idx" || exit 1
gunzip -c "$data/t10k-labels-idx1-ubyte.gz" > "$tmp/labels.idx" || exit 1
"$build/zinfer" eval "$model" --images "$tmp/images.idx" --labels "$tmp/labels.idx" \
  --limit 64 --predictions "$tmp/eval.txt" > "$tmp/eval.out" 2> "$tmp/eval.err" \
  || { cat "$tmp/eval.err" >&2; exit 1; }
echo "zinfer eval: $(grep accuracy "$tmp/eval.out")"

"$build/zinfer" plan "$model" -o "$tmp/plan0.json" \
  --host h1=10.77.0.1 --host h2=10.77.0.2 --host h3=10.77.0.3 --broker-host h1 \
  --port "$port" --replica 0@h2:1 --replica 1@h3:1 \
  --input-dtype uint8 --input-shape -1,28,28,1 \
  --pre cast=float32 --pre scale=0.00392156862745098 --pre hwc_to_chw \
  > "$tmp/plan.out" 2> "$tmp/plan.err" || { cat "$tmp/plan.err" >&2; exit 1; }
# The aggregate stage goes to h3, so a stage, too, works across hosts.
# (sed, not python: this test must not depend on Python.)
sed 's/"name": "agg0", "host": "h1"/"name": "agg0", "host": "h3"/' \
  "$tmp/plan0.json" > "$tmp/plan.json"
grep -q '"name": "agg0", "host": "h3"' "$tmp/plan.json" \
  || { echo "run_netns: could not move agg0 to h3 in the plan" >&2; exit 1; }
# Every address in the plan must be one of ours.
if grep -oE 'tcp://[^"]*' "$tmp/plan.json" | grep -vE '^tcp://(\*|10\.77\.0\.1):[0-9]+$'; then
  echo "run_netns: the plan names an address outside 10.77.0.0/24" >&2
  exit 1
fi
front=tcp://10.77.0.1:$port

# ---------------------------------------------------------------------------
# One `zinfer up` per host, each inside its namespace, in its own group.
for h in "${hosts[@]}"; do
  ip netns exec "${ns[$h]}" setsid "$build/zinfer" up "$tmp/plan.json" --host "$h" \
    > "$tmp/up-$h.out" 2> "$tmp/up-$h.err" &
  up_pid[$h]=$!
done

# Wait for the line `zinfer up` prints once the broker answers HEALTH ready
# (h1 sees it first; h2 and h3 print it too, over the network).
wait_ready () {
  local h=$1 end=$((SECONDS + 60))
  while [ "$SECONDS" -lt "$end" ]; do
    grep -q "^zinfer up: ready" "$tmp/up-$h.out" 2>/dev/null && return 0
    kill -0 "${up_pid[$h]}" 2>/dev/null || { fail "$h: zinfer up exited"; return 1; }
    sleep 0.1
  done
  fail "$h: not ready within 60 s"
  return 1
}
ok=1
for h in "${hosts[@]}"; do
  wait_ready "$h" || ok=0
done
[ "$ok" -eq 1 ] || exit 1
echo "zinfer up ready on h1, h2, h3"

# Which processes run where: ip netns pids, as "PROGRAM [REPLICA]".
names_in () {
  local p k prog name args
  for p in $(ip netns pids "${ns[$1]}"); do
    mapfile -d '' -t args < "/proc/$p/cmdline" 2>/dev/null || continue
    [ "${#args[@]}" -gt 0 ] || continue
    prog=${args[0]##*/}
    name=
    for ((k = 1; k < ${#args[@]}; k++)); do
      if [ "${args[k]}" = --name ]; then
        name=${args[k + 1]:-}
      fi
    done
    case $prog in
      zinfer-*) echo "$prog${name:+ $name}" ;;
    esac
  done | sort
}
for h in "${hosts[@]}"; do
  echo "  ${ns[$h]}: $(names_in "$h" | paste -sd, | sed 's/,/, /g')"
done
names_in h1 | grep -qx 'zinfer-broker' || fail "zinfer-broker is not running in ${ns[h1]}"
names_in h2 | grep -qx 'zinfer-exec s0r0' || fail "zinfer-exec s0r0 is not running in ${ns[h2]}"
names_in h3 | grep -qx 'zinfer-exec s1r0' || fail "zinfer-exec s1r0 is not running in ${ns[h3]}"
names_in h3 | grep -qx 'zinfer-aggregate agg0' \
  || fail "zinfer-aggregate agg0 is not running in ${ns[h3]}"
if names_in h1 | grep -q 'zinfer-exec\|zinfer-aggregate'; then
  fail "an exec or aggregate process runs in h1"
fi

# ---------------------------------------------------------------------------
# Requests end to end, from h1.
ip netns exec "${ns[h1]}" "$build/zinfer" infer --endpoint "$front" --idx "$tmp/images.idx" \
  --idx-name input --labels "$tmp/labels.idx" --limit 64 --batch 16 --concurrency 4 \
  --predictions "$tmp/c.txt" > "$tmp/infer-c.out" 2> "$tmp/infer-c.err" \
  || fail "zinfer infer from h1 failed: $(tail -3 "$tmp/infer-c.err")"
if cmp -s "$tmp/c.txt" "$tmp/eval.txt"; then
  echo "zinfer infer from h1: predictions equal zinfer eval's (64 images)"
else
  fail "zinfer infer from h1: predictions differ from zinfer eval's"
fi
if "$py" -c 'import zmq, msgpack, numpy' 2>/dev/null; then
  ip netns exec "${ns[h1]}" "$py" "$here/examples/clients/python/infer.py" \
    --endpoint "$front" --idx "$tmp/images.idx" --labels "$tmp/labels.idx" --limit 64 \
    --batch 8 --concurrency 8 --predictions "$tmp/py.txt" > "$tmp/infer-py.out" \
    2> "$tmp/infer-py.err" || fail "infer.py from h1 failed: $(tail -3 "$tmp/infer-py.err")"
  if cmp -s "$tmp/py.txt" "$tmp/eval.txt"; then
    echo "infer.py from h1: predictions equal zinfer eval's (64 images)"
  else
    fail "infer.py from h1: predictions differ from zinfer eval's"
  fi
else
  echo "note: $py lacks zmq/msgpack/numpy: the Python client part is left out"
fi

# ---------------------------------------------------------------------------
# Stop: workers' hosts first, then the broker's; nothing may be left.
for h in h2 h3 h1; do
  stop_up "$h"
  check_up_log "$tmp/up-$h.err"
done
for h in "${hosts[@]}"; do
  left=$(ip netns pids "${ns[$h]}")
  [ -z "$left" ] || fail "$h: processes left after zinfer up stopped: $left"
done

if [ "$failures" -ne 0 ]; then
  echo "run_netns: $failures failure(s)" >&2
  exit 1
fi
echo "run_netns: OK"
