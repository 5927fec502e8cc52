#!/bin/bash
# GPU call 2 (2026-12-03): whole-block unmasked launches + 16-byte alignment promise: variants, ncu r0/b8,
# compiled fused/kernel tests, the step table with peers.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
L=$OUT/run.log; t0=$(date +%s); END=575
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L
step 90 python3 -m mango_cli bench gpu --out $OUT/v --parts variants >> $OUT/bench.log 2>&1
S="--section SpeedOfLight --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis --section InstructionStats --section MemoryWorkloadAnalysis"
step 40 ncu --kernel-name matrix_step_kernel --launch-skip 10 --launch-count 1 $S python3 -m benchmarks.step_probe --setting r0/b8/g0 --steps 12 > $OUT/ncu-r0b8.txt 2>&1
step 270 python3 -m mango_cli bench gpu --out $OUT/g --parts step --energy-window-s 0.8 --optimizers "torch AdamW,MangoAdamW r,bnb,torchao,FlashOptim,-torch-path" >> $OUT/step.log 2>&1
step 160 python3 -m pytest -q -p no:cacheprovider tests/client/test_fused.py tests/client/test_refresh.py tests/client/test_kernels.py -x > $OUT/tests.log 2>&1
ls -la $OUT >> $L
