"""Score three surrogate fits on one episode set of today's core (session 34).

The set: the episodes of ``envs/traces/cpu-train5.jsonl.gz`` that every fit holds out (every fourth per
workload: the fit shipped before session 34 never saw the file; the two refits fitted on the other three
quarters), plus session 31's H100 traces (today's 4-8-bit core; all three fits fitted on them). Reproduce:
``git show ee309e3:envs/traces/surrogate.json > /tmp/before.json; python -m mango_cli fit
--no-current-low-bits --out /tmp/all.json; python results/traces-s34/fair_eval.py /tmp/before.json
/tmp/all.json envs/traces/surrogate.json``."""

import sys

import numpy as np

from envs import fit as F
from envs.surrogate_model import SurrogateModel
from envs.traces import load_traces

ts = load_traces()
new = load_traces("envs/traces/cpu-train5.jsonl.gz")
gpu = load_traces("envs/traces/gpu-h100-s31.jsonl.gz")
new_keys = {(e.workload, e.seed, e.controller, float(e.columns["loss"][-1])) for e in new.episodes}
gpu_keys = {(e.workload, e.seed, e.controller, float(e.columns["loss"][-1])) for e in gpu.episodes}
cfg = F.FitConfig()
data = F._prepare(ts, cfg)
tails = {n: F._tables(wd, ts, cfg, None)["tail"] for n, wd in data.items()}
for wd in data.values():
    keep = []
    for e in wd.eps:
        key = (e.workload, e.seed, e.trace.controller, float(e.trace.columns["loss"][-1]))
        today_cpu = key in new_keys and e.held_out
        today_gpu = key in gpu_keys
        if today_cpu or today_gpu:
            keep.append(e)
    wd.eps = keep
print({n: len(wd.eps) for n, wd in data.items() if wd.eps})
cols = ("lterm_abs", "final_abs")
print("| fit | group | episodes | loss-term MAE | final l_T MAE | tau balanced | tau loss-first |")
print("|---|---|---|---|---|---|---|")
for label, path in zip(("before session 34", "refit, every episode", "refit, old 2-3 bits left out (shipped)"), sys.argv[1:4], strict=True):
    model = SurrogateModel.load(path)
    beta = np.concatenate([model.coef["beta_a"], model.coef["beta_b"]])
    for g, row in F.evaluate(model, data, tails, beta, cfg).items():
        vals = " | ".join(f"{row[c]:.4f}" for c in cols)
        print(
            f"| {label} | {g} | {row['episodes']} | {vals} | {row['tau[balanced]']:+.2f} | {row['tau[loss-first]']:+.2f} |"
        )
