"""Session 15: the surrogate's final loss term l_T of a static run per GPU workload, for each model file given
(before and after the refit on the session-15 H200 traces); trace_table.md has what the H200 recorded.

Run: python results/gpu-h200-2026-12-04-s15/statics.py /tmp/surrogate-before.json envs/traces/surrogate.json
"""

from __future__ import annotations

import sys

sys.path.insert(0, ".")
from envs.fit import _static_loss_terms
from envs.surrogate_model import SurrogateModel

SETTINGS = ("r0/b4/g0", "r64/b4/g0", "r64/b4/g0.5", "r32/b8/g1", "r16/b8/g1", "r32/b4/g1", "r32/b8/g0")
SETTINGS += ("r16/b4/g0", "r16/b8/g0")
for path in sys.argv[1:]:
    m = SurrogateModel.load(path)
    print(path)
    for n in ("gpu-gpt85m-cosine", "gpu-lm-medium-cosine", "gpu-gpt85m-val-linear"):
        tab = m.tables[n]
        rho = m.rho if tab.rho is None else tab.rho
        row = [f"{s} {_static_loss_terms(tab, rho, s, s)[-1]:+.3f}" for s in SETTINGS]
        print(" ", n[:18], " | ".join(row))
