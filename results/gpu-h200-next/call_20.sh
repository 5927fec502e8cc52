#!/bin/bash
# Session 21, first call (device starts were scarce: the most decisive runs first, ~570 s). Issue 13: the
# memory-first floor cell for the candidate s20j52 on gpt-85m (the static r64/b4/g0 run in the same demo;
# the default s18c33 measured 0.340/0.333 on the H200 in session 19 and 0.335/0.326 on the H100 in session
# 20), then balanced. Issue 12: the rank-0 rows of the step table, checked and unchecked (skip_nonfinite).
# Then call_21.sh on the warm machine. Carry .whl13.
source results/gpu-h200-next/preamble.sh
C=${CAND:-s20j52}
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
P="--policy $C --policy-dir results/policy-$C"
DEMO_TIMEOUT=230 demo_mf gpt85m-$C r64/b4/g0 $P
timeout 110 python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 0.3 \
  --optimizers "torch AdamW,MangoAdamW r0/,-torch-path,-g0.25,-g1" > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null
timeout 70 python3 -m pytest -q -n 4 -p no:cacheprovider tests/client/test_fused.py -k "unchecked or matches_torch" \
  > $R/tests.log 2>&1
step tests $?; tail -3 $R/tests.log >> $L
left=$(( 560 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 100 ] && DEMO_TIMEOUT=$left demo_obj bal-gpt85m-$C balanced r64/b4/g0 $P
finish
