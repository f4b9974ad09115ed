#!/usr/bin/python3
"""A user-written preprocess stage for zinfer, in Python.

It takes the place of the built-in `zinfer-preprocess` when the plan's stages
list has, instead of {"kind": "preprocess", ...}:

    {"kind": "custom", "replaces": "preprocess",
     "command": ["/usr/bin/python3", "stage.py"],
     "replicas": [{"name": "pypre0", "host": "local"}]}

The launcher (`zinfer up`) runs the command from the plan file's directory and
appends `--plan PATH --name REPLICA`. See README.md for the contract.

What it does, for every model input that is an image batch, float32
[N, C, H, W] in the plan's `model.inputs`:

    clients send   uint8   [N, H, W, C]     (e.g. Fashion-MNIST: [N, 28, 28, 1])
    it produces    float32 [N, C, H, W] = float32(pixel) * float32(1/255)

which is exactly what the built-in ops cast=float32, scale=1/255, hwc_to_chw
compute, bit for bit. Other model inputs are passed through, checked against
`model.inputs`. (A custom stage has no `inputs` declarations in the plan, so
it decides what clients send; here that is derived from `model.inputs`.)

Messages (schemas/PROTOCOL.md section 7.2):

    broker `to_preprocess` PUSH --TASK--> [PULL  stage.py  PUSH]
        --TASK/ERROR--> broker `preprocessed` PULL

    in : {"v":1,"cmd":"TASK","reqs":[[rid,0,n]],"mb":0,"nmb":1,"seg":0,"prio":..,"deadline":..,
          "t":[{"name":"input","dtype":"uint8","shape":[n,28,28,1]}]}   <u8 frame>
    out: the same header (every field kept) with "t" replaced   <f32 frame>
    bad: {"v":1,"cmd":"ERROR","id":rid,"code":400,"reason":"input 'input': ..."} per rid

A message that is not a TASK or does not decode cannot be answered (no rid to
name): it is dropped, counted and logged; the broker's stage timeout re-injects
or fails that request.

Needs Debian's python3-zmq, python3-msgpack and python3-numpy.
"""

import argparse
import json
import os
import signal
import sys
import time

import msgpack
import numpy as np
import zmq

PROGRAM = "zinfer-custom-pre"
VERSION = "0.1.0"
POLL_MS = 100           # the longest the loop blocks, so a signal is seen in time
GRACE_S = 0.5           # after a signal, how long a send may still wait, in all
LINGER_MS = 500         # output socket linger at close
HWM = 1000              # send/receive high-water marks (messages)
MAX_HEADER = 65536
MAX_REASON = 1024
SCALE = np.float32(0.00392156862745098)     # float32(1/255), as the built-in scale op

CODE_BAD_REQUEST = 400
CODE_BUSY = 429

# Protocol dtype names (PROTOCOL.md section 6) and the aliases receivers accept.
DTYPES = {
    "float32": np.float32, "float64": np.float64, "float16": np.float16,
    "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
    "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
    "bool": np.bool_,
}
ALIASES = {
    "f4": "float32", "float": "float32", "f8": "float64", "double": "float64",
    "f2": "float16", "i1": "int8", "b": "int8", "u1": "uint8", "B": "uint8",
    "i2": "int16", "u2": "uint16", "i4": "int32", "u4": "uint32",
    "i8": "int64", "u8": "uint64", "b1": "bool", "?": "bool",
}

LEVELS = {"debug": 0, "info": 1, "warn": 2, "error": 3}
_level = LEVELS["info"]
_ident = PROGRAM
_stop_at = None         # time.monotonic() of the first SIGINT/SIGTERM


def on_signal(signum, _frame):
    global _stop_at
    if _stop_at is None:
        _stop_at = time.monotonic()
        log("info", "CPRE-SIGNAL", f"{signal.Signals(signum).name}: stopping")


def log(level, msgid, text):
    """One line on stderr in zinfer's log format, with a stable message id."""
    if LEVELS[level] < _level:
        return
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03dZ" % (now % 1 * 1000)
    sys.stderr.write(f"{stamp} {level[0].upper()} {_ident} {os.getpid()} {msgid}: {text}\n")
    sys.stderr.flush()


class BadInput(Exception):
    """The request's tensors are not what this stage accepts (BAD_REQUEST)."""


# ---------------------------------------------------------------------------
# The plan


