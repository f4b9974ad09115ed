#!/usr/bin/python3
"""Generate the tiny ONNX test models used by zinfer's tests.

Each model goes in tests/models/<name>/ in the ONNX backend-test layout:
    <name>/model.onnx
    <name>/test_data_set_0/input_0.pb, output_0.pb   (TensorProto)
    <name>/test_data_set_1/input_0.pb, output_0.pb   (other batch size)
Reference outputs are computed by torch in eval mode at export time, from
random inputs with fixed seeds. Every model has a dynamic batch axis on the
first dim of its input and output.

torch is needed only to regenerate these files, never by `make test`.

Run (from the repo root):  /usr/bin/python3 tests/models/make_models.py
Needs: apt-get install python3-torch python3-onnx python3-numpy

After export each model is checked with onnx.checker.check_model, and its
reference outputs are re-computed by a small independent numpy evaluator
(onnx.reference is not in Debian's python3-onnx 1.12). That evaluator can
also check other model folders in the same layout:
    /usr/bin/python3 tests/models/make_models.py --verify-only DIR...
"""
import argparse
import math
import os
import random
import sys

import numpy as np
import onnx
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------

def build_models():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def randomize_bn(bn, g):
        with torch.no_grad():
            bn.weight.copy_(torch.rand(bn.num_features, generator=g) * 1.5 + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.5)
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.5)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) * 1.5 + 0.25)

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.down is None else self.down(x)
            y = F.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return F.relu(y + idt)

    class ResNetTiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(8)
            self.pool = nn.MaxPool2d(2)              # 16x16 -> 8x8
            self.block1 = BasicBlock(8, 8, 1)        # 8x8
            self.block2 = BasicBlock(8, 16, 2)       # -> 4x4, 1x1 downsample
            self.gap = nn.AdaptiveAvgPool2d(1)       # GlobalAveragePool
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.bn(self.stem(x))))
            x = self.block2(self.block1(x))
            x = torch.flatten(self.gap(x), 1)
            return self.fc(x)

    class TransformerBlock(nn.Module):
        """Pre-LN encoder block, written out by hand so it traces to plain ops."""

        def __init__(self, d_model=32, n_heads=4, d_ff=64):
            super().__init__()
            self.h = n_heads
            self.scale = 1.0 / math.sqrt(d_model // n_heads)
            self.ln1 = nn.LayerNorm(d_model)
            self.q = nn.Linear(d_model, d_model)
            self.k = nn.Linear(d_model, d_model)
            self.v = nn.Linear(d_model, d_model)
            self.o = nn.Linear(d_model, d_model)
            self.ln2 = nn.LayerNorm(d_model)
            self.fc1 = nn.Linear(d_model, d_ff)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(d_ff, d_model)

        def forward(self, x):
            # Shape-derived sizes, so the export keeps the
            # Shape->Gather->Unsqueeze->Concat->Reshape chains (dynamic batch).
            b, s, d = x.shape[0], x.shape[1], x.shape[2]
            dh = d // self.h
            y = self.ln1(x)
            q = self.q(y).reshape(b, s, self.h, dh).transpose(1, 2)
            k = self.k(y).reshape(b, s, self.h, dh).transpose(1, 2)
            v = self.v(y).reshape(b, s, self.h, dh).transpose(1, 2)
            att = torch.matmul(q, k.transpose(2, 3)) * self.scale
            att = torch.softmax(att, dim=-1)
            z = torch.matmul(att, v).transpose(1, 2).reshape(b, s, d)
            x = x + self.o(z)
            x = x + self.fc2(self.act(self.fc1(self.ln2(x))))
            return x

    def mlp(sizes):
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    def make_resnet():
        torch.manual_seed(1)
        m = ResNetTiny()
        g = torch.Generator().manual_seed(11)
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                randomize_bn(mod, g)
        return m

    def make_transformer():
        torch.manual_seed(2)
        m = TransformerBlock()
        g = torch.Generator().manual_seed(12)
        with torch.no_grad():
            for ln in (m.ln1, m.ln2):
                ln.weight.copy_(torch.rand(ln.normalized_shape, generator=g) + 0.5)
                ln.bias.copy_(torch.randn(ln.normalized_shape, generator=g) * 0.2)
        return m

    def make_mlp():
        torch.manual_seed(3)
        return mlp([784, 1024, 1024, 1024, 10])

    def make_small_mlp():
        torch.manual_seed(4)
        return mlp([16, 32, 10])

    # name: (constructor, per-sample input shape, batch sizes of test sets,
    #        opset, do_constant_folding)
    return {
        "resnet_tiny": (make_resnet, (3, 16, 16), (2, 1), 13, False),
        "transformer_block": (make_transformer, (8, 32), (2, 3), 17, True),
        "mlp": (make_mlp, (784,), (4, 1), 13, True),
        "small_mlp": (make_small_mlp, (16,), (4, 3), 13, True),
    }


def save_tensor(arr, path, name):
    t = numpy_helper.from_array(np.ascontiguousarray(arr), name)
    with open(path, "wb") as f:
        f.write(t.SerializeToString())


def export_all(names):
    import torch
    torch.set_num_threads(2)
    specs = build_models()
    for name in names:
        ctor, shape, batches, opset, fold = specs[name]
        random.seed(0)
        np.random.seed(0)
        model = ctor().eval()
        d = os.path.join(HERE, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "model.onnx")
        g = torch.Generator().manual_seed(100)
        inputs = [torch.randn((b,) + shape, generator=g) for b in batches]
        torch.onnx.export(model, inputs[0], path, opset_version=opset,
                          do_constant_folding=fold,
                          # EVAL mode runs a peephole pass that folds
                          # BatchNormalization into the preceding Conv even
                          # without constant folding; PRESERVE on a model in
                          # eval() exports the inference graph unfused.
                          training=(torch.onnx.TrainingMode.EVAL if fold
                                    else torch.onnx.TrainingMode.PRESERVE),
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
        for i, x in enumerate(inputs):
            with torch.no_grad():
                y = model(x)
            ds = os.path.join(d, "test_data_set_%d" % i)
            os.makedirs(ds, exist_ok=True)
            save_tensor(x.numpy(), os.path.join(ds, "input_0.pb"), "input")
            save_tensor(y.numpy(), os.path.join(ds, "output_0.pb"), "output")


# --------------------------------------------------------------------------
# Independent numpy evaluator (only the ops these models use)
# --------------------------------------------------------------------------

def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pads4(a, nsp):
    p = list(a.get("pads", [0] * (2 * nsp)))
    return p


def _conv(x, w, b, a):
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    group = a.get("group", 1)
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    pt, pl, pb, pr = _pads4(a, 2)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise NotImplementedError("auto_pad")
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, m, oh, ow), dtype=np.float64)
    mg = m // group
    for gi in range(group):
        xs = xp[:, gi * cg:(gi + 1) * cg]
        ws = w[gi * mg:(gi + 1) * mg].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                           j * dw:j * dw + sw * (ow - 1) + 1:sw]
                out[:, gi * mg:(gi + 1) * mg] += np.einsum(
                    "nchw,mc->nmhw", patch.astype(np.float64), ws[:, :, i, j])
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out.astype(x.dtype)


