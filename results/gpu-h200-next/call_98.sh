#!/bin/bash
# Session 42, for the next session's first call (carry .whl13p; CALL_LIMIT <= 560), best on an H200: all of
# call_97.sh and the shipped core's grid and 1B rows in one call (device starts are scarce).
# 1. the compiled tests (`-m gpu` and test_fused.py: the 4-bit pairs test is new);
# 2. the 4-bit rows with and without fused.FOUR_BIT_PAIRS (off), r0/b2/g0 at a 96-register cap, 2 s windows;
# 3. the grid with 2 s paired windows; 4. the 1B rows by exact names (`=NAME`: session 42's substring filter
# picked extra rows and ran out of time before its table).
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
timeout 100 python3 -m mango_cli bench gpu --out $R/var --parts variants --energy-window-s 2.0 \
  --optimizers "r0/b2/g0|,r0/b2/g0|MAX_REGS=96,r0/b4/g0|,r0/b4/g1|,r8/b4/g0|,r0/b4/g0|FOUR_BIT_PAIRS=True,r0/b4/g1|FOUR_BIT_PAIRS=True,r8/b4/g0|FOUR_BIT_PAIRS=True" > $R/var.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null || grep -E "^\{" $R/var.log | tail -8 >> $L
timeout 200 python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 2.0 \
  --optimizers=-bnb,-torchao,-Flash,-GaLore,-APOLLO,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest,-full-v > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep "AdamW" $R/grid.log | tail -25 >> $L
B="=torch AdamW (fused),=MangoAdamW r0/b8/g0,=MangoAdamW r0/b4/g0,=MangoAdamW r0/b2/g0,=MangoAdamW r0/b4/g1"
B="$B,=MangoAdamW r4/b8/g0,=MangoAdamW r32/b32/g1,=MangoAdamW r64/b8/g0,=MangoAdamW r64/b16/g1"
timeout $(left_s) python3 -m mango_cli bench gpu --out $R/b1 --model 1b --parts step --energy-window-s 1.0 \
  --optimizers "$B" > $R/b1.log 2>&1
step b1 $?; cat $R/b1/*.md >> $L 2>/dev/null || grep -E "^\{" $R/b1.log | tail -12 >> $L
finish
