#!/bin/bash
# Session 41, call 93 (carry .whl13p; CALL_LIMIT <= 420): call 92 found the projection's norm sum a win at
# rank 64 and twice the step at R = 16 and 32, so it runs from fused.PROJ_NORMS_MIN_RANK = 64 up only.
# 1. test_fused.py compiled; 2. rank 64 with and without it, 2 s windows; 3. the grid in what is left.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_fused.py > $R/fused-tests.log 2>&1
step fused-tests $?; grep -E "FAILED|ERROR|passed|failed" $R/fused-tests.log | tail -8 >> $L
OFF="PROJ_NORMS_MIN_RANK=1073741824"
ROWS="r64/b8/g0|,r64/b8/g0|$OFF,r64/b16/g1|,r64/b16/g1|$OFF"
timeout 100 python3 -m mango_cli bench gpu --out $R/var --parts variants --energy-window-s 2.0 --optimizers "$ROWS" > $R/var.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null || tail -5 $R/var.log >> $L
timeout $(left_s) python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 2.0 \
  --optimizers=-bnb,-torchao,-Flash,-GaLore,-APOLLO,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest,-full-v > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep "AdamW" $R/grid.log | tail -25 >> $L
finish
