#!/bin/bash
# Session 41, call 92 (carry .whl13p; CALL_LIMIT <= 560): the projection adds the gradient norms
# (fused.PROJ_NORMS; call 91's profile: the norm pre-pass read the gradient for 0.168 ms of a rank-64 step).
# 1. the compiled tests (`-m gpu`, test_fused.py with the new test_projection_adds_the_norms_the_pre_pass_would);
# 2. variants: PROJ_NORMS on / off on the projected rows that miss the energy goal and two that do not, 2 s windows;
# 3. the grid with 2 s paired windows in what is left.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
ROWS="r64/b8/g0|,r64/b8/g0|PROJ_NORMS=False,r32/b32/g1|,r32/b32/g1|PROJ_NORMS=False,r64/b16/g1|,r64/b16/g1|PROJ_NORMS=False"
ROWS="$ROWS,r4/b8/g0|,r4/b8/g0|PROJ_NORMS=False,r16/b3/g0.75|,r16/b3/g0.75|PROJ_NORMS=False"
timeout 150 python3 -m mango_cli bench gpu --out $R/var --parts variants --energy-window-s 2.0 --optimizers "$ROWS" > $R/var.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null || tail -5 $R/var.log >> $L
timeout $(left_s) python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 2.0 \
  --optimizers=-bnb,-torchao,-Flash,-GaLore,-APOLLO,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep "AdamW" $R/grid.log | tail -25 >> $L
finish
