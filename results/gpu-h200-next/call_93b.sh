#!/bin/bash
# Session 41, call 93b (carry .whl13p; CALL_LIMIT ~140): call 93 cut to what the session's last device time
# holds: test_fused.py compiled, and rank 64 with and without the projection's norm sum (2 s windows).
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 80 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_fused.py > $R/fused-tests.log 2>&1
step fused-tests $?; grep -E "FAILED|ERROR|passed|failed" $R/fused-tests.log | tail -8 >> $L
OFF="PROJ_NORMS_MIN_RANK=1073741824"
timeout $(left_s) python3 -m mango_cli bench gpu --out $R/var --parts variants --energy-window-s 2.0 \
  --optimizers "r64/b8/g0|,r64/b8/g0|$OFF,r4/b8/g0|,r32/b32/g1|" > $R/var.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null || grep "step_ms" $R/var.log >> $L
finish
