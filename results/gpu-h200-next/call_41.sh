#!/bin/bash
# Session 27's first call (call_40 did not run in session 26): (1) issue 12's NF4 probe, (2) the compiled NF4
# tests, (3) `pytest -m gpu tests` (first since session 24: sessions 25-26's core changes untested compiled),
# (4) the r0/b4 NF4 search rows ("cells" vs "compare") and (5) the step rows with a 2 s energy window (call 36's
# 0.3 s window gave r0/b8 1.18x AdamW's energy, session 24's 2 s 0.86x), (6) s24L47 on the held-out
# gpt-wide-100m seeds 2 and 3 (one a demo) under balanced if time is left (CALL_LIMIT s in all, default 540). Carry .whl13s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 60 python3 results/gpu-h200-next/nf4_probe.py > $R/nf4_probe.log 2>&1
step nf4-probe $?; cat $R/nf4_probe.log >> $L
timeout 60 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_fused.py tests/client/test_nf4_search.py \
  -k "nf4 or matches_torch" > $R/nf4-tests.log 2>&1
step nf4-tests $?; tail -3 $R/nf4-tests.log >> $L
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider -m gpu tests > $R/gpu-tests.log 2>&1
step gpu-tests $?; grep -E "FAILED|ERROR|passed|failed" $R/gpu-tests.log | tail -15 >> $L
timeout 150 python3 - > $R/var.log 2>&1 <<PY
import sys
from benchmarks import gpu
keep = {("r0/b4/g0", "{}"), ("r0/b4/g0", "{'error_feedback': False}"), ("r0/b4/g0", "{'skip_nonfinite': False}"),
        ("r0/b4/g0", "{'stochastic_rounding': False}"), ("r0/b8/g0", "{}")}
gpu.VARIANTS[:] = [v for v in gpu.VARIANTS if "NF4_SEARCH" in v[2] or (not v[2] and (v[0], str(v[1])) in keep)]
print(len(gpu.VARIANTS), "variants", flush=True)
sys.argv = ["mango", "bench", "gpu", "--out", "$R/var", "--parts", "variants"]
from mango_cli import run
run()
PY
step variants $?; cat $R/var/*.md >> $L 2>/dev/null
timeout 120 python3 -m mango_cli bench gpu --out $R/step --parts step --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,-torch-path" --energy-window-s 2.0 > $R/step.log 2>&1
step step $?; cat $R/step/*.md >> $L 2>/dev/null
P="--policy s24L47 --policy-dir results/policy-s24L47"
for seed in 2 3; do
  left=$(( ${CALL_LIMIT:-540} - ($(date +%s)-t0) )); echo "left $left" >> $L
  [ $left -gt 120 ] && SEEDS=1 DEMO_TIMEOUT=$left demo_obj bal-wide100m-s24L47-s$seed balanced r0/b4/g0 --model gpt-wide-100m --seed $seed $P
done
finish
