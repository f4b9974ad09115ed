#!/usr/bin/python3
"""Train a small CNN on Fashion-MNIST and export it to ONNX.

Data comes from Debian's dataset-fashion-mnist package
(/usr/share/datasets/fashion-mnist/*-idx*-ubyte.gz); nothing is downloaded.

Outputs (next to this script):
  model.onnx                       opset 13, input "input" [N,1,28,28] f32 in [0,1],
                                   output "logits" [N,10], dynamic batch axis
  test_data_set_0/input_0.pb       first 16 test images, TensorProto [16,1,28,28]
  test_data_set_0/output_0.pb      torch eval-mode logits for them, [16,10]
  reference_predictions.txt        torch argmax for all 10,000 test images
Prints the test-set accuracy.

Run:  /usr/bin/python3 examples/fashion-mnist/train.py
Needs: apt-get install python3-torch python3-onnx python3-numpy dataset-fashion-mnist
"""
import argparse
import gzip
import os
import random
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import onnx
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    """Read a (gzipped) IDX file into a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError("%s: unsupported IDX header" % path)
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError("%s: size mismatch" % path)
    return arr.reshape(dims)


def load(split):
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(DATA_DIR, "%s-images-idx3-ubyte.gz" % prefix))
    labels = read_idx(os.path.join(DATA_DIR, "%s-labels-idx1-ubyte.gz" % prefix))
    # Preprocessing is exactly: u8 -> f32, divide by 255. No mean/std.
    x = images.astype(np.float32)[:, None, :, :] / np.float32(255.0)
    y = labels.astype(np.int64)
    return x, y


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)   # 16x14x14
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)   # 32x7x7
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def predict(model, x, batch=1000):
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(x[i:i + batch])))
    return torch.cat(out).numpy()


def save_tensor(arr, path, name):
    t = numpy_helper.from_array(np.ascontiguousarray(arr), name)
    with open(path, "wb") as f:
        f.write(t.SerializeToString())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)

    x_train, y_train = load("train")
    x_test, y_test = load("test")
    print("train %s test %s" % (x_train.shape, x_test.shape))

    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.RandomState(0)
    xt = torch.from_numpy(x_train)
    yt = torch.from_numpy(y_train)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.from_numpy(rng.permutation(len(x_train)))
        total = 0.0
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i:i + args.batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.eval()
        acc = (predict(model, x_test).argmax(1) == y_test).mean()
        print("epoch %d  loss %.4f  test acc %.4f  (%.0fs)"
              % (epoch + 1, total / len(x_train), acc, time.time() - t0), flush=True)

    model.eval()
    logits = predict(model, x_test)
    preds = logits.argmax(1)
    acc = (preds == y_test).mean()
    print("final test accuracy: %.4f (%d/%d)" % (acc, int((preds == y_test).sum()), len(y_test)))

    onnx_path = os.path.join(HERE, "model.onnx")
    dummy = torch.from_numpy(x_test[:1])
    torch.onnx.export(model, dummy, onnx_path, opset_version=13,
                      do_constant_folding=True,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    m = onnx.load(onnx_path)
    onnx.checker.check_model(m)
    print("exported %s; ops: %s" % (onnx_path, sorted({n.op_type for n in m.graph.node})))

    ds = os.path.join(HERE, "test_data_set_0")
    os.makedirs(ds, exist_ok=True)
    x16 = x_test[:16]
    with torch.no_grad():
        y16 = model(torch.from_numpy(x16)).numpy()
    save_tensor(x16, os.path.join(ds, "input_0.pb"), "input")
    save_tensor(y16, os.path.join(ds, "output_0.pb"), "logits")

    with open(os.path.join(HERE, "reference_predictions.txt"), "w") as f:
        f.write("".join("%d\n" % p for p in preds))


if __name__ == "__main__":
    main()
