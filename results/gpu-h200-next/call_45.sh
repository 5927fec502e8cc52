#!/bin/bash
# Session 28's second call. Issue 12: fused.SKIP_GRAIN = "tile" is the default now (call 44 timed it on an
# H200 at 0.91x fused AdamW against 1.03x for the per-tensor rule): (1) the GPU suite and every fused test
# compiled (call 44's one failure was the test's: it took the NaN's tile for the first at the compiled
# 256-value tile), (2) the variants rows against SKIP_GRAIN=tensor and the unchecked rows, (3) the step rows
# with a 2 s energy window. Issue 13: (4) the shipped policy's demo on the GPU's default model (gpt-85m, the
# default statics) under PRESETS (default "time-first loss-first memory-first"), one seed each, while time is
# left (CALL_LIMIT s in all, default 540). Carry .whl13s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider -m gpu tests --ignore=tests/policy_service/test_fuzz.py \
  --ignore=tests/policy_service/test_hardening.py > $R/gpu-tests.log 2>&1
step gpu-tests $?; grep -E "FAILED|ERROR|passed|failed" $R/gpu-tests.log | tail -8 >> $L
timeout 120 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_fused.py > $R/fused-tests.log 2>&1
step fused-tests $?; grep -E "FAILED|ERROR|passed|failed" $R/fused-tests.log | tail -8 >> $L
timeout 120 python3 - > $R/var.log 2>&1 <<PY
import sys
from benchmarks import gpu
keep = {("r0/b8/g0", "{}"), ("r0/b8/g0.5", "{}"), ("r0/b8/g0", "{'skip_nonfinite': False}"),
        ("r0/b8/g0", "{'error_feedback': False}"), ("r0/b8/g0", "{'skip_nonfinite': False, 'error_feedback': False}"),
        ("r0/b4/g0", "{'factor_second_moment': False}"), ("r0/b4/g0", "{}")}
gpu.VARIANTS[:] = [v for v in gpu.VARIANTS if "SKIP_GRAIN" in v[2] or (not v[2] and (v[0], str(v[1])) in keep)]
print(len(gpu.VARIANTS), "variants", flush=True)
sys.argv = ["mango", "bench", "gpu", "--out", "$R/var", "--parts", "variants"]
from mango_cli import run
run()
PY
step variants $?; cat $R/var/*.md >> $L 2>/dev/null
timeout 100 python3 -m mango_cli bench gpu --out $R/step --parts step --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,-torch-path" --energy-window-s 2.0 > $R/step.log 2>&1
step step $?; cat $R/step/*.md >> $L 2>/dev/null
for obj in ${PRESETS:-time-first loss-first memory-first}; do
  left=$(( ${CALL_LIMIT:-540} - ($(date +%s)-t0) )); echo "left $left" >> $L
  [ $left -gt 110 ] && SEEDS=1 DEMO_TIMEOUT=$left demo_obj $obj-gpt85m $obj "r0/b8/g0,r0/b4/g0,r64/b4/g0"
done
finish
