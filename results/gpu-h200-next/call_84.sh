#!/bin/bash
# Session 39, after call 83 (carry .whl13p; CALL_LIMIT <= 330). Call 83's tune sweep (on an H100, with the
# fewer-instructions kernel) put r0/b8 at 512 values a program, one warp, no register cap, at 0.65x fused
# AdamW where the default 256 was 0.78x. This call, on this tree's kernel (the session-38 one):
# 1. the compiled conversion tests (the fused-chain test draws tensor by tensor now) and the tile tests;
# 2. the variants part on the rank-0 rows at tiles 256 / 512 / 1024, capped as now and not, beside fused
#    AdamW in the same table; a second pass of the 8- and 4-bit rows;
# 3. the same 8- and 4-bit rows with the fewer-instructions kernel (results/gpu-h200-next/s39/
#    rank0_fewer_instructions.patch applied) at 256 and 512.
# (Its `var` helper and tile rows moved to preamble.sh after it ran: the same rows, `TILE_ROWS,TILE_MORE`.)
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_convert.py tests/client/test_fused.py -k "convert or tile" \
  > $R/tests.log 2>&1
step tests $?; grep -E "FAILED|ERROR|passed|failed" $R/tests.log | tail -8 >> $L
SHORT="r0/b8/g0|,r0/b8/g0|$T5,r0/b4/g0|,r0/b4/g0|$T5,r0/b4/g0|error_feedback=False, $T5"
var tiles "$TILE_ROWS,$TILE_MORE"
var tiles2 "$SHORT"
with_fewer_kernel var fewer "$SHORT"
finish
