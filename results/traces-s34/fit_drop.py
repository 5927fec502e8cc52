"""Refit with cpu-train5, dropping old-core episodes that play 2-3 bits (factored v then)."""
import sys
import numpy as np
from envs import fit as F
orig = F._prepare
def prep(ts, cfg):
    out = orig(ts, cfg)
    dropped = 0
    for wd in out.values():
        keep = []
        for ep in wd.eps:
            fmb = F._trace_factor_max_bits(ep.trace.meta or ts.workloads[wd.name])
            bits = F._BITS[ep.actions[:, 1]]
            if fmb >= 2 and (bits <= 3).any():
                dropped += 1
                continue
            keep.append(ep)
        wd.eps = keep
    print(f"dropped {dropped} old-core 2-3-bit episodes", file=sys.stderr)
    return out
F._prepare = prep
sys.exit(F.main(sys.argv[1:]))
