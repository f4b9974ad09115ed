#!/usr/bin/env node
// ort_bench.js - ONNX Runtime (npm onnxruntime-node, CPU execution provider)
// peer of `zinfer bench`: same model, batch, thread count and measurement.
//
//   node tools/bench/ort_bench.js MODEL.onnx BATCH THREADS SECONDS
//
// stdout: one CSV line, the same columns as `zinfer bench --csv`:
//   onnxruntime,<model>,<batch>,<threads>,<samples/s>,<p50 ms>,<p99 ms>
// stderr: "kernel: ..." (what computes, for the table) and "info: ..." lines.
//
// Inputs are random floats, uniform [0,1) (integer inputs: zeros), with the
// first symbolic dim of every input bound to BATCH and any other symbolic
// dim to 1, as zinfer bench does. 3 warm-up runs + 1, then session.run() is
// timed one call at a time until SECONDS have passed; percentiles are
// nearest-rank, as in zinfer bench.
'use strict';

const path = require('path');

function die(msg) {
  process.stderr.write(`ort_bench: ${msg}\n`);
  process.exit(2);
}

function pct(sorted, p) {
  if (sorted.length === 0) return 0;
  let idx = Math.ceil((p / 100) * sorted.length) - 1;
  if (idx < 0) idx = 0;
  if (idx >= sorted.length) idx = sorted.length - 1;
  return sorted[idx];
}

const TYPED = {
  float32: Float32Array,
  float64: Float64Array,
  int32: Int32Array,
  int64: BigInt64Array,
  int8: Int8Array,
  uint8: Uint8Array,
  bool: Uint8Array,
};

async function main() {
  const [model, batchS, threadsS, secondsS] = process.argv.slice(2);
  if (!model || !batchS || !threadsS || !secondsS) {
    die('usage: node ort_bench.js MODEL.onnx BATCH THREADS SECONDS');
  }
  const batch = Number(batchS);
  const threads = Number(threadsS);
  const seconds = Number(secondsS);
  if (!Number.isInteger(batch) || batch < 1) die('BATCH must be an integer >= 1');
  if (!Number.isInteger(threads) || threads < 1) die('THREADS must be an integer >= 1');
  if (!(seconds > 0)) die('SECONDS must be > 0');

  let ort;
  try {
    ort = require('onnxruntime-node');
  } catch (e) {
    die(`cannot load onnxruntime-node (run: cd ${path.relative(process.cwd(), __dirname) || '.'}` +
        ` && npm ci --ignore-scripts): ${e.message.split('\n')[0]}`);
  }

  const session = await ort.InferenceSession.create(model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  });

  const feeds = {};
  for (const meta of session.inputMetadata) {
    if (!meta.isTensor) die(`input '${meta.name}' is not a tensor`);
    const Ctor = TYPED[meta.type];
    if (!Ctor) die(`input '${meta.name}' has unsupported type ${meta.type}`);
    let bound = false;
    const dims = meta.shape.map((d) => {
      if (typeof d === 'number' && d >= 0) return d;
      const v = bound ? 1 : batch;
      bound = true;
      return v;
    });
    const n = dims.reduce((a, b) => a * b, 1);
    const data = new Ctor(n);
    if (Ctor === Float32Array || Ctor === Float64Array) {
      for (let i = 0; i < n; i++) data[i] = Math.random();
    }
    feeds[meta.name] = new ort.Tensor(meta.type, data, dims);
  }

  for (let w = 0; w < 4; w++) await session.run(feeds);

  const lat = [];
  const t0 = process.hrtime.bigint();
  let t = t0;
  do {
    const t1 = process.hrtime.bigint();
    await session.run(feeds);
    t = process.hrtime.bigint();
    lat.push(Number(t - t1) / 1e6);
  } while (Number(t - t0) / 1e9 < seconds);
  const total = Number(t - t0) / 1e9;
  lat.sort((a, b) => a - b);
  const sps = (lat.length * batch) / total;

  const ver = (ort.env.versions && ort.env.versions.node) || '?';
  process.stderr.write(`kernel: ORT ${ver} CPU EP, MLAS (built-in, own ISA dispatch)\n`);
  process.stderr.write(`info: onnxruntime-node ${ver}, node ${process.version}, ` +
                       `${lat.length} runs in ${total.toFixed(2)} s\n`);
  process.stdout.write(`onnxruntime,${model},${batch},${threads},${sps.toFixed(1)},` +
                       `${pct(lat, 50).toFixed(3)},${pct(lat, 99).toFixed(3)}\n`);
  await session.release();
}

main().catch((e) => die(e && e.message ? e.message : String(e)));
