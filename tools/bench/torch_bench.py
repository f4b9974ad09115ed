#!/usr/bin/python3
"""PyTorch (Debian python3-torch, eager mode) peer of `zinfer bench`.

    /usr/bin/python3 tools/bench/torch_bench.py MODEL BATCH THREADS SECONDS [LABEL]

MODEL is one of: mlp | fashion-mnist | transformer_block | resnet_tiny |
resnet18 (also small_mlp). PyTorch cannot load ONNX files, so the
architecture is rebuilt in torch from the very scripts that exported the ONNX
files:
  fashion-mnist             class Net  in examples/fashion-mnist/train.py
  mlp, transformer_block,   build_models() in tests/models/make_models.py
  resnet_tiny, small_mlp    (the classes are local to that function; its
                            constructors only seed and build, no export)
  resnet18                  build_model() in tools/bench/make_resnet18.py
                            (torchvision's resnet18, seeded random weights)
Both scripts keep training/export under `if __name__ == "__main__"`, so
importing them runs nothing. Weights are whatever the constructors make
(random for fashion-mnist): only speed is measured.

stdout: one CSV line, the same columns as `zinfer bench --csv`:
  pytorch,<LABEL or MODEL>,<batch>,<threads>,<samples/s>,<p50 ms>,<p99 ms>
stderr: "kernel: ..." (which BLAS / oneDNN / ATen kernels torch runs) and
"info: ..." lines.

Inputs: torch.rand (uniform [0,1)) of shape [BATCH, *per-sample shape], as
zinfer bench and ort_bench.js do. torch.set_num_threads(THREADS),
set_num_interop_threads(1), OpenBLAS (the BLAS torch is linked to on
Debian; its own pthread pool, not torch's OpenMP one) set to THREADS threads
too, or to $TORCH_BENCH_BLAS_THREADS when that is set; model.eval(),
torch.inference_mode().
3 warm-up calls + 1, then each forward is timed until SECONDS have passed;
percentiles are nearest-rank, as in zinfer bench.
"""
import ctypes
import importlib.util
import math
import os
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TRAIN_PY = os.path.join(ROOT, "examples", "fashion-mnist", "train.py")
MAKE_MODELS_PY = os.path.join(ROOT, "tests", "models", "make_models.py")
MAKE_RESNET18_PY = os.path.join(HERE, "make_resnet18.py")
MODELS = ("mlp", "fashion-mnist", "transformer_block", "resnet_tiny", "small_mlp", "resnet18")


def die(msg, code=2):
    sys.stderr.write("torch_bench: %s\n" % msg)
    sys.exit(code)


def import_script(path, modname):
    """Import a script by path. Its top-level `import onnx` is only needed by
    its export code; if python3-onnx is missing, a stub stands in for it."""
    if not os.path.exists(path):
        die("%s not found" % os.path.relpath(path, ROOT))
    try:
        import onnx  # noqa: F401
    except ImportError:
        stub = types.ModuleType("onnx")
        stub.numpy_helper = types.ModuleType("onnx.numpy_helper")
        sys.modules["onnx"] = stub
        sys.modules["onnx.numpy_helper"] = stub.numpy_helper
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build(name):
    """(torch module, per-sample input shape) for a model name."""
    if name == "fashion-mnist":
        train = import_script(TRAIN_PY, "zinfer_fmnist_train")
        return train.Net(), (1, 28, 28)
    if name == "resnet18":
        r18 = import_script(MAKE_RESNET18_PY, "zinfer_make_resnet18")
        return r18.build_model(), tuple(r18.SHAPE)
    mm = import_script(MAKE_MODELS_PY, "zinfer_make_models")
    specs = mm.build_models()
    if name not in specs:
        die("make_models.py has no model %r (has: %s)" % (name, ", ".join(sorted(specs))))
    ctor, shape = specs[name][0], specs[name][1]
    return ctor(), tuple(shape)


def pct(sorted_vals, p):
    if not sorted_vals:
        return 0.0
    idx = int(math.ceil(p / 100.0 * len(sorted_vals))) - 1
    return sorted_vals[max(0, min(idx, len(sorted_vals) - 1))]


