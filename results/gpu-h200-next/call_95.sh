#!/bin/bash
# Session 42, first call (carry .whl13p; CALL_LIMIT <= 560). New since any GPU run: the alignment promise
# of the projection and matrix kernels (fused.PROJ_ALIGN / MATRIX_ALIGN: 16-byte accesses where the host
# checked the addresses), the norm sum's second load below R = 64 (PROJ_NORMS_RELOAD_BELOW), and everything
# call_94.sh was to run first (PROJ_NORMS_MIN_RANK = 64, the group's huge-norm mark, one sample buffer).
# 1. the compiled tests (`-m gpu` and test_fused.py);
# 2. variants with 2 s windows: as shipped, without the promise, the norm sum's forms;
# 3. the grid with 2 s paired windows;
# 4. kernel device times of the norm sum (s41/norm_profile.py) and setting changes, if time is left.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
OFF="PROJ_NORMS_MIN_RANK=1073741824"
timeout 200 python3 -m mango_cli bench gpu --out $R/var --parts variants --energy-window-s 2.0 \
  --optimizers "r0/b8/g0|,r0/b4/g0|,r0/b4/g1|,r0/b2/g0|,r0/b8/g0.5|,r0/b8/g0|MATRIX_ALIGN=False,r0/b4/g0|MATRIX_ALIGN=False,r0/b4/g1|MATRIX_ALIGN=False,r0/b2/g0|MATRIX_ALIGN=False,r0/b8/g0.5|MATRIX_ALIGN=False,r4/b8/g0|,r32/b32/g1|,r64/b8/g0|,r64/b16/g1|,r16/b3/g0.75|,r4/b8/g0|PROJ_ALIGN=False,r32/b32/g1|PROJ_ALIGN=False,r64/b8/g0|PROJ_ALIGN=False,r64/b16/g1|PROJ_ALIGN=False,r64/b8/g0|PROJ_ALIGN=False, MATRIX_ALIGN=False,r4/b8/g0|PROJ_NORMS_MIN_RANK=0,r4/b8/g0|PROJ_NORMS_MIN_RANK=0, PROJ_NORMS_RELOAD_BELOW=0,r32/b32/g1|PROJ_NORMS_MIN_RANK=0,r32/b32/g1|PROJ_NORMS_MIN_RANK=0, PROJ_NORMS_RELOAD_BELOW=0,r16/b3/g0.75|PROJ_NORMS_MIN_RANK=0,r64/b8/g0|$OFF,r64/b8/g0|PROJ_NORMS_RELOAD_BELOW=128" > $R/var.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null || tail -5 $R/var.log >> $L
G=$(( $(left_s) - 75 )); [ $G -gt 240 ] && G=240
timeout $G python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 2.0 \
  --optimizers=-bnb,-torchao,-Flash,-GaLore,-APOLLO,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest,-full-v > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep "AdamW" $R/grid.log | tail -25 >> $L
timeout $(( $(left_s) > 60 ? 60 : $(left_s) )) python3 results/gpu-h200-next/s41/norm_profile.py > $R/norm-profile.log 2>&1
step norm-profile $?; grep -E "^r[0-9]" $R/norm-profile.log >> $L
finish
