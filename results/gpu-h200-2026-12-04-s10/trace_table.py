"""Session 10: what the H200 traces of call 1 say, per workload and controller (recorded values, no model).

Final interval loss relative to the uncompressed run of the same seed at the same step (l_T, the reward's loss
unit), the mean of l_t over the run, the mean state bytes per parameter and the mean interval time relative
to the reference run's (wall clock on the H200, the training step and the control overhead together).
Run: python results/gpu-h200-2026-12-04-s10/trace_table.py [trace file]
"""

from __future__ import annotations

import sys

import numpy as np

sys.path.insert(0, ".")
from envs.traces import load_traces  # noqa: E402

ts = load_traces(sys.argv[1] if len(sys.argv) > 1 else "envs/traces/gpu-h200-s10.jsonl.gz")
print("| workload | controller | seed | final l_T | mean l_t | state B/param | interval time / ref |")
print("|---|---|---|---|---|---|---|")
for e in ts.episodes:
    ref = ts.references[(e.workload, e.seed)]
    loss, rloss = e.columns["loss"][1:], ref.columns["loss"][1 : e.length]
    lt = loss / rloss - 1.0
    nparam = ts.workloads[e.workload]["dense_state_bytes"] / 8
    bpp = float(np.mean(e.columns["state_bytes"][1:])) / nparam
    t = float(np.mean(e.columns["interval_s"][1:]) / np.mean(ref.columns["interval_s"][1 : e.length]))
    print(f"| {e.workload} | {e.controller} | {e.seed} | {lt[-1]:+.4f} | {lt.mean():+.4f} | {bpp:.2f} | {t:.2f} |")
