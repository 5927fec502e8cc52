#!/bin/bash
# Session 39, after call 84 (carry .whl13p; CALL_LIMIT <= 150). Where a change into a rank spends its ~21 ms
# now that it dispatches a quarter fewer ops (the profiler's host and device tables of apply_setting and
# the first step), and a second reading of the 8-bit tile rows on this tree's kernel and the fewer one.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 60 python3 -m benchmarks.step_probe --setting r0/b8/g0 --switch r4/b8/g0 > $R/switch-probe.log 2>&1
step "switch probe" $?; grep -E "apply|first step|Self CPU|Self CUDA|^-|^ *aten|^ *cuda|^ *Name|triton|Memcpy|eigh|cholesky|solve|randn|_to_copy|copy_" $R/switch-probe.log | head -70 >> $L
T5="MATRIX_TILE=512, MAX_REGS=0"
SHORT="r0/b8/g0|,r0/b8/g0|$T5,r0/b8/g0|error_feedback=False,r0/b8/g0|error_feedback=False, $T5"
var() {
  local left=$(left_s); [ $left -ge 25 ] || return
  timeout $(( left < 60 ? left : 60 )) python3 -m mango_cli bench gpu --out $R/var-$1 --parts variants --energy-window-s 0.5 \
    --optimizers "$2" > $R/var-$1.log 2>&1
  step "variants $1" $?; cat $R/var-$1/*.md >> $L 2>/dev/null || tail -5 $R/var-$1.log >> $L
}
K=client/compression/kernels/triton_step.py; cp $K /tmp/triton_step_head.py
cp results/gpu-h200-next/s39/triton_step_fewer.py $K; var fewer "$SHORT"; cp /tmp/triton_step_head.py $K
var head "$SHORT"
finish
