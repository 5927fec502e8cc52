#!/bin/bash
# Session 22, issue 12: the compiled kernel tests (the _finite/CHECK refactor and the loosened r0/b4 test of
# session 21 have not run on a GPU), then the rank-0 rows checked and unchecked beside fused AdamW (energy),
# the unchecked variants, and the 1B rows. ~540 s on a fresh machine. Carry .whl13.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 230 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_fused.py tests/client/test_kernels.py \
  tests/client/test_draws.py tests/client/test_quant.py tests/client/test_convert.py tests/client/test_lowrank.py \
  tests/client/test_optimizer_compile.py > $R/tests.log 2>&1
step tests $?; tail -15 $R/tests.log >> $L
timeout 120 python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 0.3 \
  --optimizers "torch AdamW,MangoAdamW r0/,-torch-path,-g0.25,-g1" > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null
timeout 60 python3 -m mango_cli bench gpu --out $R/var --parts variants --optimizers "r0/b8/g0" > $R/variants.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null || grep "step_ms" $R/variants.log >> $L
left=$(( 540 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 60 ] && timeout $left python3 -m mango_cli bench gpu --out $R/g1b --parts step --model 1b --energy-window-s 0.3 \
  --optimizers "torch AdamW,MangoAdamW r0/b8/g0,-torch-path,-g0.5" > $R/step1b.log 2>&1
step 1b $?; cat $R/g1b/*.md >> $L 2>/dev/null; tail -3 $R/step1b.log >> $L
finish
