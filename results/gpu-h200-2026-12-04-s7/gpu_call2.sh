#!/bin/bash
# GPU call 2 (session 7): the factored second moment in column strips (FACTOR_ITERS tiles a program, one
# column atomic per strip): its variants (tiles walked, register caps), compiled tests of the changed kernel
# and of the conversion test's GPU tolerance, the grid's step table (Mango only), Nsight Compute at r0/b2.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; t0=$(date +%s); END=330
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L
step 100 python3 -m mango_cli bench gpu --out /tmp/v --parts variants --optimizers "r0/,r8/b4,r32/b4" > $R/variants.log 2>&1
cat /tmp/v/variants.md >> $L
step 120 python3 -m pytest -q -p no:cacheprovider -rf --tb=short tests/client/test_convert.py tests/client/test_fused.py tests/client/test_kernels.py > $R/tests.log 2>&1
tail -6 $R/tests.log >> $L
step 30 ncu --kernel-name matrix_step_kernel --launch-skip 30 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats python3 -m benchmarks.step_probe --setting r0/b2/g0 --steps 40 > $R/ncu-r0_b2.log 2>&1
step 110 python3 -m mango_cli bench gpu --out /tmp/g --parts step --energy-window-s 0.4 --optimizers "torch AdamW (fused),MangoAdamW r,-torch-path" > $R/step.log 2>&1
cat /tmp/g/step-gpt2.md >> $L 2>/dev/null; cp /tmp/v/variants.json /tmp/g/step-gpt2.json $R/ 2>/dev/null
tar czf $OUT/logs.tgz -C $R .
