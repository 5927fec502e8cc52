#!/bin/bash
# Session 42, second call (carry .whl13p). Ships PROJ_NORMS_MIN_RANK = 0 (call 95: the norm sum with the
# second load below R = 64 beat the pre-pass at ranks 4-32). 1. test_fused.py compiled at that default;
# 2. kernel device times with and without PROJ_ALIGN (s42/align_profile.py: rank 64 read slower with it);
# 3. the grid with 2 s paired windows; 4. the 1B rows in what is left.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_fused.py > $R/fused-tests.log 2>&1
step fused-tests $?; grep -E "FAILED|ERROR|passed|failed" $R/fused-tests.log | tail -8 >> $L
timeout 70 python3 results/gpu-h200-next/s42/align_profile.py > $R/align-profile.log 2>&1
step align-profile $?; grep -E "^r[0-9]" $R/align-profile.log >> $L
timeout 200 python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 2.0 \
  --optimizers=-bnb,-torchao,-Flash,-GaLore,-APOLLO,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest,-full-v > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep "AdamW" $R/grid.log | tail -25 >> $L
timeout $(left_s) python3 -m mango_cli bench gpu --out $R/b1 --model 1b --parts step --energy-window-s 1.0 \
  --optimizers "torch AdamW (fused),r0/b8/g0,r0/b4/g0,r0/b2/g0,r0/b4/g1,r4/b8/g0,r32/b32/g1,r64/b8/g0,r64/b16/g1,r16/b3/g0.75" > $R/b1.log 2>&1
step b1 $?; cat $R/b1/*.md >> $L 2>/dev/null || grep "AdamW" $R/b1.log | tail -12 >> $L
finish
