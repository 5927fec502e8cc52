"""Per workload and preset of a ``mango eval`` results.json: each entrant's mean J (lower is better).

``python results/eval-s37/per_workload.py DIR/results.json``: a table per preset, one row per entrant, one
column per workload (the episodes are workload-major), the best entrant of each column marked with ``*``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(path: str) -> None:
    data = json.loads(Path(path).read_text())
    ws, n = data["workloads"], len(data["seeds"])
    for preset, res in data["results"].items():
        print(f"\n**{preset}** (mean J per workload, {n} episodes each; lower is better)\n")
        print("| entrant | " + " | ".join(ws) + " |")
        print("|---|" + "---|" * len(ws))
        j = {k: [-np.mean(v["returns"][i * n : (i + 1) * n]) for i in range(len(ws))] for k, v in res.items()}
        best = [min(j, key=lambda k, i=i: j[k][i]) for i in range(len(ws))]
        for k, row in j.items():
            cells = [f"{x:.4f}{' *' if best[i] == k else ''}" for i, x in enumerate(row)]
            print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
