"""The held-setting lines of ``agents.evaluate.held_static_best`` over a ``mango eval`` results.json,
per preset, with the per-workload picks (session 38's addition) - for evaluations run before it.

``python results/eval-s38/per_workload_oracle.py DIR/results.json LEARNED...``: results.json keeps each
entrant's first timeline only, so every entrant not named in LEARNED is taken to have held that timeline's
setting in every episode (true of ``static``, ``static-best`` and one-setting ``--schedules``; do not pass
an evaluation whose other entrants change setting).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from agents.evaluate import ControllerResult, held_static_best


def main(path: str, learned: list[str]) -> None:
    data = json.loads(Path(path).read_text())
    n_w = len(data["workloads"])
    for preset, res in data["results"].items():
        out = {}
        for name, r in res.items():
            ret = np.asarray(r["returns"], dtype=float)
            sched = [] if name in learned else [list(r["timeline"])] * ret.size
            out[name] = ControllerResult(returns=ret, terms=np.asarray(r["terms"]), schedules=sched)
        print(f"\n**{preset}** ({', '.join(data['workloads'])}; {len(data['seeds'])} episodes each)\n")
        print("\n".join(held_static_best(out, learned, n_w)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
