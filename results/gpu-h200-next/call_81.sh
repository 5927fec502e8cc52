#!/bin/bash
# Session 38 (carry .whl13p: .whl13s plus torchao 0.18.0, flashoptim 0.1.4, apollo-torch 1.0.3 and
# bitsandbytes 0.50.2 with only its CUDA 13 and CPU libraries, 17 MB; CALL_LIMIT <= 560). Issue 12 in one call:
# 1. the compiled tests (`pytest -m gpu`, tests/client/test_fused.py);
# 2. the whole grid's step rows beside fused AdamW (the error-feedback-free 4-bit row kept);
# 3. the peers beside fused AdamW and four MangoAdamW rows, same machine (bitsandbytes, torchao compiled,
#    FlashOptim, GaLore, APOLLO; apollo-torch imports `transformers.utils.versions.require_version` only,
#    a version check: a stub module stands in where transformers is absent);
# 4. the 1B step rows; 5. the setting-change table.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
python3 -c "import transformers" 2>/dev/null || {
  mkdir -p /tmp/site/transformers/utils && touch /tmp/site/transformers/__init__.py /tmp/site/transformers/utils/__init__.py
  echo 'def require_version(requirement, hint=None): return None' > /tmp/site/transformers/utils/versions.py; }
gpu_tests
timeout 200 python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 1.0 \
  --optimizers=-bnb,-torchao,-Flash,-GaLore,-APOLLO,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep "AdamW" $R/grid.log | tail -25 >> $L
left=$(left_s)
[ $left -ge 100 ] && { timeout $(( left < 200 ? left - 60 : 140 )) python3 -m mango_cli bench gpu --out $R/peers --parts step --energy-window-s 1.0 \
  --optimizers "AdamW (fused),bnb,torchao,Flash,GaLore,APOLLO,r0/b8/g0,r0/b4/g0,r4/b8/g0,r64/b8/g0,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest,-no-EF,-g0." > $R/peers.log 2>&1
  step peers $?; cat $R/peers/*.md >> $L 2>/dev/null || grep -E "AdamW|Error" $R/peers.log | tail -20 >> $L; }
[ $(left_s) -ge 30 ] && switch new
if [ $(left_s) -ge 60 ]; then
  timeout $(left_s) python3 -m mango_cli bench gpu --out $R/b1 --model 1b --parts step --energy-window-s 1.0 \
    --optimizers "torch AdamW (fused),r0/b8/g0,r0/b4/g0,r64/b8/g0,r16/b3/g0.75,-torch-path,-unchecked,-full-v,-nearest,-factored,-g0.5,-no-EF,-nf4,-stochastic" \
    > $R/b1.log 2>&1
  step 1b $?; cat $R/b1/*.md >> $L 2>/dev/null || grep "AdamW" $R/b1.log | tail -10 >> $L
fi
finish