def _pool(x, a, kind):
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    pt, pl, pb, pr = _pads4(a, 2)
    if a.get("ceil_mode", 0) or a.get("dilations", [1, 1]) != [1, 1]:
        raise NotImplementedError("pool ceil_mode/dilations")
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=fill)
    n, c, h, w = xp.shape
    oh = (h - kh) // sh + 1
    ow = (w - kw) // sw + 1
    wins = np.stack([xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
                     for i in range(kh) for j in range(kw)])
    if kind == "max":
        return wins.max(0)
    if any((pt, pl, pb, pr)) and not a.get("count_include_pad", 0):
        raise NotImplementedError("AveragePool with pads")
    return wins.mean(0).astype(x.dtype)


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64)).astype(x.dtype)


def run_numpy(model, feeds):
    env = dict(feeds)
    for init in model.graph.initializer:
        env[init.name] = numpy_helper.to_array(init)
    for node in model.graph.node:
        a = _attrs(node)
        ins = [env[i] if i else None for i in node.input]
        op = node.op_type
        x = ins[0] if ins else None
        if op == "Constant":
            r = numpy_helper.to_array(a["value"])
        elif op == "Conv":
            r = _conv(x, ins[1], ins[2] if len(ins) > 2 else None, a)
        elif op == "MaxPool":
            r = _pool(x, a, "max")
        elif op == "AveragePool":
            r = _pool(x, a, "avg")
        elif op == "GlobalAveragePool":
            r = x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)
        elif op == "BatchNormalization":
            s, bias, mean, var = ins[1:5]
            eps = a.get("epsilon", 1e-5)
            shp = (1, -1) + (1,) * (x.ndim - 2)
            r = ((x - mean.reshape(shp)) / np.sqrt(var.reshape(shp) + eps)
                 * s.reshape(shp) + bias.reshape(shp)).astype(x.dtype)
        elif op == "Relu":
            r = np.maximum(x, 0)
        elif op == "Flatten":
            ax = a.get("axis", 1)
            r = x.reshape(int(np.prod(x.shape[:ax])), -1)
        elif op == "Gemm":
            A = x.T if a.get("transA", 0) else x
            B = ins[1].T if a.get("transB", 0) else ins[1]
            r = a.get("alpha", 1.0) * (A @ B)
            if len(ins) > 2 and ins[2] is not None:
                r = r + a.get("beta", 1.0) * ins[2]
            r = r.astype(x.dtype)
        elif op == "MatMul":
            r = np.matmul(x, ins[1])
        elif op == "Add":
            r = x + ins[1]
        elif op == "Sub":
            r = x - ins[1]
        elif op == "Mul":
            r = x * ins[1]
        elif op == "Div":
            r = x / ins[1] if x.dtype.kind == "f" else x // ins[1]
        elif op == "Pow":
            r = np.power(x, ins[1]).astype(x.dtype)
        elif op == "Sqrt":
            r = np.sqrt(x)
        elif op == "Erf":
            r = _erf(x)
        elif op == "Softmax":
            ax = a.get("axis", -1)
            e = np.exp(x - x.max(axis=ax, keepdims=True))
            r = e / e.sum(axis=ax, keepdims=True)
        elif op == "LayerNormalization":
            ax = a.get("axis", -1) % x.ndim
            axes = tuple(range(ax, x.ndim))
            mu = x.mean(axis=axes, keepdims=True)
            var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
            r = (x - mu) / np.sqrt(var + a.get("epsilon", 1e-5)) * ins[1]
            if len(ins) > 2 and ins[2] is not None:
                r = r + ins[2]
            r = r.astype(x.dtype)
        elif op == "ReduceMean":
            r = x.mean(axis=tuple(a["axes"]), keepdims=bool(a.get("keepdims", 1)))
        elif op == "Shape":
            r = np.array(x.shape, dtype=np.int64)
        elif op == "Gather":
            r = np.take(x, ins[1], axis=a.get("axis", 0))
        elif op == "Unsqueeze":
            axes = [int(v) for v in (ins[1] if len(ins) > 1 else a["axes"])]
            r = x
            for ax in sorted(v % (x.ndim + len(axes)) for v in axes):
                r = np.expand_dims(r, ax)
        elif op == "Squeeze":
            r = np.squeeze(x, axis=tuple(int(v) for v in ins[1])) if len(ins) > 1 else np.squeeze(x)
        elif op == "Concat":
            r = np.concatenate(ins, axis=a["axis"])
        elif op == "Reshape":
            shp = [int(v) for v in ins[1]]
            shp = [x.shape[i] if (v == 0 and not a.get("allowzero", 0)) else v
                   for i, v in enumerate(shp)]
            r = x.reshape(shp)
        elif op == "Transpose":
            r = np.transpose(x, a.get("perm"))
        elif op == "Identity":
            r = x
        elif op == "Cast":
            r = x.astype(onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[a["to"]])
        else:
            raise NotImplementedError("numpy evaluator: op %s" % op)
        env[node.output[0]] = np.asarray(r)
    return [env[o.name] for o in model.graph.output]


