"""Recorded vs simulated final loss term of static 2-4-bit episodes on the CPU traces of today's core
(session 34): ``python results/traces-s34/charges.py MODEL.json`` against the fit shipped before session 34
(``git show ee309e3:envs/traces/surrogate.json > /tmp/before.json``). Session 35 on its H100 traces:
``python results/traces-s34/charges.py MODEL.json envs/traces/gpu-h100-s35.jsonl.gz /tmp/s34.json`` (the
fit shipped in session 34: ``git show bd4c6d5:envs/traces/surrogate.json > /tmp/s34.json``)."""

import collections
import sys

import numpy as np

from envs import fit as F
from envs.traces import load_traces

new = load_traces(sys.argv[2] if len(sys.argv) > 2 else "envs/traces/cpu-train5.jsonl.gz")
rec = collections.defaultdict(list)
for e in new.episodes:
    ref = new.references.get((e.workload, e.seed))
    if (
        ref is None
        or e.length != ref.length
        or e.controller.removeprefix("static:")
        not in ("r0/b3/g0", "r0/b2/g0", "r0/b4/g0", "r16/b3/g0.75", "r8/b2/g0.25")
    ):
        continue
    l, r = e.columns["loss"][-1], ref.columns["loss"][-1]
    rec[(e.workload, e.controller.removeprefix("static:"))].append((l - r) / r)
F.LATE_SETTINGS = ("r0/b8/g0", "r0/b4/g0", "r0/b3/g0", "r0/b2/g0", "r16/b3/g0.75", "r8/b2/g0.25")
models = {
    "the earlier fit": F.SurrogateModel.load(sys.argv[3] if len(sys.argv) > 3 else "/tmp/before.json"),
    "the model given": F.SurrogateModel.load(sys.argv[1]),
}
names = sorted({w for w, _ in rec})
print("| workload | setting | recorded final l_T (n) | " + " | ".join(models) + " |")
print("|---|---|---|" + "---|" * len(models))
errs = collections.defaultdict(list)
for w in names:
    for lab in F.LATE_SETTINGS[1:]:
        if (w, lab) not in rec:
            continue
        v = rec[(w, lab)]
        sims = []
        for k, m in models.items():
            tab = m.tables.get(w)
            if tab is None:
                sims.append("n/a")
                continue
            rho = m.rho if tab.rho is None else tab.rho
            s = F._static_loss_terms(tab, rho, lab, lab)[-1]
            errs[(k, lab)].append(abs(s - np.mean(v)))
            sims.append(f"{s:+.4f}")
        print(f"| {w} | {lab} | {np.mean(v):+.4f} ({len(v)}) | " + " | ".join(sims) + " |")
print()
for (k, lab), e in sorted(errs.items()):
    print(f"MAE {k} {lab}: {np.mean(e):.4f} over {len(e)} workloads")
