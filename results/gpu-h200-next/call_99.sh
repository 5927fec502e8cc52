#!/bin/bash
# Session 43 (carry .whl13p; CALL_LIMIT <= 560), best on an H200: the shipped core with fused.FOUR_BIT_PAIRS
# on (call 98 on an H100: r0/b4/g1 energy 1.022 -> 0.983 with it). 1. the compiled tests (the pairs now the
# default path; the quantizer's device seed is new); 2. a setting change's cost (the switch part: a stochastic
# change no longer reads its keys to the host); 3. the 4-bit rows with and without the pairs, 2 s windows;
# 4. the grid with 2 s paired windows; 5. the 1B rows by exact names.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
switch s43
P=FOUR_BIT_PAIRS=False
timeout 100 python3 -m mango_cli bench gpu --out $R/var --parts variants --energy-window-s 2.0 \
  --optimizers "r0/b4/g0|,r0/b4/g0|$P,r0/b4/g1|,r0/b4/g1|$P,r8/b4/g0|,r8/b4/g0|$P,r0/b4/g0|error_feedback=False,r0/b4/g0|error_feedback=False, $P" > $R/var.log 2>&1
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
