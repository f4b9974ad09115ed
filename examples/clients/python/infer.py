#!/usr/bin/python3
"""infer.py - send requests to a zinfer pipeline from Python.

One request from .npy files, outputs printed (and saved with --save DIR):

    infer.py --endpoint tcp://127.0.0.1:5555 --input input=x.npy

A classifier over an IDX data set (Fashion-MNIST's format, .gz or not),
several requests in flight, accuracy printed:

    infer.py --endpoint ipc:///tmp/zi/zinfer-front.sock \\
        --idx t10k-images-idx3-ubyte.gz --labels t10k-labels-idx1-ubyte.gz \\
        --limit 1000 --batch 16 --concurrency 8 --predictions pred.txt

IDX images (u8 [N,H,W]) are sent as uint8 [B,H,W,1] (--layout nhwc, for a
plan whose preprocess casts, scales and transposes them), or as float32
[B,1,H,W] / 255 (--layout nchw-float, for a plan without preprocess ops).
The predicted class is the argmax of the output's last axis (or the output
itself when the plan's aggregate already applied argmax / topk).

Also: --health, --stats (print what the broker answers). Exit status: 0,
1 when a request failed, 2 on a usage error.
"""

import argparse
import gzip
import json
import os
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zinfer_client import Client, ZinferError, ZinferTimeout  # noqa: E402

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """An IDX file (optionally gzip'd) as a numpy array."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] or data[1] or data[2] not in IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    dt = np.dtype(IDX_TYPES[data[2]])
    need = int(np.prod(dims, dtype=object)) * dt.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) != need:
        raise ValueError(f"{path}: {len(body)} data bytes, dims {dims} need {need}")
    return np.frombuffer(body, dtype=dt).astype(dt.newbyteorder("=")).reshape(dims)


def classes(outputs, name):
    """Predicted class per row from a REPLY's outputs."""
    if name is None:
        name = next(iter(outputs))
        for n in outputs:
            if n.endswith(".indices"):
                name = n
    if name not in outputs:
        raise SystemExit(f"infer.py: no output '{name}' in the reply (got {sorted(outputs)})")
    y = outputs[name]
    if np.issubdtype(y.dtype, np.integer):
        return y.reshape(len(y), -1)[:, 0]      # argmax / topk indices already
    return y.reshape(len(y), -1).argmax(axis=1)


def print_outputs(outputs, save_dir):
    for name, y in outputs.items():
        print(f"{name}: {y.dtype}{list(y.shape)}")
        print(np.array2string(y, precision=5, threshold=200, edgeitems=4))
        if save_dir:
            path = os.path.join(save_dir, name.replace("/", "_") + ".npy")
            np.save(path, y)
            print(f"  saved {path}")


