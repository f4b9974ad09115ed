#!/usr/bin/python3
"""Plot the benchmark suite's CSV (tools/bench/bench-suite.sh).

    /usr/bin/python3 tools/bench/plot.py SUITE.csv OUT.png

One row of two panels per model:
  left:  samples/s against batch size, one line per runtime
         (zinfer-engine, zinfer-pipeline K=1/2/3, onnxruntime, pytorch,
         pytorch-gloo K=2);
  right: samples/s against the number of pipeline segments K, one colour
         per batch size: zinfer-pipeline K=1,2,3 (solid), zinfer-engine as a
         dashed horizontal line, pytorch-gloo as a cross at K=2.
Log scale on both samples/s axes. Rows marked unavailable are left out.
Needs Debian's python3-matplotlib (Agg backend, no display).
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

PLAIN = FuncFormatter(lambda v, _pos: "%g" % v)


def plain_log_y(ax):
    """Log y axis labelled 20, 100, 1000 rather than 2x10^1, 10^2, 10^3."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PLAIN)
    lo, hi = ax.get_ylim()
    # few decades: label the minor ticks too, else there would be almost none
    ax.yaxis.set_minor_formatter(PLAIN if hi / max(lo, 1e-12) < 30 else NullFormatter())

STYLE = {  # runtime label -> (colour, line style, marker)
    "zinfer-engine": ("black", "-", "o"),
    "zinfer-pipeline K=1": ("tab:blue", "-", "s"),
    "zinfer-pipeline K=2": ("tab:blue", "--", "^"),
    "zinfer-pipeline K=3": ("tab:blue", ":", "v"),
    "onnxruntime": ("tab:green", "-", "D"),
    "pytorch": ("tab:red", "-", "P"),
    "pytorch-gloo K=2": ("tab:red", "--", "X"),
}
BATCH_COLOURS = ["tab:purple", "tab:orange", "tab:cyan", "tab:brown", "tab:olive", "tab:pink"]


def label(row):
    rt = row["runtime"]
    if rt == "zinfer-pipeline":
        return "zinfer-pipeline K=%s" % row["segments"]
    if rt == "pytorch-gloo":
        return "pytorch-gloo K=2"
    return rt


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: plot.py SUITE.csv OUT.png\n")
        return 2
    with open(argv[1], newline="") as f:
        rows = [r for r in csv.DictReader(f)
                if r.get("samples_per_s") and r["runtime"] != "zinfer-broker"]
    if not rows:
        sys.stderr.write("plot.py: no measured rows in %s\n" % argv[1])
        return 1
    models = []
    for r in rows:
        if r["model"] not in models:
            models.append(r["model"])
    batches = sorted({int(r["batch"]) for r in rows})

    from matplotlib.lines import Line2D
    fig, axes = plt.subplots(len(models), 2, figsize=(15, 3.8 * len(models)), squeeze=False)
    for i, m in enumerate(models):
        mr = [r for r in rows if r["model"] == m]
        # left: samples/s vs batch
        ax = axes[i][0]
        for lab, (col, ls, mk) in STYLE.items():
            pts = sorted((int(r["batch"]), float(r["samples_per_s"])) for r in mr if label(r) == lab)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=col, linestyle=ls,
                        marker=mk, label=lab)
        ax.set_xscale("log", base=2)
        plain_log_y(ax)
        ax.set_xticks(batches)
        ax.set_xticklabels([str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel("samples/s")
        ax.set_title("%s: throughput vs batch size" % m)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        # right: samples/s vs segments
        ax = axes[i][1]
        for j, b in enumerate(batches):
            col = BATCH_COLOURS[j % len(BATCH_COLOURS)]
            br = [r for r in mr if int(r["batch"]) == b]
            pipe = sorted((int(r["segments"]), float(r["samples_per_s"]))
                          for r in br if r["runtime"] == "zinfer-pipeline")
            if pipe:
                ax.plot([p[0] for p in pipe], [p[1] for p in pipe], color=col, marker="o")
            eng = [float(r["samples_per_s"]) for r in br if r["runtime"] == "zinfer-engine"]
            if eng:
                ax.axhline(eng[0], color=col, linestyle="--", linewidth=1)
            gl = [float(r["samples_per_s"]) for r in br if r["runtime"] == "pytorch-gloo"]
            if gl:
                ax.plot([2], gl[:1], color=col, marker="x", markersize=10, linestyle="none",
                        markeredgewidth=2)
        plain_log_y(ax)
        ax.set_xticks([1, 2, 3])
        ax.set_xlim(0.7, 3.3)
        ax.set_xlabel("segments K (processes in the pipeline; K=3: 3 threads on 2 cores)")
        ax.set_ylabel("samples/s")
        ax.set_title("%s: throughput vs segments" % m)
        ax.grid(True, which="both", alpha=0.3)
        handles = [Line2D([], [], color=BATCH_COLOURS[j % len(BATCH_COLOURS)], linewidth=6,
                          label="batch %d" % b) for j, b in enumerate(batches)]
        handles += [Line2D([], [], color="gray", marker="o", label="zinfer-pipeline K"),
                    Line2D([], [], color="gray", linestyle="--", label="zinfer-engine (a)"),
                    Line2D([], [], color="gray", marker="x", markersize=9, markeredgewidth=2,
                           linestyle="none", label="pytorch-gloo (K=2)")]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0)
    fig.suptitle("zinfer benchmark suite (same model, batch and cores per runtime)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(argv[2], dpi=90)
    print("plot.py: wrote %s" % argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