def load_tensor(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def verify(d, rtol=1e-4, atol=1e-4):
    """check_model + re-run every test_data_set_* with the numpy evaluator."""
    path = os.path.join(d, "model.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    ops = sorted({n.op_type for n in model.graph.node})
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    in_names = [i.name for i in model.graph.input
                if i.name not in {t.name for t in model.graph.initializer}]
    sets = sorted(s for s in os.listdir(d) if s.startswith("test_data_set_"))
    worst = 0.0
    for s in sets:
        sd = os.path.join(d, s)
        feeds = {n: load_tensor(os.path.join(sd, "input_%d.pb" % i))
                 for i, n in enumerate(in_names)}
        outs = run_numpy(model, feeds)
        for i, got in enumerate(outs):
            ref = load_tensor(os.path.join(sd, "output_%d.pb" % i))
            if got.shape != ref.shape or got.dtype != ref.dtype:
                raise AssertionError("%s/%s output %d: %s %s vs ref %s %s" % (
                    d, s, i, got.shape, got.dtype, ref.shape, ref.dtype))
            worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - ref))))
            if not np.allclose(got, ref, rtol=rtol, atol=atol):
                raise AssertionError("%s/%s output %d mismatch, max abs diff %g"
                                     % (d, s, i, worst))
    shapes = ["x".join(str(v) for v in load_tensor(os.path.join(d, s, "input_0.pb")).shape)
              for s in sets]
    print("%-20s opset %d  %d nodes  test sets %s  max|diff| %.2e  %7.1f KiB" % (
        os.path.basename(os.path.normpath(d)), opset, len(model.graph.node),
        ",".join(shapes), worst, os.path.getsize(path) / 1024.0))
    print("    ops: %s" % ", ".join(ops))
    return ops, opset

