#!/usr/bin/python3
"""zinfer_client - a Python client for a zinfer pipeline (ZIP/1 over ZeroMQ).

Needs only Debian's python3-zmq, python3-msgpack and python3-numpy.

    from zinfer_client import Client, ZinferError

    client = Client("tcp://127.0.0.1:5555")
    client.wait_ready(10)
    x = np.zeros((4, 28, 28, 1), dtype=np.uint8)
    try:
        out = client.infer({"input": x})          # {"logits": array (4, 10)}
    except ZinferError as e:
        print(e.code, e.name, e.reason, e.retryable)

    # Asynchronous: many requests in flight, answers in any order.
    ids = [client.send({"input": x}) for x in batches]
    while pending:
        rid, result = client.recv(timeout_ms=5000)   # result: dict or ZinferError

The wire format is schemas/PROTOCOL.md: one msgpack header frame, then one raw
frame per tensor (little-endian, C-contiguous), on a DEALER socket connected
to the broker's `front` endpoint. Tensor frames are sent without copying where
pyzmq allows, and received arrays are read-only views of the received frames
(np.array(x) for a writable copy).
"""

import itertools
import os
import re
import time

import msgpack
import numpy as np
import zmq

__all__ = ["Client", "ZinferError", "ZinferTimeout", "CODES", "encode_tensors",
           "decode_tensors", "read_zcert_secret"]

PROTOCOL_VERSION = 1

#  PROTOCOL.md section 11: code -> (name, whether a retry can help).
CODES = {
    400: ("BAD_REQUEST", False),
    408: ("TIMEOUT", True),
    413: ("TOO_LARGE", False),
    429: ("BUSY", True),
    500: ("INTERNAL", False),
    503: ("UNAVAILABLE", True),
    505: ("VERSION", False),
}

#  Limits of PROTOCOL.md section 10 that a client can break.
MAX_HEADER = 65536
MAX_TENSORS = 64
MAX_RANK = 8
MAX_NAME = 128

#  Protocol dtype names (PROTOCOL.md section 6, first column) <-> numpy.
#  bfloat16 has no numpy type: it is received as float32 (exact widening).
_TO_WIRE = {
    np.dtype(np.float32): "float32", np.dtype(np.float64): "float64",
    np.dtype(np.float16): "float16",
    np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8",
    np.dtype(np.int16): "int16", np.dtype(np.uint16): "uint16",
    np.dtype(np.int32): "int32", np.dtype(np.uint32): "uint32",
    np.dtype(np.int64): "int64", np.dtype(np.uint64): "uint64",
    np.dtype(np.bool_): "bool",
}
_FROM_WIRE = {name: dt for dt, name in _TO_WIRE.items()}
#  The aliases a receiver accepts (section 6), so that a peer writing
#  numpy's dtype.str is understood here too.
_ALIASES = {
    "f4": "float32", "float": "float32", "f8": "float64", "double": "float64",
    "f2": "float16", "i1": "int8", "b": "int8", "u1": "uint8", "B": "uint8",
    "i2": "int16", "u2": "uint16", "i4": "int32", "u4": "uint32",
    "i8": "int64", "u8": "uint64", "b1": "bool", "?": "bool",
}


class ZinferError(Exception):
    """An ERROR answer (or a local failure described the same way).

    code: the protocol's error code (400, 408, 413, 429, 500, 503, 505)
    name: its name (BAD_REQUEST, TIMEOUT, ...)
    reason: the peer's explanation
    retryable: True when retrying later can help (TIMEOUT, BUSY, UNAVAILABLE)
    """

    def __init__(self, code, name=None, reason="", retryable=None):
        code = int(code)
        known = CODES.get(code)
        if known is None:
            #  Section 11: unknown 5xx are INTERNAL, anything else BAD_REQUEST.
            known = CODES[500] if 500 <= code <= 599 else CODES[400]
        self.code = code
        self.name = name or known[0]
        self.reason = reason
        self.retryable = known[1] if retryable is None else retryable
        super().__init__(f"{self.code} {self.name}: {reason}")


class ZinferTimeout(ZinferError, TimeoutError):
    """No answer arrived in time (raised by the client, not sent by the broker)."""

    def __init__(self, reason):
        super().__init__(408, "TIMEOUT", reason, True)


def _error_from_header(head):
    code = head.get("code", 500)
    if not isinstance(code, int) or isinstance(code, bool):
        code = 500
    reason = head.get("reason", "")
    return ZinferError(code, None, reason if isinstance(reason, str) else repr(reason))


def _malformed(what):
    return ZinferError(500, "INTERNAL", f"malformed answer: {what}", False)


