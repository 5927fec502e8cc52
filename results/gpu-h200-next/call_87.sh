#!/bin/bash
# Session 40, after call 86 (carry .whl13p; CALL_LIMIT <= 560). The tree ships the 8-bit tile; the step part
# pairs each row's energy window with a fused-AdamW window right before it (energy_vs_adamw_paired, temp_C:
# calls 85-86 disagreed by 6-25 % on energy at equal time); the switch part prices a change in training steps.
# 1. test_fused.py compiled (the matrix_loads test fixed after call 86); 2. the setting-change table;
# 3. the whole grid with paired energy; 4. the fewer-instructions kernel against the landed one at the
# shipped 8-bit tile; 5. the peers beside four MangoAdamW rows in what is left.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
python3 -c "import transformers" 2>/dev/null || {
  mkdir -p /tmp/site/transformers/utils && touch /tmp/site/transformers/__init__.py /tmp/site/transformers/utils/__init__.py
  echo 'def require_version(requirement, hint=None): return None' > /tmp/site/transformers/utils/versions.py; }
timeout 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_fused.py > $R/fused-tests.log 2>&1
step fused-tests $?; grep -E "FAILED|ERROR|passed|failed" $R/fused-tests.log | tail -8 >> $L
switch s40
timeout 220 python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 1.0 \
  --optimizers=-bnb,-torchao,-Flash,-GaLore,-APOLLO,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep "AdamW" $R/grid.log | tail -25 >> $L
SHORT="r0/b8/g0|,r0/b8/g0|error_feedback=False,r0/b4/g0|"
var landed "$SHORT"
with_fewer_kernel var fewer "$SHORT"
left=$(left_s)
[ $left -ge 60 ] && { timeout $left python3 -m mango_cli bench gpu --out $R/peers --parts step --energy-window-s 1.0 \
  --optimizers "AdamW (fused),bnb,torchao,Flash,GaLore,APOLLO,r0/b8/g0,r0/b4/g0,r4/b8/g0,r64/b8/g0,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest,-no-EF,-g0." > $R/peers.log 2>&1
  step peers $?; cat $R/peers/*.md >> $L 2>/dev/null || grep -E "'optimizer'" $R/peers.log | tail -14 >> $L; }
finish
