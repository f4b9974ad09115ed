#!/usr/bin/python3
"""PyTorch's own two-process pipeline (torch.distributed, gloo backend) as a
peer of the zinfer pipeline: the reference design's `dist.send` sketch, made
to run.

    /usr/bin/python3 tools/bench/torch_gloo.py MODEL BATCH THREADS SECONDS [LABEL]
        [--micro-batch M] [--inflight W]

MODEL: mlp | fashion-mnist | resnet18 | resnet_tiny | transformer_block |
small_mlp: the torch module torch_bench.py builds (the architecture the ONNX
file was exported from), cut in two halves where the multiply-accumulates of
its Linear/Conv layers balance best (mlp: after the second Linear + ReLU;
fashion-mnist: after conv2 + pool; resnet18: after layer2).

Two ranks (world size 2) on 127.0.0.1, gloo over loopback TCP. Each rank gets
THREADS // 2 threads (torch.set_num_threads, interop 1, OpenBLAS the same),
so the pair uses THREADS cores in total, like the other runtimes.
  rank 0: for each batch of BATCH rows (torch.rand, as torch_bench.py), split
          into micro-batches of M rows (default 16, zinfer plan's default):
          runs half 1 and dist.isend()s the activations, at most W (default 4)
          unfinished sends (then it waits for the oldest): so rank 0 works on
          the next micro-batch while rank 1 works on this one.
  rank 1: dist.recv()s, runs half 2.
Before each batch rank 0 sends a small header (go/stop, its start time on
the host's monotonic clock, which both processes share). Latency of a batch
= rank 1's end of its last micro-batch - rank 0's start of its first one
(queueing included, as in `zinfer bench --plan`); the first 4 batches are
warm-up. Rank 0 stops after SECONDS; samples/s = timed batches x BATCH /
(end of the last - start of the first timed batch).

stdout: one CSV line, the columns of `zinfer bench --csv` and torch_bench.py:
  pytorch-gloo,<LABEL or MODEL>,<batch>,<threads>,<samples/s>,<p50 ms>,<p99 ms>
stderr: "kernel: ..." and "info: ..." lines. Exit 0 on success, 2 on bad
arguments, 1 when a rank fails or times out (both ranks are killed).
"""
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WARMUP = 4


def die(msg, code=2):
    sys.stderr.write("torch_gloo: %s\n" % msg)
    sys.exit(code)


def load_torch_bench():
    spec = importlib.util.spec_from_file_location("zinfer_torch_bench",
                                                  os.path.join(HERE, "torch_bench.py"))
    tb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tb)
    return tb


# ---- the model as a list of stages, and where to cut it ----------------------

def stages_of(name, model):
    """[(stage name, module)] whose composition is model.forward."""
    import torch.nn as nn
    if name == "fashion-mnist":       # examples/fashion-mnist/train.py Net.forward
        m = model
        return [("conv1", m.conv1), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
                ("conv2", m.conv2), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten(1)), ("fc1", m.fc1), ("relu3", nn.ReLU()), ("fc2", m.fc2)]
    if name == "resnet18":            # torchvision ResNet._forward_impl
        m = model
        return [("conv1", m.conv1), ("bn1", m.bn1), ("relu", m.relu), ("maxpool", m.maxpool),
                ("layer1", m.layer1), ("layer2", m.layer2), ("layer3", m.layer3),
                ("layer4", m.layer4), ("avgpool", m.avgpool), ("flatten", nn.Flatten(1)),
                ("fc", m.fc)]
    if name == "resnet_tiny":         # tests/models/make_models.py ResNetTiny.forward
        m = model
        return [("stem", m.stem), ("bn", m.bn), ("relu", nn.ReLU()), ("pool", m.pool),
                ("block1", m.block1), ("block2", m.block2), ("gap", m.gap),
                ("flatten", nn.Flatten(1)), ("fc", m.fc)]
    if isinstance(model, nn.Sequential):
        return [("%d:%s" % (i, type(c).__name__), c) for i, c in enumerate(model.children())]
    die("no way to cut model %r in two (its forward is not a sequence of modules)" % name)


