#!/bin/bash
# Session 39, after call 83 (carry .whl13p; CALL_LIMIT <= 330). Call 83's tune sweep (on an H100, with the
# fewer-instructions kernel) put r0/b8 at 512 values a program, one warp, no register cap, at 0.65x fused
# AdamW where the default 256 was 0.78x. This call, on this tree's kernel (the session-38 one):
# 1. the compiled conversion tests (the fused-chain test draws tensor by tensor now) and the tile tests;
# 2. the variants part on the rank-0 rows at tiles 256 / 512 / 1024, capped as now and not, beside fused
#    AdamW in the same table; a second pass of the 8- and 4-bit rows;
# 3. the same 8- and 4-bit rows with the fewer-instructions kernel (results/gpu-h200-next/s39/
#    triton_step_fewer.py swapped in) at 256 and 512.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_convert.py tests/client/test_fused.py -k "convert or tile" \
  > $R/tests.log 2>&1
step tests $?; grep -E "FAILED|ERROR|passed|failed" $R/tests.log | tail -8 >> $L
T5="MATRIX_TILE=512, MAX_REGS=0"; T10="MATRIX_TILE=1024, MAX_REGS=0"
ROWS="r0/b8/g0|,r0/b8/g0|MATRIX_TILE=512,r0/b8/g0|$T5,r0/b8/g0|$T10,r0/b8/g0|error_feedback=False,r0/b8/g0|error_feedback=False, $T5"
ROWS="$ROWS,r0/b4/g0|,r0/b4/g0|MATRIX_TILE=512,r0/b4/g0|$T5,r0/b4/g0|$T10,r0/b4/g0|error_feedback=False"
ROWS="$ROWS,r0/b4/g0|error_feedback=False, $T5,r0/b4/g0|error_feedback=False, $T10"
MORE="r0/b3/g0|,r0/b3/g0|$T5,r0/b2/g0|,r0/b2/g0|$T5,r0/b16/g0|,r0/b16/g0|$T5,r0/b32/g0|,r0/b32/g0|$T5"
SHORT="r0/b8/g0|,r0/b8/g0|$T5,r0/b4/g0|,r0/b4/g0|$T5,r0/b4/g0|error_feedback=False, $T5"
var() {  # var NAME ROWS: the variants part on ROWS (within CALL_LIMIT, 150 s at most)
  local left=$(left_s); [ $left -ge 30 ] || return
  timeout $(( left < 150 ? left : 150 )) python3 -m mango_cli bench gpu --out $R/var-$1 --parts variants --energy-window-s 1.0 \
    --optimizers "$2" > $R/var-$1.log 2>&1
  step "variants $1" $?; cat $R/var-$1/*.md >> $L 2>/dev/null || tail -5 $R/var-$1.log >> $L
}
var tiles "$ROWS,$MORE"
var tiles2 "$SHORT"
K=client/compression/kernels/triton_step.py; cp $K /tmp/triton_step_head.py
cp results/gpu-h200-next/s39/triton_step_fewer.py $K; var fewer "$SHORT"; cp /tmp/triton_step_head.py $K
finish