def run_idx(client, args):
    images = read_idx(args.idx)
    labels = read_idx(args.labels) if args.labels else None
    n = len(images) if args.limit is None else min(args.limit, len(images))
    if labels is not None and len(labels) < n:
        raise SystemExit(f"infer.py: {args.labels} has {len(labels)} labels for {n} images")
    images = images[:n]
    if images.ndim == 3:
        images = images[..., None]              # [N,H,W] -> [N,H,W,1]
    if args.layout == "nchw-float":
        images = images.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255)

    preds = np.full(n, -1, dtype=np.int64)
    starts = list(range(0, n, args.batch))
    pending = {}                                # request id -> (first row, attempt)
    failed = 0
    t0 = time.monotonic()
    latencies = []
    sent_at = {}

    def submit(first, attempt):
        x = images[first:first + args.batch]
        rid = client.send({args.input_name: x}, prio=args.prio, deadline_ms=args.deadline_ms)
        pending[rid] = (first, attempt)
        sent_at[rid] = time.monotonic()

    queue = [(s, 0) for s in starts]
    while queue or pending:
        while queue and len(pending) < args.concurrency:
            submit(*queue.pop(0))
        got = client.recv(timeout_ms=args.timeout_ms)
        if got is None:
            raise ZinferTimeout(f"{len(pending)} requests unanswered after "
                                f"{args.timeout_ms} ms")
        rid, result = got
        first, attempt = pending.pop(rid)
        latencies.append(time.monotonic() - sent_at.pop(rid))
        if isinstance(result, ZinferError):
            if result.retryable and result.code != 408 and attempt < args.retries:
                #  BUSY / UNAVAILABLE: back off (exponential, with jitter).
                time.sleep(min(1.0, 0.01 * 2 ** attempt) * random.uniform(0.5, 1.5))
                queue.append((first, attempt + 1))
                continue
            print(f"rows {first}..{min(n, first + args.batch) - 1}: {result}", file=sys.stderr)
            failed += 1
            continue
        p = classes(result, args.output)
        preds[first:first + len(p)] = p
    elapsed = time.monotonic() - t0

    if args.predictions:
        with open(args.predictions, "w") as f:
            f.writelines(f"{int(p)}\n" for p in preds)
    print(f"images: {n}, {len(starts)} requests of up to {args.batch}, "
          f"concurrency {args.concurrency}")
    if labels is not None:
        correct = int((preds == labels[:n].astype(np.int64)).sum())
        print(f"accuracy: {100.0 * correct / n:.2f}% ({correct} / {n})")
    lat = np.array(latencies) * 1000
    print(f"throughput: {n / elapsed:.0f} images/s; latency per request: "
          f"p50 {np.percentile(lat, 50):.3f} ms, p99 {np.percentile(lat, 99):.3f} ms")
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description="Send requests to a zinfer pipeline (ZIP/1).")
    ap.add_argument("--endpoint", required=True, help="the broker's front endpoint")
    ap.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                    help="an input tensor (repeat for several)")
    ap.add_argument("--save", metavar="DIR", help="save each output as DIR/NAME.npy")
    ap.add_argument("--idx", metavar="IMAGES", help="IDX images to classify")
    ap.add_argument("--labels", metavar="LABELS", help="IDX labels, for the accuracy")
    ap.add_argument("--limit", type=int, help="only the first N images")
    ap.add_argument("--batch", type=int, default=16, help="images per request (16)")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight (4)")
    ap.add_argument("--layout", choices=["nhwc", "nchw-float"], default="nhwc",
                    help="how IDX images are sent (nhwc: uint8 [B,H,W,1])")
    ap.add_argument("--input-name", default="input", help="model input name ('input')")
    ap.add_argument("--output", help="output holding the scores (default: the first)")
    ap.add_argument("--predictions", metavar="FILE", help="write one class per line")
    ap.add_argument("--prio", type=int, default=0, help="priority class (0)")
    ap.add_argument("--deadline-ms", type=int, default=0, help="request deadline (plan's)")
    ap.add_argument("--timeout-ms", type=int, default=10000, help="wait per answer (10000)")
    ap.add_argument("--retries", type=int, default=5, help="retries after BUSY/UNAVAILABLE")
    ap.add_argument("--wait-ready", type=float, default=10.0, metavar="S",
                    help="wait up to S seconds for the broker to be ready (10)")
    ap.add_argument("--curve-server-key", metavar="Z85",
                    help="the broker's public key (plan security.server_public_key); "
                         "write --curve-server-key=KEY: a Z85 key may start with '-'")
    ap.add_argument("--curve-secret-file", metavar="FILE",
                    help="this client's key pair (a zcert .key_secret file)")
    ap.add_argument("--health", action="store_true", help="print live/ready and exit")
    ap.add_argument("--stats", action="store_true", help="print the broker's stats as JSON")
    args = ap.parse_args()
    if args.batch < 1 or args.concurrency < 1:
        ap.error("--batch and --concurrency must be >= 1")
    if not (args.input or args.idx or args.health or args.stats):
        ap.error("give --input NAME=FILE.npy, --idx IMAGES, --health or --stats")

    with Client(args.endpoint, curve_server_key=args.curve_server_key,
                curve_secret_file=args.curve_secret_file) as client:
        try:
            if args.health:
                live, ready = client.health(timeout_ms=args.timeout_ms)
                print(f"live: {live}, ready: {ready}")
                return 0 if ready else 1
            if args.stats:
                print(json.dumps(client.stats(timeout_ms=args.timeout_ms), indent=2,
                                 default=str))
                return 0
            if args.wait_ready > 0 and not client.wait_ready(args.wait_ready):
                print(f"infer.py: {args.endpoint} not ready after {args.wait_ready} s",
                      file=sys.stderr)
                return 1
            if args.idx:
                return run_idx(client, args)
            inputs = {}
            for spec in args.input:
                name, sep, path = spec.partition("=")
                if not sep or not name:
                    ap.error(f"--input {spec}: expected NAME=FILE.npy")
                inputs[name] = np.load(path, allow_pickle=False)
            print_outputs(client.infer(inputs, prio=args.prio, deadline_ms=args.deadline_ms,
                                       timeout_ms=args.timeout_ms), args.save)
            return 0
        except ZinferError as e:
            print(f"infer.py: {e}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
