#!/bin/bash
# Session 39, for the next session's first call (carry .whl13p; CALL_LIMIT <= 560; not run in session 39: its
# device time was spent). Session 39's calls 83-84 landed on H100s; this one is meant for an H200, where
# the goals r0/b8 <= 0.75x and r0/b4 <= 0.8x were missed (0.96x, 0.90x in session 38):
# 1. the compiled tests (`pytest -m gpu`, test_fused.py): session 39 changed CholeskyQR2's check (it runs
#    inside the refresh's CUDA graph) and a change's random draws;
# 2. the rank-0 tile per width on this tree's kernel (call 84's rows: 256 / 512 / 1024, capped and not),
#    then 8 bits at 512 uncapped as it would ship (`fused.MATRIX_TILE_BY_BITS`), rank 0 and projected;
# 3. the 8- and 4-bit rows with the fewer-instructions kernel (s39/rank0_fewer_instructions.patch applied),
#    whose r0/b8 at 512 uncapped ran 0.656x on an H100 against 0.78x for the default;
# 4. where a change into a rank spends its ~21 ms (profiler tables of apply_setting and the first step);
# 5. the whole grid's step rows in what is left (the baseline of this card).
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
SHORT="r0/b8/g0|,r0/b8/g0|$T5,r0/b8/g0|error_feedback=False, $T5,r0/b4/g0|,r0/b4/g0|error_feedback=False"
var tiles "$TILE_ROWS,$TILE_MORE"
B="MATRIX_TILE_BY_BITS={8: (512, 0)}"
var bybits "r0/b8/g0|,r0/b8/g0|$B,r0/b8/g0|error_feedback=False,r0/b8/g0|error_feedback=False, $B,r4/b8/g0|,r4/b8/g0|$B,r64/b8/g0|,r64/b8/g0|$B"
with_fewer_kernel var fewer "$SHORT"
[ $(left_s) -ge 70 ] && { timeout 60 python3 -m benchmarks.step_probe --setting r0/b8/g0 --switch r4/b8/g0 > $R/switch-probe.log 2>&1
  step "switch probe" $?; grep -E "apply|first step|Self CPU|Self CUDA|^ *aten|^ *Name|triton|Memcpy|eigh|cholesky|solve|randn|copy_" \
    $R/switch-probe.log | head -70 >> $L; }
[ $(left_s) -ge 100 ] && grid_step -torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest
finish
