#!/bin/bash
# Prepared in session 27, not run (no device time left). Issue 12: (1) the compiled tests of fused.SKIP_GRAIN
# = "tile" (a non-finite tile skipped instead of its tensor; no gradient pre-pass for the full-v rank-0
# launches) and the whole GPU suite, (2) its variants rows against the default and the unchecked rows, (3) the
# step rows with a 2 s energy window on whichever card comes (an H200 figure is still owed for the session-27
# defaults). ~300 s. Carry .whl13s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider -m gpu tests --ignore=tests/policy_service/test_fuzz.py \
  --ignore=tests/policy_service/test_hardening.py > $R/gpu-tests.log 2>&1
step gpu-tests $?; tail -2 $R/gpu-tests.log >> $L
timeout 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_fused.py -k "tile_grain or skip_grain or nonfinite or unchecked" > $R/tile-tests.log 2>&1
step tile-tests $?; tail -2 $R/tile-tests.log >> $L
timeout 150 python3 - > $R/var.log 2>&1 <<PY
import sys
from benchmarks import gpu
keep = {("r0/b8/g0", "{}"), ("r0/b8/g0.5", "{}"), ("r0/b8/g0", "{'skip_nonfinite': False}"),
        ("r0/b8/g0", "{'error_feedback': False}"), ("r0/b8/g0", "{'skip_nonfinite': False, 'error_feedback': False}"),
        ("r0/b8/g0.5", "{'skip_nonfinite': False}"), ("r0/b4/g0", "{'factor_second_moment': False}"),
        ("r0/b4/g0", "{'factor_second_moment': False, 'skip_nonfinite': False}")}
gpu.VARIANTS[:] = [v for v in gpu.VARIANTS if "SKIP_GRAIN" in v[2] or (not v[2] and (v[0], str(v[1])) in keep)]
print(len(gpu.VARIANTS), "variants", flush=True)
sys.argv = ["mango", "bench", "gpu", "--out", "$R/var", "--parts", "variants"]
from mango_cli import run
run()
PY
step variants $?; cat $R/var/*.md >> $L 2>/dev/null
timeout 100 python3 -m mango_cli bench gpu --out $R/step --parts step --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,-torch-path" --energy-window-s 2.0 > $R/step.log 2>&1
step step $?; cat $R/step/*.md >> $L 2>/dev/null
finish
