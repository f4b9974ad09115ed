#!/usr/bin/python3
"""ResNet-18 (torchvision's architecture, random weights) as ONNX, for the benchmark.

    /usr/bin/python3 tools/bench/make_resnet18.py [OUT.onnx] [--force]
    /usr/bin/python3 tools/bench/make_resnet18.py [OUT.onnx] --check ZINFER [--batch N]

Writes OUT.onnx (default build/bench/resnet18.onnx) only if it is missing
or was made by another version of this script (OUT.onnx.stamp; --force:
always): torchvision.models.resnet18(weights=None), torch seeded with 0,
BatchNorm scale/shift/statistics randomised (seeded), eval mode, exported at opset 13 with a dynamic batch axis
(input "input" [N,3,224,224] -> output "output" [N,1000]), BatchNormalization
folded into the convolutions (torch.onnx's eval-mode export). Nothing is
downloaded: the weights are torchvision's random initialisation.

--check ZINFER: runs one batch (default 2) of torch.rand input through the
same torch model and through `ZINFER run OUT.onnx`, and prints
    resnet18 check: zinfer vs torch, batch N: max |diff| / max |torch| = X (<= 1e-3: OK)
exit status 0 when X <= 1e-3, 1 otherwise (or when zinfer fails).

Needs Debian's python3-torch and python3-torchvision (and python3-numpy).
torch_bench.py and torch_gloo.py build the very same torch module through
build_model() below.
"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(ROOT, "build", "bench", "resnet18.onnx")
SHAPE = (3, 224, 224)
SEED = 0
OPSET = 13
TOLERANCE = 1e-3
# What build_model() makes; a different stamp beside OUT.onnx (OUT.onnx.stamp)
# makes the next run export again.
STAMP = "resnet18 torchvision seed 0, random BN, opset 13, v2"


def die(msg, code=2):
    sys.stderr.write("make_resnet18: %s\n" % msg)
    sys.exit(code)


def build_model():
    """torchvision's resnet18, random weights seeded with SEED, eval mode."""
    import torch
    try:
        import torchvision
    except ImportError as e:
        die("cannot import torchvision (apt-get install python3-torchvision): %s" % e)
    import torch.nn as nn
    torch.manual_seed(SEED)
    try:
        m = torchvision.models.resnet18(weights=None)
    except TypeError:                      # torchvision < 0.13
        m = torchvision.models.resnet18(pretrained=False)
    # BatchNorm as a trained network has it (as tests/models/make_models.py
    # does): torchvision's fresh BN is the identity (weight 1, bias 0, mean 0,
    # var 1), which would fold into all-zero conv biases that the exporter
    # then shares through Identity nodes, a shape no real model has.
    g = torch.Generator().manual_seed(SEED + 11)
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                n = bn.num_features
                bn.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                bn.bias.copy_(torch.randn(n, generator=g) * 0.1)
                bn.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                bn.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
    return m.eval()


def export(out):
    import torch
    torch.set_num_threads(2)
    model = build_model()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    x = torch.rand((1,) + SHAPE, generator=torch.Generator().manual_seed(1))
    tmp = out + ".tmp"
    with torch.no_grad():
        torch.onnx.export(model, x, tmp, opset_version=OPSET, do_constant_folding=True,
                          training=torch.onnx.TrainingMode.EVAL,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
    os.replace(tmp, out)
    sys.stderr.write("make_resnet18: wrote %s (%.1f MB)\n"
                     % (os.path.relpath(out, ROOT), os.path.getsize(out) / 1e6))


def check(out, zinfer, batch):
    import numpy as np
    import torch
    torch.set_num_threads(2)
    model = build_model()
    x = torch.rand((batch,) + SHAPE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x).numpy()
    with tempfile.TemporaryDirectory() as d:
        np.save(os.path.join(d, "x.npy"), x.numpy())
        try:
            r = subprocess.run([zinfer, "run", out, "--input", "input=" + os.path.join(d, "x.npy"),
                                "--out", os.path.join(d, "out")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            print("resnet18 check: zinfer run failed: %s" % e)
            return 1
        got_path = os.path.join(d, "out", "output.npy")
        if r.returncode != 0 or not os.path.exists(got_path):
            msg = r.stdout.decode(errors="replace").strip().splitlines()
            print("resnet18 check: zinfer run failed (exit %d): %s"
                  % (r.returncode, msg[-1] if msg else "no output"))
            return 1
        got = np.load(got_path)
    if got.shape != ref.shape:
        print("resnet18 check: zinfer output shape %s, torch %s" % (got.shape, ref.shape))
        return 1
    rel = float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-30))
    ok = rel <= TOLERANCE
    print("resnet18 check: zinfer vs torch, batch %d: max |diff| / max |torch| = %.2e "
          "(<= %g: %s); same top-1 class: %d/%d"
          % (batch, rel, TOLERANCE, "OK" if ok else "FAIL",
             int(np.sum(got.argmax(1) == ref.argmax(1))), batch))
    return 0 if ok else 1


def main(argv):
    out, force, zinfer, batch = DEFAULT_OUT, False, None, 2
    i = 1
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        if a == "--force":
            force = True
        elif a == "--check":
            if i + 1 >= len(argv):
                die("--check needs the path of the zinfer binary")
            zinfer = argv[i + 1]
            i += 1
        elif a == "--batch":
            if i + 1 >= len(argv) or not argv[i + 1].isdigit() or int(argv[i + 1]) < 1:
                die("--batch needs an integer >= 1")
            batch = int(argv[i + 1])
            i += 1
        elif a.startswith("-"):
            die("unknown option %s (see --help)" % a)
        else:
            out = a
        i += 1
    try:
        import torch  # noqa: F401
    except ImportError as e:
        die("cannot import torch (apt-get install python3-torch): %s" % e)
    stamp = out + ".stamp"
    try:
        with open(stamp) as f:
            current = f.read().strip() == STAMP
    except OSError:
        current = False
    if force or not os.path.exists(out) or not current:
        export(out)
        with open(stamp, "w") as f:
            f.write(STAMP + "\n")
    if zinfer is not None:
        return check(out, zinfer, batch)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
