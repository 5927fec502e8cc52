#!/bin/bash
# Session 39 (carry .whl13p; CALL_LIMIT <= 560). The rank-0 kernel with fewer instructions a value
# (static SASS 131 -> 89 at r0/b8/g0, `python -m benchmarks.sass`): inline-PTX reciprocal and division, one
# saturating conversion for the 8-bit code, one FFMA for the rounding offset, unmasked 8-bit code loads,
# stats rows masked once. Those paths compile only on a GPU (PRMT), so:
# 1. the compiled fused, conversion and low-rank tests;
# 2. A/B step rows beside fused AdamW: this tree's kernel, session 38's (results/gpu-h200-next/s39/
#    triton_step_s38.py swapped in), this tree's again; one table each, ratios within each table;
# 3. the setting-change table (one random draw per shape group, a leaner CholeskyQR2);
# 4. Nsight Compute on one warm matrix_step_kernel at r0/b8/g0 (this tree);
# 5. the tile / warps / register sweep (`--parts tune`) in what is left.
# Ran (on an H100) with the fewer-instructions kernel in client/compression/kernels/triton_step.py, kept since
# as results/gpu-h200-next/s39/rank0_fewer_instructions.patch, and s39/triton_step_s38.py as the kernel of
# commit 1463b34 (to rerun: apply the patch to the tree, then `git show 1463b34:client/compression/kernels/
# triton_step.py > results/gpu-h200-next/s39/triton_step_s38.py`).
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_fused.py tests/client/test_convert.py \
  tests/client/test_lowrank.py > $R/fused-tests.log 2>&1
step fused-tests $?; grep -E "FAILED|ERROR|passed|failed" $R/fused-tests.log | tail -12 >> $L
K=client/compression/kernels/triton_step.py; cp $K /tmp/triton_step_new.py
ROWS="AdamW (fused),r0/b8/g0,r0/b4/g0,r0/b2/g0,r0/b32/g0,r4/b8/g0,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest,-full-v,-g0.5,-g1,-g0.25"
ab() {  # ab NAME: the step rows with the kernel in place now (130 s at most, within CALL_LIMIT)
  local left=$(left_s); [ $left -ge 40 ] || return
  timeout $(( left < 130 ? left : 130 )) python3 -m mango_cli bench gpu --out $R/ab-$1 --parts step --energy-window-s 1.0 --optimizers "$ROWS" > $R/ab-$1.log 2>&1
  step "ab $1" $?; cat $R/ab-$1/*.md >> $L 2>/dev/null || tail -5 $R/ab-$1.log >> $L
}
ab new1
cp results/gpu-h200-next/s39/triton_step_s38.py $K; ab old; cp /tmp/triton_step_new.py $K
ab new2
[ $(left_s) -ge 30 ] && switch s39
[ $(left_s) -ge 60 ] && timeout 60 ncu --kernel-name matrix_step_kernel --launch-skip 10 --launch-count 1 --section SpeedOfLight \
  --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis --section WarpStateStats \
  python3 -m benchmarks.step_probe --setting r0/b8/g0 --steps 20 > $R/ncu-r0b8.log 2>&1
step "ncu r0/b8/g0" $?
grep -E "Duration|DRAM Throughput|Memory Throughput|Compute \(SM\)|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Size|Grid Size|Waves|Stall|Warp Cycles" $R/ncu-r0b8.log >> $L
left=$(left_s)
[ $left -ge 40 ] && { timeout $left python3 -m mango_cli bench gpu --out $R/tune --parts tune > $R/tune.log 2>&1
  step tune $?; cat $R/tune/*.md >> $L 2>/dev/null || grep "vs_fused" $R/tune.log >> $L; }
finish
