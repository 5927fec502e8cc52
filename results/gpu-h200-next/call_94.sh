#!/bin/bash
# Session 41, for the next session's first call (carry .whl13p; CALL_LIMIT <= 560). Session 41 shipped the
# projection's norm sum from R = 64 up (fused.PROJ_NORMS_MIN_RANK = 64) without running that configuration on
# a GPU (calls 93 / 93b got no machine); call 92 ran the sum at every rank.
# 1. the compiled tests (`-m gpu` and test_fused.py);
# 2. rank 64 with and without the sum, and r4 / r32 as shipped (the pre-pass), 2 s windows;
# 3. where the sum stalls the R = 16 and 32 projections (s41/norm_profile.py: kernel device times);
# 4. setting changes, medians of three passes (--switch-repeats, new);
# 5. the grid with 2 s paired windows in what is left.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
OFF="PROJ_NORMS_MIN_RANK=1073741824"
timeout 100 python3 -m mango_cli bench gpu --out $R/var --parts variants --energy-window-s 2.0 \
  --optimizers "r64/b8/g0|,r64/b8/g0|$OFF,r64/b16/g1|,r64/b16/g1|$OFF,r4/b8/g0|,r32/b32/g1|" > $R/var.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null || tail -5 $R/var.log >> $L
timeout 60 python3 results/gpu-h200-next/s41/norm_profile.py > $R/norm-profile.log 2>&1
step norm-profile $?; grep -E "^r[0-9]" $R/norm-profile.log >> $L
switch s42
timeout $(left_s) python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 2.0 \
  --optimizers=-bnb,-torchao,-Flash,-GaLore,-APOLLO,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest,-full-v > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep "AdamW" $R/grid.log | tail -25 >> $L
finish
