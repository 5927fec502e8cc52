#!/bin/bash
# GPU call 1 (session 7, 2026-12-04): where rank 0 at 2-4 bits spends its time (rank-0 variants, Nsight Compute
# on the matrix kernel at 2, 4 and 8 bits), fresh H200 cost profiles for the policy (gpt-85m, lm-medium), and
# the compiled conversion / fused tests that session 6 fixed but did not rerun.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
L=$OUT/run.log; t0=$(date +%s); END=570
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >> $L
step 130 python3 -m mango_cli bench gpu --out /tmp/v --parts variants --optimizers "r0/" > $OUT/variants.log 2>&1
for s in r0/b2/g0 r0/b4/g0 r0/b8/g0; do
  step 45 ncu --kernel-name matrix_step_kernel --launch-skip 30 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats --section InstructionStats python3 -m benchmarks.step_probe --setting $s --steps 40 > $OUT/ncu-${s//\//_}.log 2>&1
done
step 170 python3 -m mango_cli profile --model gpt-85m --seq-len 256 --batch-size 16 --force --out $OUT/h200-gpt85m.json > $OUT/profile-gpt85m.log 2>&1
step 90 python3 -m mango_cli profile --model lm-medium --seq-len 256 --batch-size 32 --force --out $OUT/h200-lm-medium.json > $OUT/profile-lm-medium.log 2>&1
step 110 python3 -m pytest -q -p no:cacheprovider -rf --tb=short tests/client/test_convert.py tests/client/test_fused.py > $OUT/tests.log 2>&1
cp /tmp/v/*.md /tmp/v/*.json $OUT/ 2>/dev/null
tail -4 $OUT/tests.log >> $L
ls -la $OUT >> $L