DNNL_ISA = {0x1: "sse41", 0x3: "avx", 0x7: "avx2", 0x407: "avx2_vnni",
            0x27: "avx512_core", 0x67: "avx512_core_vnni",
            0xe7: "avx512_core_bf16", 0x3e7: "avx512_core_amx"}


def native_libs():
    """Paths of the shared libraries this process has loaded."""
    try:
        with open("/proc/self/maps") as f:
            return sorted({ln.split()[-1] for ln in f if "/" in ln and ".so" in ln})
    except OSError:
        return []


def blas_setup(threads):
    """Set OpenBLAS's thread count; describe the BLAS and oneDNN in use."""
    parts = []
    seen = False
    for p in native_libs():
        base = os.path.basename(p)
        if not seen and ("openblas" in base or base.startswith("libblas.so")):
            try:
                lib = ctypes.CDLL(p)
                lib.openblas_get_corename.restype = ctypes.c_char_p
                lib.openblas_set_num_threads(ctypes.c_int(threads))
                core = lib.openblas_get_corename().decode()
                nthr = lib.openblas_get_num_threads()
                parts.append("OpenBLAS %s (%d thr) for matmul" % (core, nthr))
                seen = True
            except (OSError, AttributeError):
                pass
        if base.startswith("libdnnl.so"):
            try:
                isa = ctypes.CDLL(p).dnnl_get_effective_cpu_isa()
                parts.append("oneDNN %s for conv" % DNNL_ISA.get(isa, hex(isa)))
            except (OSError, AttributeError):
                pass
    if not seen:
        parts.append("BLAS: not OpenBLAS (%s)" % blas_info())
    return parts


def blas_info():
    import torch
    cfg = torch.__config__.show()
    for tok in cfg.replace(",", "\n").splitlines():
        if "BLAS_INFO" in tok:
            return tok.strip()
    return "BLAS_INFO unknown"


def main(argv):
    if len(argv) not in (5, 6):
        die("usage: torch_bench.py MODEL BATCH THREADS SECONDS [LABEL]\n  MODEL: %s"
            % " | ".join(MODELS))
    name, batch, threads, seconds = argv[1], int(argv[2]), int(argv[3]), float(argv[4])
    label = argv[5] if len(argv) == 6 else name
    if name not in MODELS:
        die("unknown model %r (one of: %s)" % (name, ", ".join(MODELS)))
    if batch < 1 or threads < 1 or not seconds > 0:
        die("BATCH and THREADS must be >= 1, SECONDS > 0")

    try:
        import torch
    except ImportError as e:
        die("cannot import torch (apt-get install python3-torch): %s" % e)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    model, shape = build(name)
    model.eval()
    torch.manual_seed(0)
    x = torch.rand((batch,) + shape)
    blas_threads = int(os.environ.get("TORCH_BENCH_BLAS_THREADS", threads))
    kernels = blas_setup(blas_threads)
    cap = "?"
    for ln in torch.__config__.show().splitlines():
        if "CPU capability usage" in ln:
            cap = ln.split(":", 1)[1].strip()

    with torch.inference_mode():
        for _ in range(4):
            model(x)
        lat = []
        t0 = time.perf_counter()
        while True:
            t1 = time.perf_counter()
            model(x)
            t = time.perf_counter()
            lat.append(t - t1)
            if t - t0 >= seconds:
                break
    total = t - t0
    lat.sort()
    sps = len(lat) * batch / total
    sys.stderr.write("kernel: %s; ATen %s\n" % ("; ".join(kernels), cap))
    sys.stderr.write("info: torch %s eager, %d intra-op threads, %d runs in %.2f s\n"
                     % (torch.__version__, torch.get_num_threads(), len(lat), total))
    sys.stdout.write("pytorch,%s,%d,%d,%.1f,%.3f,%.3f\n" % (
        label, batch, threads, sps, 1e3 * pct(lat, 50), 1e3 * pct(lat, 99)))


if __name__ == "__main__":
    main(sys.argv)