def usage_error(text):
    sys.stderr.write(f"{PROGRAM}: {text}\n(see {PROGRAM} --help)\n")
    sys.exit(2)


def load_plan(path, name):
    """Load the plan and find this replica: it must belong to a custom stage
    that replaces preprocess. Exits 2 with a clear message otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            plan = json.load(f)
    except OSError as e:
        usage_error(f"cannot read plan {path}: {e.strerror}")
    except ValueError as e:
        usage_error(f"{path}: not JSON: {e}")
    if not isinstance(plan, dict) or plan.get("zinfer_plan") != 1:
        usage_error(f"{path}: not a zinfer plan of format version 1")
    try:
        for i, stage in enumerate(plan["stages"]):
            for replica in stage["replicas"]:
                if replica["name"] != name:
                    continue
                if stage.get("kind") != "custom" or stage.get("replaces") != "preprocess":
                    usage_error(f"{path}: replica \"{name}\" belongs to stages[{i}] (kind "
                                f"{stage.get('kind')!r}), not to a custom stage replacing "
                                "preprocess")
                return plan, stage, replica
        for seg in plan["segments"]:
            for replica in seg["replicas"]:
                if replica["name"] == name:
                    usage_error(f"{path}: replica \"{name}\" is an exec replica of segment "
                                f"{seg['index']}, not a stage")
    except (KeyError, TypeError) as e:
        usage_error(f"{path}: malformed plan ({e!r}); check it with zinfer plan / zi_plan_load")
    usage_error(f"{path}: no replica named \"{name}\" in the plan")
    return None     # not reached


def shape_str(shape):
    return "[" + ",".join("?" if d < 0 else str(d) for d in shape) + "]"


class Transform:
    """What clients send, and how it becomes what the model takes.

    Built from the plan's model.inputs: an image input float32 [N,C,H,W]
    is expected as uint8 [N,H,W,C]; anything else is passed through as
    declared."""

    def __init__(self, model_inputs):
        self.inputs = []        # (name, model dtype, model shape, client dtype, client shape)
        for t in model_inputs:
            name, dtype, shape = t["name"], t["dtype"], list(t["shape"])
            if dtype == "float32" and len(shape) == 4:
                n, c, h, w = shape
                self.inputs.append((name, dtype, shape, "uint8", [n, h, w, c]))
            else:
                self.inputs.append((name, dtype, shape, dtype, shape))

    def describe(self):
        return ", ".join(f"'{n}' {cd}{shape_str(cs)} -> {md}{shape_str(ms)}"
                         for n, md, ms, cd, cs in self.inputs)

    @staticmethod
    def check(name, x, dtype, shape, what):
        if x.dtype != np.dtype(DTYPES[dtype]):
            raise BadInput(f"input '{name}': dtype {wire_name(x.dtype)}, expected {dtype}"
                           f"{what}")
        if x.ndim != len(shape) or any(d >= 0 and d != s for d, s in zip(shape, x.shape)):
            raise BadInput(f"input '{name}': shape {shape_str(x.shape)}, expected "
                           f"{shape_str(shape)}{what}")

    def apply(self, tensors, rows):
        """tensors: dict name -> array (the client's). Returns the model's
        inputs in model.inputs order, or raises BadInput naming the problem."""
        expected = [i[0] for i in self.inputs]
        for name in tensors:
            if name not in expected:
                raise BadInput(f"input '{name}': not an input of the model (expected "
                               + ", ".join(f"'{e}'" for e in expected) + ")")
        out = []
        for name, mdtype, mshape, cdtype, cshape in self.inputs:
            x = tensors.get(name)
            if x is None:
                raise BadInput(f"input '{name}': missing (expected {cdtype}"
                               f"{shape_str(cshape)})")
            self.check(name, x, cdtype, cshape, "")
            if x.ndim and x.shape[0] != rows:
                raise BadInput(f"input '{name}': {x.shape[0]} rows, the task's reqs "
                               f"hold {rows}")
            if cdtype != mdtype:
                # uint8 NHWC -> float32 NCHW: cast, scale by float32(1/255) in
                # float32 arithmetic (as the built-in scale op), HWC -> CHW.
                y = x.astype(np.float32) * SCALE
                y = np.ascontiguousarray(y.transpose(0, 3, 1, 2))
            else:
                y = x
            # Whatever our transform did, the segment must get what the
            # model declares.
            self.check(name, y, mdtype, mshape, " by the model (after the transform)")
            out.append((name, y))
        return out


# ---------------------------------------------------------------------------
# Messages


def wire_name(dtype):
    for name, t in DTYPES.items():
        if np.dtype(t) == dtype.newbyteorder("="):
            return name
    return str(dtype)


def decode_task(frames):
    """frames -> (header, {name: array}) or raise ValueError naming the
    problem (the message is then dropped: without a readable TASK there is
    no request id to answer)."""
    if frames and len(frames[0]) == 0:
        frames = frames[1:]                 # a stray delimiter (section 4)
    if not frames:
        raise ValueError("empty message")
    data = frames[0].bytes
    if not 0 < len(data) <= MAX_HEADER:
        raise ValueError(f"header of {len(data)} bytes")
    try:
        head = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:              # msgpack raises several types
        raise ValueError(f"header is not one msgpack map ({e})") from None
    if not isinstance(head, dict):
        raise ValueError("header is not a map")
    if head.get("v") != 1:
        raise ValueError(f"protocol version {head.get('v')!r}, this stage speaks 1")
    if head.get("cmd") != "TASK":
        raise ValueError(f"a {head.get('cmd')!r}: preprocess takes TASKs")
    reqs = head.get("reqs")
    if (not isinstance(reqs, list) or not 1 <= len(reqs) <= 1024
            or not all(isinstance(r, list) and len(r) == 3
                       and all(isinstance(v, int) and v >= 0 for v in r) for r in reqs)):
        raise ValueError("TASK without a valid 'reqs'")
    descs = head.get("t", [])
    if not isinstance(descs, list) or len(descs) != len(frames) - 1:
        raise ValueError(f"{len(frames) - 1} tensor frames for "
                         f"{len(descs) if isinstance(descs, list) else '?'} descriptors")
    tensors = {}
    for i, (d, f) in enumerate(zip(descs, frames[1:])):
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise ValueError(f"tensor {i}: bad descriptor")
        name, dtype, shape = d["name"], d.get("dtype"), d.get("shape")
        if isinstance(dtype, str) and dtype[:1] in "<|=":
            dtype = dtype[1:]
        dtype = ALIASES.get(dtype, dtype)
        if dtype not in DTYPES:
            raise ValueError(f"tensor {i} '{name}': dtype {d.get('dtype')!r}")
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                           for s in shape)):
            raise ValueError(f"tensor {i} '{name}': bad shape {shape!r}")
        dt = np.dtype(DTYPES[dtype]).newbyteorder("<")
        need = int(np.prod(shape, dtype=object)) * dt.itemsize
        buf = f.buffer
        if buf.nbytes != need:
            raise ValueError(f"tensor {i} '{name}': frame has {buf.nbytes} bytes, "
                             f"{dtype}{shape} needs {need}")
        if name in tensors:
            raise ValueError(f"tensor {i} '{name}': name used twice")
        tensors[name] = np.frombuffer(buf, dtype=dt).reshape(shape)
    return head, tensors


def encode(head, tensors=()):
    """header dict + [(name, array)] -> frames (arrays sent without copying)."""
    frames, descs = [], []
    for name, x in tensors:
        x = np.ascontiguousarray(x).astype(x.dtype.newbyteorder("<"), copy=False)
        descs.append({"name": name, "dtype": wire_name(x.dtype), "shape": list(x.shape)})
        frames.append(memoryview(x.reshape(-1)).cast("B"))
    if tensors:
        head = dict(head, t=descs)
    return [msgpack.packb(head, use_bin_type=True), *frames]


def error_message(rid, code, reason):
    reason = reason.encode()[:MAX_REASON].decode(errors="ignore")
    return encode({"v": 1, "cmd": "ERROR", "id": rid, "code": code, "reason": reason})


# ---------------------------------------------------------------------------
# Sockets and the loop


class Stage:
    def __init__(self, plan, stage, replica):
        self.plan = plan
        self.name = replica["name"]
        self.transform = Transform(plan["model"]["inputs"])
        self.counts = {"tasks": 0, "rejected": 0, "dropped": 0, "lost": 0}
        self.ctx = zmq.Context()
        eps = plan["broker"]["endpoints"]
        self.pull = self.socket(zmq.PULL, eps["to_preprocess"]["connect"])
        self.push = self.socket(zmq.PUSH, eps["preprocessed"]["connect"])

    def socket(self, kind, endpoint):
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.MAXMSGSIZE, int(self.plan["broker"].get("max_message_bytes",
                                                                     268435456)))
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.RCVHWM, HWM)
        sock.setsockopt(zmq.LINGER, 0)
        security = self.plan.get("security", {})
        if security.get("curve"):
            public, secret = read_zcert_secret(security["client_secret_file"])
            sock.curve_serverkey = security["server_public_key"].encode()
            sock.curve_publickey = public.encode()
            sock.curve_secretkey = secret.encode()
        sock.connect(endpoint)
        return sock

    @property
    def stopping(self):
        return _stop_at is not None

    def send(self, frames):
        """Send under back-pressure: wait for the broker to take it, polling
        so a signal is noticed; after one, wait GRACE_S in all at most.
        Returns False when the message had to be dropped."""
        while True:
            try:
                self.push.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return True
            except zmq.Again:
                pass
            if self.stopping and time.monotonic() - _stop_at > GRACE_S:
                return False
            self.push.poll(POLL_MS, zmq.POLLOUT)

    def handle(self, frames):
        try:
            head, tensors = decode_task(frames)
        except ValueError as e:
            self.counts["dropped"] += 1
            log("warn", "CPRE-DECODE-DROPPED", f"{e}; {self.counts['dropped']} dropped so far")
            return
        rows = sum(r[2] for r in head["reqs"])
        try:
            out = self.transform.apply(tensors, rows)
            code, reason = None, None
        except BadInput as e:
            code, reason = CODE_BAD_REQUEST, str(e)
        except MemoryError:
            code, reason = CODE_BUSY, "out of memory"
        if code is None:
            self.counts["tasks"] += 1
            # Every header field is kept (reqs, mb, nmb, seg, prio, deadline,
            # attempt, and any we do not know); only the tensors change.
            if not self.send(encode(head, out)):
                self.counts["lost"] += 1
            return
        for rid, _first, _count in head["reqs"]:
            log("info", "CPRE-REJECTED", f"request {rid}: BAD_REQUEST: {reason}")
            self.counts["rejected"] += 1
            if not self.send(error_message(rid, code, reason)):
                self.counts["lost"] += 1

    def run(self):
        log("info", "CPRE-START", f"{self.transform.describe()}; pulling from "
            f"{self.plan['broker']['endpoints']['to_preprocess']['connect']}")
        while not self.stopping:
            try:
                if not self.pull.poll(POLL_MS, zmq.POLLIN):
                    continue
                frames = self.pull.recv_multipart(copy=False)
            except zmq.ZMQError as e:
                if e.errno == zmq.EINTR:
                    continue
                raise
            self.handle(frames)
        c = self.counts
        log("info", "CPRE-STOP", f"{c['tasks']} tasks forwarded, {c['rejected']} rejected, "
            f"{c['dropped']} dropped, {c['lost']} lost at shutdown")
        self.pull.close(linger=0)
        self.push.close(linger=LINGER_MS)
        self.ctx.term()


def read_zcert_secret(path):
    """(public, secret) Z85 keys from a CZMQ zcert secret file."""
    keys = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep and key.strip() in ("public-key", "secret-key"):
                keys[key.strip()] = value.strip().strip('"')
    if len(keys) != 2:
        raise SystemExit(f"{PROGRAM}: {path}: not a zcert secret file")
    return keys["public-key"], keys["secret-key"]


def main(argv=None):
    global _level, _ident
    # First of all, so a signal at any time means a clean exit.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="A custom preprocess stage for zinfer, in Python: "
        "uint8 NHWC images -> float32 NCHW / 255, validated against the plan's model inputs.")
    parser.add_argument("--plan", required=True, help="the plan file")
    parser.add_argument("--name", required=True, help="this process's replica name in the plan")
    env_level = os.environ.get("ZI_LOG_LEVEL", "info")
    parser.add_argument("--log-level", choices=sorted(LEVELS),
                        default=env_level if env_level in LEVELS else "info",
                        help="least severe level logged (default: $ZI_LOG_LEVEL or info)")
    parser.add_argument("-V", "--version", action="version", version=f"{PROGRAM} {VERSION}")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 0 if e.code == 0 else 2
    _level = LEVELS[args.log_level]
    _ident = f"{PROGRAM}[{args.name}]"
    plan, stage_cfg, replica = load_plan(args.plan, args.name)
    if _stop_at is not None:
        return 0
    stage = Stage(plan, stage_cfg, replica)
    stage.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
