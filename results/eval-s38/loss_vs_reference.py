"""Per workload and controller of ``mango record`` trace files: the training loss per interval relative to the
uncompressed reference run of the same job seed, in percent, mean over the distinct job seeds (lower is
better; interval 0 is played uncompressed by the recorder), with the spread of the last three intervals'
mean over the jobs.

``python results/eval-s38/loss_vs_reference.py results/eval-s38/probe`` (a trace file or a folder of
them, read by :func:`envs.traces.load_traces`). An episode that repeats a
(workload, controller, job seed) already read is skipped: the recorder replays a job exactly, so a repeat is
not evidence (``probe-s10`` holds each of its nine episodes three times).
"""

from __future__ import annotations

import sys
from collections import defaultdict

import numpy as np

from envs.traces import load_traces


def main(path: str) -> None:
    traces = load_traces(path)
    rel: dict[tuple[str, str], dict[int, np.ndarray]] = defaultdict(dict)
    for e in traces.episodes:
        if e.seed in rel[(e.workload, e.controller)]:
            continue
        loss, base = e.columns["loss"], traces.references[(e.workload, e.seed)].columns["loss"]
        n = min(loss.size, base.size)
        rel[(e.workload, e.controller)][e.seed] = 100 * (loss[:n] - base[:n]) / base[:n]
    width = max(a.size for v in rel.values() for a in v.values())
    head = " | ".join(str(i) for i in range(width))
    print(f"| workload | controller | jobs | {head} | last 3: mean (min, max over jobs) |")
    print("|---|---|---|" + "---|" * (width + 1))
    for (w, c), by_seed in sorted(rel.items()):
        v = list(by_seed.values())
        mean = np.mean(v, axis=0)
        tail = [float(a[-3:].mean()) for a in v]
        cells = " | ".join(f"{x:+.1f}" for x in mean)
        spread = f"{np.mean(tail):+.1f} ({min(tail):+.1f}, {max(tail):+.1f})"
        print(f"| {w} | {c} | {len(v)} | {cells} | {spread} |")


if __name__ == "__main__":
    main(sys.argv[1])