def encode_tensors(tensors):
    """dict name -> array-like  ->  (descriptors, frames).

    Each array is made little-endian and C-contiguous (a copy only when it is
    not already); the frames are the arrays themselves (buffer protocol), so
    pyzmq can send them without copying.
    """
    if len(tensors) > MAX_TENSORS:
        raise ZinferError(413, None, f"{len(tensors)} tensors, at most {MAX_TENSORS}")
    descs, frames = [], []
    for name, value in tensors.items():
        if not isinstance(name, str) or not 1 <= len(name.encode()) <= MAX_NAME:
            raise ZinferError(400, None, f"tensor name {name!r}: 1..{MAX_NAME} bytes of UTF-8")
        x = np.asarray(value)
        native = x.dtype.newbyteorder("=")
        if native not in _TO_WIRE:
            raise ZinferError(400, None, f"tensor '{name}': dtype {x.dtype} has no ZIP/1 "
                              f"name (use one of {sorted(_FROM_WIRE)})")
        if x.ndim > MAX_RANK:
            raise ZinferError(413, None, f"tensor '{name}': rank {x.ndim}, at most {MAX_RANK}")
        x = np.ascontiguousarray(x).astype(x.dtype.newbyteorder("<"), copy=False)
        descs.append({"name": name, "dtype": _TO_WIRE[native],
                      "shape": [int(d) for d in x.shape]})
        #  A 0-d or empty array still has a valid buffer; reshape(-1) keeps
        #  it a view, and memoryview hands pyzmq the bytes without a copy.
        frames.append(memoryview(x.reshape(-1)).cast("B"))
    return descs, frames


def _wire_dtype(name):
    if not isinstance(name, str):
        return None
    if name[:1] in "<|=":
        name = name[1:]
    name = _ALIASES.get(name, name)
    if name == "bfloat16":
        return "bfloat16"
    return _FROM_WIRE.get(name)


def decode_tensors(descs, frames):
    """(descriptors, frames) -> dict name -> read-only numpy array.

    Checks what a receiver must (section 6): one frame per descriptor, a known
    dtype, a shape of non-negative ints, and a frame of exactly the size the
    shape needs. Raises ZinferError (INTERNAL: the peer sent a bad answer).
    """
    if not isinstance(descs, list):
        raise _malformed("'t' is not an array")
    if len(descs) != len(frames):
        raise _malformed(f"{len(descs)} tensor descriptors but {len(frames)} tensor frames")
    out = {}
    for i, (d, f) in enumerate(zip(descs, frames)):
        if not isinstance(d, dict):
            raise _malformed(f"tensor {i}: descriptor is not a map")
        name, shape = d.get("name"), d.get("shape")
        dt = _wire_dtype(d.get("dtype"))
        if not isinstance(name, str) or not name:
            raise _malformed(f"tensor {i}: no name")
        if dt is None:
            raise _malformed(f"tensor {i} '{name}': unknown dtype {d.get('dtype')!r}")
        if (not isinstance(shape, list) or len(shape) > MAX_RANK
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                           for s in shape)):
            raise _malformed(f"tensor {i} '{name}': bad shape {shape!r}")
        buf = f.buffer if isinstance(f, zmq.Frame) else memoryview(f)
        itemsize = 2 if dt == "bfloat16" else np.dtype(dt).itemsize
        need = int(np.prod(shape, dtype=object)) * itemsize
        if buf.nbytes != need:
            raise _malformed(f"tensor {i} '{name}': frame has {buf.nbytes} bytes, "
                             f"{d.get('dtype')}{shape} needs {need}")
        if dt == "bfloat16":
            bits = np.frombuffer(buf, dtype="<u2").astype("<u4") << 16
            arr = bits.view("<f4").astype(np.float32)
        else:
            arr = np.frombuffer(buf, dtype=np.dtype(dt).newbyteorder("<"))
            if arr.dtype != np.dtype(dt):
                arr = arr.astype(dt)           # only on a big-endian machine
        out[name] = arr.reshape(shape)
    return out


def _unpack_header(frame):
    data = frame.bytes if isinstance(frame, zmq.Frame) else bytes(frame)
    if not 0 < len(data) <= MAX_HEADER:
        raise _malformed(f"header of {len(data)} bytes")
    try:
        head = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:      # msgpack raises several types for bad input
        raise _malformed(f"header is not msgpack ({e})") from None
    if not isinstance(head, dict):
        raise _malformed("header is not a map")
    if head.get("v") != PROTOCOL_VERSION:
        raise ZinferError(505, None, f"protocol version {head.get('v')!r}, this client "
                          f"speaks version {PROTOCOL_VERSION}")
    return head


def read_zcert_secret(path):
    """(public, secret) Z85 keys of a zcert secret file (ZPL text:
    curve / public-key = "..." / secret-key = "...")."""
    keys = {}
    with open(path) as f:
        for line in f:
            m = re.match(r'\s*(public-key|secret-key)\s*=\s*"(.{40})"', line)
            if m:
                keys[m.group(1)] = m.group(2)
    if "public-key" not in keys or "secret-key" not in keys:
        raise ValueError(f"{path}: not a zcert secret file (no public-key / secret-key)")
    return keys["public-key"], keys["secret-key"]


