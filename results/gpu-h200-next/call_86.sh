#!/bin/bash
# Session 40, after call 85 (an H100 again; carry .whl13p; CALL_LIMIT <= 560). The tree ships the 8-bit tile
# (fused.MATRIX_TILE_BY_BITS = {8: (512, 0)}: r0/b8/g0 0.696x against 0.774x for 256 in call 85's table).
# 1. the compiled tests at the new default; 2. the whole grid's step rows; 3. GaLore and APOLLO's 300-step
# loss beside projected settings (issue 12's list; never run: call 82's part 3); 4. the 1B rows in what is left.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
python3 -c "import transformers" 2>/dev/null || {
  mkdir -p /tmp/site/transformers/utils && touch /tmp/site/transformers/__init__.py /tmp/site/transformers/utils/__init__.py
  echo 'def require_version(requirement, hint=None): return None' > /tmp/site/transformers/utils/versions.py; }
gpu_tests
timeout 150 python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 1.0 \
  --optimizers=-bnb,-torchao,-Flash,-GaLore,-APOLLO,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep "AdamW" $R/grid.log | tail -25 >> $L
left=$(left_s)
[ $left -ge 90 ] && { timeout $(( left - 70 < 220 ? left - 70 : 220 )) python3 -m mango_cli bench gpu --out $R/conv --parts converge --seeds 1 --steps 300 \
  --optimizers "AdamW (fused),GaLore,APOLLO,r4/b8/g0,r32/b4/g0,r64/b8/g0,r0/b8/g0,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest,-no-EF,-g0.,-full-v" > $R/conv.log 2>&1
  step converge $?; cat $R/conv/*.md >> $L 2>/dev/null || grep -E "AdamW|GaLore|APOLLO|val_loss" $R/conv.log | tail -12 >> $L; }
left=$(left_s)
[ $left -ge 50 ] && { timeout $left python3 -m mango_cli bench gpu --out $R/b1 --model 1b --parts step --energy-window-s 1.0 \
    --optimizers "torch AdamW (fused),r0/b8/g0,r0/b4/g0,r4/b8/g0,r64/b8/g0,-torch-path,-unchecked,-full-v,-nearest,-factored,-g0.5,-no-EF,-nf4,-stochastic" \
    > $R/b1.log 2>&1
  step 1b $?; cat $R/b1/*.md >> $L 2>/dev/null || grep "AdamW" $R/b1.log | tail -10 >> $L; }
finish
