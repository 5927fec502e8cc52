"""Session 10: what the H200 traces of call 1 say, per workload and controller (recorded values, no model).

Table 1: final interval loss relative to the uncompressed run of the same seed at the same step (l_T, the
reward's loss unit), the mean of l_t over the run, the mean state bytes per parameter, the mean interval
time and energy relative to the reference run's (wall clock and NVML on the H200, the training step and the
control overhead together).
Table 2, per workload and objective preset: the users' objective J (envs.reward.objective_cost: the final
l_T and the mean memory, energy and time ratios) of AdamW (the reference), of the best recorded static
setting, and a floor no controller can go below if it cannot make a training interval cheaper than the
cheapest recorded one nor train below the uncompressed loss: J_floor = w_energy * min(energy) + w_time *
min(time) (memory and loss terms at 0). headroom = J_best_static / J_floor - 1: a controller that beats the
best static setting by 10 % needs headroom >= 10 %.
Run: python results/gpu-h200-2026-12-04-s10/trace_table.py [trace file]
"""

from __future__ import annotations

import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, ".")
from envs.objectives import OBJECTIVE_PRESETS
from envs.reward import objective_cost
from envs.traces import load_traces

ts = load_traces(sys.argv[1] if len(sys.argv) > 1 else "envs/traces/gpu-h200-s10.jsonl.gz")
rows = defaultdict(list)
print("| workload | controller | seed | final l_T | mean l_t | state B/param | time / ref | energy / ref |")
print("|---|---|---|---|---|---|---|---|")
for e in ts.episodes:
    ref = ts.references[(e.workload, e.seed)]
    n = e.length
    lt = e.columns["loss"][1:] / ref.columns["loss"][1:n] - 1.0
    dense = ts.workloads[e.workload]["dense_state_bytes"]
    mem = float(np.mean(e.columns["state_bytes"][1:])) / dense
    t = float(np.mean(e.columns["interval_s"][1:]) / np.mean(ref.columns["interval_s"][1:n]))
    en = float(np.mean(e.columns["energy_j"][1:]) / np.mean(ref.columns["energy_j"][1:n]))
    rows[e.workload].append((e.controller, lt[-1], mem, en, t))
    print(
        f"| {e.workload} | {e.controller} | {e.seed} | {lt[-1]:+.4f} | {lt.mean():+.4f} | {8 * mem:.2f} "
        f"| {t:.2f} | {en:.2f} |"
    )
print()
print("| workload | preset | J AdamW | best static (J) | J floor | headroom over the best static |")
print("|---|---|---|---|---|---|")
for w, eps in rows.items():
    for preset, weights in OBJECTIVE_PRESETS.items():
        wv = np.asarray(weights.as_tuple() if hasattr(weights, "as_tuple") else weights, dtype=np.float64)
        js = {c: float(objective_cost(wv, lt, m, en, t)) for c, lt, m, en, t in eps if c.startswith("static")}
        best = min(js, key=js.get)
        floor = wv[2] * min(x[3] for x in eps) + wv[3] * min(x[4] for x in eps)
        print(
            f"| {w} | {preset} | {wv[1] + wv[2] + wv[3]:.3f} | "
            f"{best.removeprefix('static:')} ({js[best]:.3f}) | {floor:.3f} | {js[best] / floor - 1:+.1%} |"
        )