# --------------------------------------------------------------------------
# identity_bias: a graph that starts with Identity nodes on initializers
# --------------------------------------------------------------------------
#
# torch.onnx shares equal constants (the all-zero conv biases BatchNorm
# folding leaves behind, in ResNets made with fresh BN) through Identity
# nodes at the very start of the graph. Cut into segments, those Identity
# outputs used to become segment inputs without a batch axis (the README's
# known bug). The exporter's choice depends on the torch version, so this
# model is written node by node with onnx.helper and its reference outputs
# are computed by torch's functional ops (and checked again by the numpy
# evaluator below). It is NOT in the backend-test layout (no model.onnx /
# test_data_set_*), so `zinfer conformance` does not count it:
#
#   identity_bias/identity_bias.onnx
#   identity_bias/input_b2.npy  output_b2.npy   (batch 2)
#   identity_bias/input_b3.npy  output_b3.npy   (batch 3)
#
# Graph (opset 13), input "input" [N,3,8,8] -> output "output" [N,10]:
#   Identity(zero_bias) x3 -> conv biases b0, b1, b2 (one shared zero init)
#   Identity(fc_b_src)     -> fc_b
#   Reshape(bn_scale_src [8], [8,1,1]) -> scale   (constant-only, not Identity)
#   Conv(b0)-Relu -> Conv(b1)-Mul(scale)-Relu -> Conv(b2) + skip -> Relu
#   GlobalAveragePool -> x.reshape(x.shape[0], -1) as torch emits it
#   (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) -> Gemm(fc_b)

IDENTITY_BIAS = "identity_bias"


