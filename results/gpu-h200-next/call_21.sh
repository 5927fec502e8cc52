#!/bin/bash
# Session 21, second call on the warm machine (~560 s): issue 13's default s18c33 beside the candidate on
# gpt-85m memory-first (this device's baseline) and the candidate on lm-medium memory-first; issue 12's
# compiled tests of the fused step (the unchecked kernels), the 1B rows, and the unchecked variants.
source results/gpu-h200-next/preamble.sh
C=${CAND:-s20j52}
P="--policy $C --policy-dir results/policy-$C"
DEMO_TIMEOUT=130 demo_mf gpt85m-s18c33 r64/b4/g0 --policy s18c33 --policy-dir results/policy-s18c33
DEMO_TIMEOUT=150 demo_mf lmmed-$C r64/b4/g0 --model lm-medium --steps 600 --batch-size 32 $P
timeout 120 python3 -m pytest -q -n 4 -p no:cacheprovider tests/client/test_fused.py > $R/tests.log 2>&1
step tests $?; tail -3 $R/tests.log >> $L
left=$(( 520 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 60 ] && timeout $left python3 -m mango_cli bench gpu --out $R/g1b --parts step --model 1b --energy-window-s 0.3 \
  --optimizers "torch AdamW,MangoAdamW r0/b8/g0,-torch-path,-g0.5" > $R/step1b.log 2>&1
step 1b $?; cat $R/g1b/*.md >> $L 2>/dev/null; tail -3 $R/step1b.log >> $L
finish
