#!/bin/bash
# GPU call 1 (2026-12-03): conversion-free fused step + norm folded into P^T G: variants sweep, ncu of the
# rank-0 matrix kernel at 8 and 4 bits, compiled fused/kernel tests.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
L=$OUT/run.log; t0=$(date +%s); END=570
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L; nvidia-smi --query-gpu=name,power.limit,clocks.max.sm --format=csv >> $L
step 230 python3 -m mango_cli bench gpu --out $OUT/v --parts variants >> $OUT/bench.log 2>&1
S="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section ComputeWorkloadAnalysis --section InstructionStats --section MemoryWorkloadAnalysis"
step 60 ncu --kernel-name matrix_step_kernel --launch-skip 10 --launch-count 1 $S python3 -m benchmarks.step_probe --setting r0/b8/g0 --steps 12 > $OUT/ncu-r0b8.txt 2>&1
step 60 ncu --kernel-name matrix_step_kernel --launch-skip 21 --launch-count 1 $S python3 -m benchmarks.step_probe --setting r0/b4/g0 --steps 12 > $OUT/ncu-r0b4.txt 2>&1
step 150 python3 -m pytest -q -p no:cacheprovider tests/client/test_fused.py tests/client/test_refresh.py tests/client/test_kernels.py -x > $OUT/tests.log 2>&1
ls -la $OUT >> $L