def identity_bias_model():
    from onnx import helper, TensorProto
    rng = np.random.RandomState(7)

    def init(name, arr):
        return numpy_helper.from_array(np.array(arr, order="C"), name)

    w = {
        "conv0.w": (rng.randn(8, 3, 3, 3) * 0.3).astype(np.float32),
        "conv1.w": (rng.randn(8, 8, 3, 3) * 0.2).astype(np.float32),
        "conv2.w": (rng.randn(8, 8, 3, 3) * 0.2).astype(np.float32),
        "zero_bias": np.zeros(8, np.float32),
        "bn_scale_src": (rng.rand(8) + 0.5).astype(np.float32),
        "scale_shape": np.array([8, 1, 1], np.int64),
        "fc.w": (rng.randn(10, 8) * 0.3).astype(np.float32),
        "fc_b_src": (rng.randn(10) * 0.1).astype(np.float32),
        "gather_idx": np.array(0, np.int64),
        "unsq_axes": np.array([0], np.int64),
        "minus_one": np.array([-1], np.int64),
    }
    N = helper.make_node
    nodes = [
        N("Identity", ["zero_bias"], ["b0"], name="Identity_0"),
        N("Identity", ["zero_bias"], ["b1"], name="Identity_1"),
        N("Identity", ["zero_bias"], ["b2"], name="Identity_2"),
        N("Identity", ["fc_b_src"], ["fc_b"], name="Identity_3"),
        N("Reshape", ["bn_scale_src", "scale_shape"], ["scale"], name="Reshape_scale"),
        N("Conv", ["input", "conv0.w", "b0"], ["c0"], name="Conv_0", pads=[1, 1, 1, 1]),
        N("Relu", ["c0"], ["r0"], name="Relu_0"),
        N("Conv", ["r0", "conv1.w", "b1"], ["c1"], name="Conv_1", pads=[1, 1, 1, 1]),
        N("Mul", ["c1", "scale"], ["m1"], name="Mul_1"),
        N("Relu", ["m1"], ["r1"], name="Relu_1"),
        N("Conv", ["r1", "conv2.w", "b2"], ["c2"], name="Conv_2", pads=[1, 1, 1, 1]),
        N("Add", ["c2", "r0"], ["a2"], name="Add_2"),
        N("Relu", ["a2"], ["r2"], name="Relu_2"),
        N("GlobalAveragePool", ["r2"], ["gap"], name="GlobalAveragePool_0"),
        N("Shape", ["gap"], ["gap_shape"], name="Shape_0"),
        N("Gather", ["gap_shape", "gather_idx"], ["n0"], name="Gather_0", axis=0),
        N("Unsqueeze", ["n0", "unsq_axes"], ["n1"], name="Unsqueeze_0"),
        N("Concat", ["n1", "minus_one"], ["flat_shape"], name="Concat_0", axis=0),
        N("Reshape", ["gap", "flat_shape"], ["flat"], name="Reshape_flat"),
        N("Gemm", ["flat", "fc.w", "fc_b"], ["output"], name="Gemm_0", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "identity_bias",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        [init(k, v) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="zinfer tests/models/make_models.py")
    model.ir_version = 7
    return model, w


def identity_bias_torch(w, x):
    """The same network with torch's functional ops (the reference)."""
    import torch
    import torch.nn.functional as F
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    x = torch.from_numpy(x)
    with torch.no_grad():
        r0 = F.relu(F.conv2d(x, t["conv0.w"], t["zero_bias"], padding=1))
        c1 = F.conv2d(r0, t["conv1.w"], t["zero_bias"], padding=1)
        r1 = F.relu(c1 * t["bn_scale_src"].reshape(8, 1, 1))
        r2 = F.relu(F.conv2d(r1, t["conv2.w"], t["zero_bias"], padding=1) + r0)
        gap = r2.mean(dim=(2, 3), keepdim=True)
        flat = gap.reshape(gap.shape[0], -1)
        y = F.linear(flat, t["fc.w"], t["fc_b_src"])
    return y.numpy()


def export_identity_bias():
    import torch
    torch.set_num_threads(2)
    d = os.path.join(HERE, IDENTITY_BIAS)
    os.makedirs(d, exist_ok=True)
    model, w = identity_bias_model()
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, os.path.join(d, IDENTITY_BIAS + ".onnx"))
    rng = np.random.RandomState(100)
    for b in (2, 3):
        x = rng.randn(b, 3, 8, 8).astype(np.float32)
        y = identity_bias_torch(w, x)
        np.save(os.path.join(d, "input_b%d.npy" % b), x)
        np.save(os.path.join(d, "output_b%d.npy" % b), y)


def verify_identity_bias(d):
    """check_model + the numpy evaluator against the saved torch outputs."""
    model = onnx.load(os.path.join(d, IDENTITY_BIAS + ".onnx"))
    onnx.checker.check_model(model, full_check=True)
    worst = 0.0
    for b in (2, 3):
        x = np.load(os.path.join(d, "input_b%d.npy" % b))
        ref = np.load(os.path.join(d, "output_b%d.npy" % b))
        got = run_numpy(model, {"input": x})[0]
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise AssertionError("%s batch %d: %s %s vs ref %s %s" % (
                d, b, got.shape, got.dtype, ref.shape, ref.dtype))
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - ref))))
        if not np.allclose(got, ref, rtol=1e-4, atol=1e-4):
            raise AssertionError("%s batch %d mismatch, max abs diff %g" % (d, b, worst))
    ops = sorted({n.op_type for n in model.graph.node})
    print("%-20s opset 13  %d nodes  batches 2,3  max|diff| %.2e" % (
        IDENTITY_BIAS, len(model.graph.node), worst))
    print("    ops: %s" % ", ".join(ops))


def main():
    names = ["resnet_tiny", "transformer_block", "mlp", "small_mlp", IDENTITY_BIAS]
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="subset of %s" % names)
    ap.add_argument("--verify-only", nargs="+", metavar="DIR",
                    help="only check existing model folders (no torch needed)")
    args = ap.parse_args()
    if args.verify_only:
        for d in args.verify_only:
            if os.path.isfile(os.path.join(d, IDENTITY_BIAS + ".onnx")):
                verify_identity_bias(d)
            else:
                verify(d)
        return
    todo = args.models or names
    for n in todo:
        if n not in names:
            sys.exit("unknown model %s" % n)
    if IDENTITY_BIAS in todo:
        todo.remove(IDENTITY_BIAS)
        export_identity_bias()
        verify_identity_bias(os.path.join(HERE, IDENTITY_BIAS))
    export_all(todo)
    for n in todo:
        ops, _ = verify(os.path.join(HERE, n))
        if n == "resnet_tiny" and "BatchNormalization" not in ops:
            sys.exit("resnet_tiny: BatchNormalization missing from the graph")
        if n == "transformer_block" and "LayerNormalization" not in ops:
            sys.exit("transformer_block: LayerNormalization missing from the graph")


if __name__ == "__main__":
    main()