def macs_per_stage(stages, x):
    """Multiply-accumulates of the Conv2d / Linear layers inside each stage."""
    import torch
    import torch.nn as nn
    count = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            k = mod.weight[0].numel()            # Cin/groups * kh * kw
            count[0] += out.numel() * k
        elif isinstance(mod, nn.Linear):
            count[0] += out.numel() * mod.in_features

    macs = []
    with torch.no_grad():
        for _, s in stages:
            hs = [m.register_forward_hook(hook) for m in s.modules()
                  if isinstance(m, (nn.Conv2d, nn.Linear))]
            count[0] = 0
            x = s(x)
            macs.append(count[0])
            for h in hs:
                h.remove()
    return macs


def split(name, model, shape):
    """(half1, half2, description): the cut that balances MACs best; on a
    tie, the later cut (activations and pools go with half 1)."""
    import torch
    import torch.nn as nn
    stages = stages_of(name, model)
    x = torch.rand((2,) + shape, generator=torch.Generator().manual_seed(5))
    macs = macs_per_stage(stages, x)
    total = sum(macs)
    best, best_k, cum = None, 1, 0
    for k in range(1, len(stages)):
        cum += macs[k - 1]
        d = abs(2 * cum - total)
        if best is None or d <= best:
            best, best_k = d, k
    h1 = nn.Sequential(*[s for _, s in stages[:best_k]]).eval()
    h2 = nn.Sequential(*[s for _, s in stages[best_k:]]).eval()
    with torch.no_grad():
        ref = model(x)
        got = h2(h1(x))
    err = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
    if err > 1e-5:
        die("the two halves of %s do not compute the model (rel. error %.2e)" % (name, err), 1)
    m1 = sum(macs[:best_k])
    desc = "cut after %s: half 1 %.1f MMAC/sample (%d%%), half 2 %.1f MMAC/sample" % (
        stages[best_k - 1][0], m1 / 2e6, round(100.0 * m1 / max(total, 1)), (total - m1) / 2e6)
    return h1, h2, desc


# ---- one rank ------------------------------------------------------------------

def rank_main(rank, name, batch, threads, seconds, label, micro, inflight):
    import torch
    import torch.distributed as dist
    tb = load_torch_bench()
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    model, shape = tb.build(name)
    model.eval()
    h1, h2, desc = split(name, model, tuple(shape))
    kernels = tb.blas_setup(threads)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    rows = [min(micro, batch - i) for i in range(0, batch, micro)]
    with torch.no_grad():
        act_shape = [tuple(h1(torch.rand((r,) + tuple(shape))).shape) for r in rows]
    tag = 0

    if rank == 0:
        torch.manual_seed(0)
        x = torch.rand((batch,) + tuple(shape))
        parts = list(torch.split(x, micro))
        pending = []
        n = 0
        t_first = None
        with torch.inference_mode():
            while True:
                t0 = time.perf_counter()
                if n == WARMUP:
                    t_first = t0
                stop = t_first is not None and t0 - t_first >= seconds
                hdr = torch.tensor([0.0 if stop else 1.0, t0], dtype=torch.float64)
                pending.append((dist.isend(hdr, 1, tag=tag), hdr))
                tag += 1
                if stop:
                    break
                for p in parts:
                    y = h1(p).contiguous()
                    pending.append((dist.isend(y, 1, tag=tag), y))
                    tag += 1
                    while len(pending) > inflight:
                        pending.pop(0)[0].wait()
                n += 1
        for w, _ in pending:
            w.wait()
        sys.stderr.write("kernel: %s\n" % "; ".join(kernels))
        sys.stderr.write("info: %s; rank 0 ran %d batches of %d as micro-batches of %s\n"
                         % (desc, n, batch, "/".join(map(str, rows))))
    else:
        hdr = torch.empty(2, dtype=torch.float64)
        bufs = [torch.empty(s) for s in act_shape]
        lat, t_first, t_last = [], None, None
        n = 0
        with torch.inference_mode():
            while True:
                dist.recv(hdr, 0, tag=tag)
                tag += 1
                if hdr[0].item() == 0.0:
                    break
                t0 = hdr[1].item()
                for b in bufs:
                    dist.recv(b, 0, tag=tag)
                    tag += 1
                    h2(b)
                t = time.perf_counter()
                if n >= WARMUP:
                    if t_first is None:
                        t_first = t0
                    lat.append(t - t0)
                    t_last = t
                n += 1
        if not lat:
            die("no batch was timed", 1)
        lat.sort()
        sps = len(lat) * batch / (t_last - t_first)
        sys.stderr.write("info: torch %s gloo, 2 ranks x %d threads, %d timed batches in %.2f s\n"
                         % (torch.__version__, threads, len(lat), t_last - t_first))
        sys.stdout.write("pytorch-gloo,%s,%d,%d,%.1f,%.3f,%.3f\n" % (
            label, batch, 2 * threads, sps, 1e3 * tb.pct(lat, 50), 1e3 * tb.pct(lat, 99)))
        sys.stdout.flush()
    dist.barrier()
    dist.destroy_process_group()


