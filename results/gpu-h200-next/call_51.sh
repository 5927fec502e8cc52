#!/bin/bash
# Session 29's first call (ask for an H200): call_49.sh's compiled tests first (three core changes of session 28
# have run on no GPU: the statistics fix, stochastic_rounding="auto", the tile-test refactor), then call_48.sh's
# H200 rows of the per-tile default, nearest and full-v, the skip-grain variants, the rank-0 tune sweep, and the
# paired convergence of nearest against stochastic 8-bit rounding over as many seeds as the time left allows
# (the table is rewritten after every run). Carry .whl13s. ~530 s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
timeout 120 python3 -m mango_cli bench gpu --out $R/step --parts step --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,-torch-path,-g0.5" --energy-window-s 2.0 > $R/step.log 2>&1
step step $?; cat $R/step/*.md >> $L 2>/dev/null
timeout 60 python3 - > $R/var.log 2>&1 <<PY
import sys
from benchmarks import gpu
keep = {("r0/b8/g0", "{}"), ("r0/b8/g0", "{'skip_nonfinite': False}"), ("r0/b8/g0", "{'stochastic_rounding': False}")}
gpu.VARIANTS[:] = [v for v in gpu.VARIANTS if "SKIP_GRAIN" in v[2] or (not v[2] and (v[0], str(v[1])) in keep)]
print(len(gpu.VARIANTS), "variants", flush=True)
sys.argv = ["mango", "bench", "gpu", "--out", "$R/var", "--parts", "variants"]
from mango_cli import run
run()
PY
step variants $?; cat $R/var/*.md >> $L 2>/dev/null
timeout 90 python3 -m mango_cli bench gpu --out $R/tune --parts tune > $R/tune.log 2>&1
step tune $?; cat $R/tune/*.md >> $L 2>/dev/null
left=$(( ${CALL_LIMIT:-540} - ($(date +%s)-t0) - 10 )); echo "left $left" >> $L
timeout $left python3 -m mango_cli bench gpu --out $R/conv --parts converge --seeds 4 --steps 600 \
  --optimizers "AdamW (fused),r0/b8/g0,-torch-path,-g0.5,-unchecked" > $R/conv.log 2>&1
step converge $?; cat $R/conv/*.md >> $L 2>/dev/null
finish
