"""Session 39: every row of the FSDP2 whole-basis comparison (tests/client/test_fsdp.py's 'rounded' job),
parameters gathered from 2 gloo ranks against one process's, per phase and tensor: how far each moved and
the largest difference. Usage, from the repository root:
``TRITON_INTERPRET=1 python results/cpu-s39/fsdp_rows.py``."""

import json
import sys
import tempfile
from pathlib import Path

import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tests is a package there

import tests.client.test_fsdp as t
from policy_service.launch import free_port

if __name__ == "__main__":
    out = Path(tempfile.mkdtemp())
    mp.spawn(t._group_worker, args=(2, free_port(), str(out)), nprocs=2)
    for rows in json.loads(Path(f"{out}/rounded.0").read_text())["phases"]:
        for r in rows:
            ratio = r["max"] / r["moved"]
            print(f"{r['phase']} {r['shape']} moved {r['moved']:.4f} max {r['max']:.2e} ratio {ratio:.4f}")
