"""Each held-out workload's own headroom schedule against static-best, real jobs and surrogate, per workload.

``python results/eval-s37/own_schedules.py results/eval-s37/eval-mf memory-first SCHED_W1 SCHED_W2 SCHED_W3``:
reads DIR/results.json (training backend) and DIR/surrogate/results.json (the eval's surrogate check of the
same episodes) and prints, per workload, the paired difference (95 % CI, t over seeds) of the schedule made
for that workload (the i-th SCHED for the i-th workload) and of every learned entrant to static-best, as
relative J (positive: better than static-best).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from agents.stats import mean_ci


def main(d: str, preset: str, schedules: list[str]) -> None:
    for name in ("results.json", "surrogate/results.json"):
        data = json.loads((Path(d) / name).read_text())
        res, ws = data["results"][preset], data["workloads"]
        n = len(data["seeds"])
        print(f"{name} ({preset})")
        for i, w in enumerate(ws):
            rows = slice(i * n, (i + 1) * n)
            base = np.asarray(res["static-best"]["returns"][rows])
            cells = [f"static-best J {-base.mean():.4f}"]
            for key in [f"schedule:{schedules[i]}", *data["args"]["compare"]]:
                key = key.split("=")[0]
                dm, dh = mean_ci(np.asarray(res[key]["returns"][rows]) - base)
                scale = 100 / abs(base.mean())
                cells.append(f"{key}: {scale * dm:+.1f}% (± {scale * dh:.1f})")
            print(f"  {w}: " + " | ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