class Client:
    """One DEALER connection to a broker's `front` endpoint.

    Not thread-safe (neither is a ZeroMQ socket): use one Client per thread.
    """

    def __init__(self, endpoint, context=None, max_message_bytes=None,
                 curve_server_key=None, curve_secret_file=None, identity=None):
        """curve_server_key (the plan's security.server_public_key) and
        curve_secret_file (a zcert secret file, as `zinfer keys` makes):
        both set = connect with CURVE. identity: the routing id the broker
        keys requests on (default: a random one, stable for this Client, so
        a retry with the same id after a reconnect is still recognised)."""
        self.endpoint = endpoint
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if max_message_bytes:
            self._sock.setsockopt(zmq.MAXMSGSIZE, int(max_message_bytes))
        ident = identity if identity is not None else "zc-" + os.urandom(12).hex()
        self._sock.setsockopt(zmq.IDENTITY,
                              ident.encode() if isinstance(ident, str) else bytes(ident))
        if curve_server_key or curve_secret_file:
            if not (curve_server_key and curve_secret_file):
                raise ValueError("CURVE needs both curve_server_key and curve_secret_file")
            public, secret = read_zcert_secret(curve_secret_file)
            self._sock.curve_serverkey = curve_server_key.encode()
            self._sock.curve_publickey = public.encode()
            self._sock.curve_secretkey = secret.encode()
        self._sock.connect(endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        #  Ids start at a random-ish point so two clients' logs are easy to
        #  tell apart; the broker keys requests on (connection, id) anyway.
        self._ids = itertools.count(int(time.time() * 1000) % 1000000 * 1000 + 1)
        self._pending = set()           # REQUEST ids sent, not yet answered
        self._ready = {}                # answers to pending ids read early
        self._abandoned = set()         # ids whose caller gave up (timeout)

    # -- context manager ---------------------------------------------------

    def close(self):
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def socket(self):
        """The DEALER socket, for callers that poll several things."""
        return self._sock

    # -- sending -------------------------------------------------------------

    def _send(self, head, frames=()):
        data = msgpack.packb(head, use_bin_type=True)
        if len(data) > MAX_HEADER:
            raise ZinferError(413, None, f"header of {len(data)} bytes, at most {MAX_HEADER}")
        #  Never block: a DEALER with no connection left (a CURVE handshake
        #  the broker refused tears it down) would wait in send forever.
        try:
            self._sock.send_multipart([data, *frames], copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            raise ZinferError(503, "UNAVAILABLE", f"cannot send to {self.endpoint}: no "
                              "connection, or its queue is full", True) from None

    def send(self, inputs, prio=0, deadline_ms=0, model=None):
        """Send a REQUEST with the named input tensors; returns its id."""
        if not 0 <= int(prio) <= 7:
            raise ZinferError(400, None, f"prio {prio}: classes are 0..7")
        if not 0 <= int(deadline_ms) <= 0xFFFFFFFF:
            raise ZinferError(400, None, f"deadline_ms {deadline_ms} out of range")
        descs, frames = encode_tensors(inputs)
        rid = next(self._ids)
        head = {"v": PROTOCOL_VERSION, "cmd": "REQUEST", "id": rid, "t": descs}
        if prio:
            head["prio"] = int(prio)
        if deadline_ms:
            head["deadline"] = int(deadline_ms)
        if model:
            head["model"] = model
        self._send(head, frames)
        self._pending.add(rid)
        return rid

    # -- receiving -----------------------------------------------------------

    def _read(self, timeout_ms):
        """Read one message within timeout_ms (None: wait forever).
        Returns (head, tensor frames) or None on a timeout."""
        if not self._poller.poll(None if timeout_ms is None else max(0, int(timeout_ms))):
            return None
        frames = self._sock.recv_multipart(copy=False)
        #  A DEALER never sees an envelope; skip a stray empty delimiter
        #  (section 4: a non-ROUTER receiver skips one empty frame).
        if frames and len(frames[0].buffer) == 0:
            frames = frames[1:]
        if not frames:
            raise _malformed("empty message")
        return _unpack_header(frames[0]), frames[1:]

    def _result(self, head, frames):
        """A REPLY/ERROR -> outputs dict or a ZinferError instance."""
        if head.get("cmd") == "ERROR":
            return _error_from_header(head)
        try:
            return decode_tensors(head.get("t", []), frames)
        except ZinferError as e:
            return e

    def _pump(self, timeout_ms, want, done=None):
        """Read answers until `want(head)` is true for one (returned as
        (head, frames)), stashing REPLY/ERRORs for other pending requests.
        Returns None when timeout_ms passes first, or as soon as `done()` is
        true after a stashed answer."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        while not (done and done()):
            left = None if deadline is None else (deadline - time.monotonic()) * 1000
            if left is not None and left <= 0:
                return None
            got = self._read(left)
            if got is None:
                return None
            head, frames = got
            if want(head):
                return head, frames
            mid, cmd = head.get("id"), head.get("cmd")
            if cmd in ("REPLY", "ERROR") and mid in self._pending:
                self._ready[mid] = self._result(head, frames)
            elif cmd == "ERROR" and mid is None:
                #  Section 11: the broker could not read something we sent at
                #  all. We cannot tell which request: fail every pending one.
                err = _error_from_header(head)
                for p in self._pending:
                    self._ready.setdefault(p, err)
            elif mid in self._abandoned:
                self._abandoned.discard(mid)
            #  Anything else (a late STATS/HEALTH answer) is dropped.
        return None

    def recv(self, timeout_ms=5000):
        """The next answer to a request sent with send(): (id, outputs) or
        (id, ZinferError). Returns None when nothing arrives in timeout_ms
        (None waits forever). An ERROR the broker sent without an id fails
        every pending request, each returned as its own (id, error)."""
        if not self._ready:
            got = self._pump(timeout_ms, lambda h: h.get("cmd") in ("REPLY", "ERROR")
                             and h.get("id") in self._pending, lambda: bool(self._ready))
            if got is None and not self._ready:
                return None
            if got is not None:
                head, frames = got
                self._ready[head["id"]] = self._result(head, frames)
        rid = next(iter(self._ready))
        self._pending.discard(rid)
        return rid, self._ready.pop(rid)

    def infer(self, inputs, prio=0, deadline_ms=0, timeout_ms=5000, model=None):
        """Send one request and wait for its answer: the outputs as a dict
        name -> numpy array, or ZinferError raised (ZinferTimeout when no
        answer came within timeout_ms; the late answer is then discarded)."""
        rid = self.send(inputs, prio=prio, deadline_ms=deadline_ms, model=model)
        if rid not in self._ready:
            got = self._pump(timeout_ms, lambda h: h.get("id") == rid
                             and h.get("cmd") in ("REPLY", "ERROR"),
                             lambda: rid in self._ready)
            if got is not None:
                self._ready[rid] = self._result(*got)
        if rid not in self._ready:
            self._pending.discard(rid)
            self._abandoned.add(rid)
            raise ZinferTimeout(f"request {rid}: no answer from {self.endpoint} within "
                                f"{timeout_ms} ms")
        self._pending.discard(rid)
        result = self._ready.pop(rid)
        if isinstance(result, ZinferError):
            raise result
        return result

    def _ask(self, cmd, answer, timeout_ms):
        rid = next(self._ids)
        self._send({"v": PROTOCOL_VERSION, "cmd": cmd, "id": rid})
        got = self._pump(timeout_ms, lambda h: h.get("id") == rid
                         and h.get("cmd") in (answer, "ERROR"))
        if got is None:
            raise ZinferTimeout(f"{cmd}: no answer from {self.endpoint} within "
                                f"{timeout_ms} ms")
        head, _ = got
        if head.get("cmd") == "ERROR":
            raise _error_from_header(head)
        return head

    def stats(self, timeout_ms=2000):
        """The broker's statistics (the STATS_REPLY `stats` map)."""
        stats = self._ask("STATS", "STATS_REPLY", timeout_ms).get("stats", {})
        if not isinstance(stats, dict):
            raise _malformed("'stats' is not a map")
        return stats

    def health(self, timeout_ms=1000):
        """(live, ready): the broker's loop runs / a request can complete now."""
        head = self._ask("HEALTH", "HEALTH_REPLY", timeout_ms)
        return bool(head.get("live")), bool(head.get("ready"))

    def wait_ready(self, timeout_s=30.0, poll_ms=200):
        """Poll HEALTH until the broker says ready. Returns True when ready,
        False when timeout_s passes first (a broker that is not up yet is
        simply not answering: the DEALER keeps the question queued)."""
        end = time.monotonic() + timeout_s
        while True:
            left_ms = (end - time.monotonic()) * 1000
            if left_ms <= 0:
                return False
            start = time.monotonic()
            try:
                if self.health(timeout_ms=max(1, min(1000, left_ms)))[1]:
                    return True
            except ZinferTimeout:
                continue                        # waited the whole poll already
            except ZinferError as e:
                if not e.retryable:             # UNAVAILABLE (no connection): nap, ask again
                    raise
            #  Answered but not ready: wait a little before asking again.
            nap = poll_ms / 1000 - (time.monotonic() - start)
            if nap > 0:
                time.sleep(min(nap, max(0.0, end - time.monotonic())))
