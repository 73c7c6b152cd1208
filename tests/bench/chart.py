#!/usr/bin/env python3
"""Bar chart of the benchmark's cost ratios (variant / no trigger), one panel per
workload, with the per-round range as error bars and DESIGN.md's targets.

usage: chart.py SUMMARY.tsv OUT.png ROWS REPS
SUMMARY.tsv: workload, title, label, cost, cost_lo, cost_hi, baseline (t/f), diagnostic (t/f)
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Upper bound of the cost ratio DESIGN.md allows pg_integrity, per workload.
TARGETS = {"update": 1.4, "insert_select": 1.05, "copy": 1.05, "pgb_soft_delete": 1.2, "purge_deleted": 1.5}


def main(summary, out, rows, reps):
    workloads = {}
    with open(summary, newline="") as f:
        for w, title, label, cost, lo, hi, baseline, diagnostic in csv.reader(f, delimiter="\t"):
            entry = workloads.setdefault(w, {"title": title, "bars": []})
            entry["bars"].append(
                (label + (" (reference)" if diagnostic == "t" else ""), float(cost),
                 float(lo or cost), float(hi or cost), label.startswith("pg_integrity"), baseline == "t")
            )

    heights = [len(v["bars"]) + 1.6 for v in workloads.values()]
    fig, axes = plt.subplots(len(workloads), 1, figsize=(10, 0.42 * sum(heights) + 1),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (w, entry) in zip(axes[:, 0], workloads.items()):
        bars = list(reversed(entry["bars"]))
        ys = range(len(bars))
        costs = [b[1] for b in bars]
        err = [[max(0.0, b[1] - b[2]) for b in bars], [max(0.0, b[3] - b[1]) for b in bars]]
        colors = ["#9e9e9e" if b[5] else "#1f77b4" if b[4] else "#ff7f0e" for b in bars]
        ax.barh(ys, costs, xerr=err, color=colors, capsize=3, height=0.65)
        ax.set_yticks(list(ys))
        ax.set_yticklabels([b[0] for b in bars], fontsize=8)
        for y, c in zip(ys, costs):
            ax.text(c, y, f"  {c:.2f}×", va="center", fontsize=8)
        ax.axvline(1.0, color="black", linewidth=0.8)
        if w in TARGETS:
            ax.axvline(TARGETS[w], color="red", linestyle="--", linewidth=1,
                       label=f"target for pg_integrity ≤ {TARGETS[w]}×")
            ax.legend(loc="upper right", fontsize=7, framealpha=0.9)
        ax.set_xlim(0, max(max(b[3] for b in bars), TARGETS.get(w, 0)) * 1.18)
        ax.set_ylim(-0.6, len(bars) - 0.4 + (0.9 if w in TARGETS else 0))
        ax.set_title(entry["title"], fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=8)
    axes[-1, 0].set_xlabel("time per row / transaction relative to no trigger (lower is better)\n"
                           "bars: median over the rounds; whiskers: smallest and largest ratio within one round", fontsize=8)
    fig.suptitle(f"pg_integrity benchmark — {rows} rows, {reps} rounds", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:5])
