#!/bin/bash
# Session 38, after call 81 (carry .whl13p; CALL_LIMIT <= 560). Not run in session 38: taken back mid-run, then
# no machine. .whl13p is .whl13s plus `pip download --no-deps` of torchao, flashoptim, apollo-torch and
# bitsandbytes (its wheel cut to the libbitsandbytes_cuda130/132 and cpu libraries: the carry limit).
# On the H200 of call 81 r0/b8/g0 stepped at 0.96x fused AdamW (0.75x on the H100s): AdamW is 25 % faster on
# the H200's memory, the fused step is not.
# 1. the tile / warps / register-cap sweep (`--parts tune`, back-to-back steps: never run on an H200 since it
#    timed that way);
# 2. Nsight Compute on one warm matrix_step_kernel launch at r0/b8/g0 and r0/b4/g0 (speed of light,
#    occupancy, memory);
# 3. GaLore and APOLLO's 300-step loss beside the projected settings (issue 12).
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
python3 -c "import transformers" 2>/dev/null || {
  mkdir -p /tmp/site/transformers/utils && touch /tmp/site/transformers/__init__.py /tmp/site/transformers/utils/__init__.py
  echo 'def require_version(requirement, hint=None): return None' > /tmp/site/transformers/utils/versions.py; }
timeout 200 python3 -m mango_cli bench gpu --out $R/tune --parts tune > $R/tune.log 2>&1
step tune $?; cat $R/tune/*.md >> $L 2>/dev/null || grep "vs_fused" $R/tune.log >> $L
for s in r0/b8/g0 r0/b4/g0; do
  n=${s//\//_}
  timeout 60 ncu --kernel-name matrix_step_kernel --launch-skip 10 --launch-count 1 --section SpeedOfLight \
    --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
    python3 -m benchmarks.step_probe --setting $s --steps 20 > $R/ncu-$n.log 2>&1
  step "ncu $s" $?
  grep -E "Duration|DRAM Throughput|Memory Throughput|Compute \(SM\)|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Size|Grid Size|Waves" $R/ncu-$n.log >> $L
done
left=$(left_s)
[ $left -ge 60 ] && { timeout $left python3 -m mango_cli bench gpu --out $R/conv --parts converge --seeds 1 --steps 300 \
  --optimizers "AdamW (fused),GaLore,APOLLO,r64/b8/g0,r32/b4/g0,r8/b4/g0,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest,-no-EF,-g0." > $R/conv.log 2>&1
  step converge $?; cat $R/conv/*.md >> $L 2>/dev/null || grep -E "AdamW|GaLore|APOLLO" $R/conv.log | tail -10 >> $L; }
finish