# ---- the launcher ----------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main(argv):
    args, opts = [], {"--micro-batch": "16", "--inflight": "4", "--rank": None}
    i = 1
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        if a in opts:
            if i + 1 >= len(argv):
                die("%s needs a value" % a)
            opts[a] = argv[i + 1]
            i += 2
            continue
        if a.startswith("--"):
            die("unknown option %s (see --help)" % a)
        args.append(a)
        i += 1
    if len(args) not in (4, 5):
        die("usage: torch_gloo.py MODEL BATCH THREADS SECONDS [LABEL] [--micro-batch M] [--inflight W]")
    name = args[0]
    try:
        batch, threads, seconds = int(args[1]), int(args[2]), float(args[3])
        micro, inflight = int(opts["--micro-batch"]), int(opts["--inflight"])
    except ValueError:
        die("BATCH, THREADS, --micro-batch and --inflight need integers, SECONDS a number")
    label = args[4] if len(args) == 5 else name
    if batch < 1 or threads < 1 or not seconds > 0 or micro < 1 or inflight < 1:
        die("BATCH, THREADS, --micro-batch and --inflight must be >= 1, SECONDS > 0")
    tb_models = ("mlp", "fashion-mnist", "transformer_block", "resnet_tiny", "small_mlp", "resnet18")
    if name not in tb_models:
        die("unknown model %r (one of: %s)" % (name, ", ".join(tb_models)))
    per_rank = max(1, threads // 2)

    if opts["--rank"] is not None:
        rank_main(int(opts["--rank"]), name, batch, per_rank, seconds, label, micro, inflight)
        return 0

    try:
        import torch.distributed as dist
        if not dist.is_available() or not dist.is_gloo_available():
            die("this torch has no gloo backend", 1)
    except ImportError as e:
        die("cannot import torch (apt-get install python3-torch): %s" % e, 1)

    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS=str(per_rank))
    procs = []

    def kill_all(*_):
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in procs:
            p.wait()

    def on_signal(sig, _frame):
        kill_all()
        sys.exit(128 + sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    limit = seconds * 3 + 120
    import tempfile
    out = tempfile.TemporaryFile()
    try:
        for r in (1, 0):
            cmd = [sys.executable, os.path.abspath(__file__), name, str(batch), str(threads),
                   str(seconds), label, "--micro-batch", str(micro), "--inflight", str(inflight),
                   "--rank", str(r)]
            procs.append(subprocess.Popen(cmd, env=env, start_new_session=True,
                                          stdout=out if r == 1 else subprocess.DEVNULL))
        # Wait for both; when one fails, the other would wait for it forever.
        t_end = time.monotonic() + limit
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                break
            if time.monotonic() > t_end:
                die("timed out after %ds" % limit, 1)
            time.sleep(0.05)
        bad = [(r, p.returncode) for r, p in zip((1, 0), procs) if p.returncode not in (None, 0)]
        if bad:
            sys.stderr.write("torch_gloo: rank %d exited with status %d\n" % bad[0])
            return 1
        out.seek(0)
        sys.stdout.write(out.read().decode())
        return 0
    finally:
        kill_all()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
