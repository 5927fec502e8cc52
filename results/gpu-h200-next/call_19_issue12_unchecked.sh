#!/bin/bash
# Session 21, issue 12: rank 0 without the gradient pre-pass (MangoAdamW(skip_nonfinite=False)). The compiled
# kernel tests of the fused step; the rank-0 rows of the step table (checked and unchecked, one run, beside
# fused AdamW, energy); the unchecked variants; the 1B rows of AdamW and r0/b8/g0 (checked and unchecked).
# ~300 s on a warm machine. Carry .whl13.
source results/gpu-h200-next/preamble.sh
timeout 150 python3 -m pytest -q -n 4 -p no:cacheprovider tests/client/test_fused.py > $R/tests.log 2>&1
step tests $?; tail -3 $R/tests.log >> $L
timeout 120 python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 0.3 \
  --optimizers "torch AdamW,MangoAdamW r0/,-torch-path,-g0.25,-g1" > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null
timeout 60 python3 -m mango_cli bench gpu --out $R/var --parts variants --optimizers "r0/b8/g0" > $R/variants.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null || grep "step_ms" $R/variants.log >> $L
left=$(( 420 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 60 ] && timeout $left python3 -m mango_cli bench gpu --out $R/g1b --parts step --model 1b --energy-window-s 0.3 \
  --optimizers "torch AdamW,MangoAdamW r0/b8/g0,-torch-path,-g0.5" > $R/step1b.log 2>&1
step 1b $?; cat $R/g1b/*.md >> $L 2>/dev/null; tail -3 $R/step1b.log >> $L
finish
