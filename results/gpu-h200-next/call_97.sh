#!/bin/bash
# Session 42, third call (carry .whl13p; short: CALL_LIMIT about 200). The 4-bit code bytes loaded once a pair
# (fused.FOUR_BIT_PAIRS, off by default): 1. test_fused.py compiled (its pairs test); 2. the 4-bit variants
# with and without it, 2 s windows (r0/b4/g1 is the one grid row above AdamW's energy, call 96); r0/b2/g0 at a
# 96-register cap (with the promise it spills 48 B at 72, none at 96: benchmarks.sass --max-regs 96).
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 60 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_fused.py > $R/fused-tests.log 2>&1
step fused-tests $?; grep -E "FAILED|ERROR|passed|failed" $R/fused-tests.log | tail -8 >> $L
timeout $(left_s) python3 -m mango_cli bench gpu --out $R/var --parts variants --energy-window-s 2.0 \
  --optimizers "r0/b2/g0|,r0/b2/g0|MAX_REGS=96,r0/b4/g0|,r0/b4/g1|,r8/b4/g0|,r0/b4/g0|FOUR_BIT_PAIRS=True,r0/b4/g1|FOUR_BIT_PAIRS=True,r8/b4/g0|FOUR_BIT_PAIRS=True" > $R/var.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null || grep -E "^\{" $R/var.log | tail -8 >> $L
finish
