#!/bin/bash
# Session 9, GPU call A (issue 12): what sessions 7-8 changed but could not measure. Carry .whl
# (../shared/tools/gpu-wheels.sh torchao apollo-torch flashoptim fastapi-offline tyro uvloop httptools, plus
# pytest-xdist and execnet: the compiled tests on 4 workers). Keep at most 8 files under $OUT.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; t0=$(date +%s); END=${END:-530}
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L; nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv >> $L
# 1. the compiled kernel tests (not run since session 6; sessions 7-8 changed the store and check_finite)
step 170 python3 -m pytest -q -n 4 -p no:cacheprovider -rf --tb=short tests/client/test_fused.py tests/client/test_convert.py tests/client/test_quant.py tests/client/test_kernels.py > $R/tests.log 2>&1
tail -6 $R/tests.log >> $L
# 2. setting changes after check_finite=False and the batched stores (session 7: 75.5 ms apply + 24.6 ms first step)
step 40 python3 -m benchmarks.step_probe --setting r0/b8/g0 --switch r4/b8/g0 > $R/switch-probe.log 2>&1
head -3 $R/switch-probe.log >> $L
step 50 python3 -m mango_cli bench gpu --out /tmp/sw --parts switch > $R/switch.log 2>&1
cat /tmp/sw/*.md >> $L 2>/dev/null
# 3. the grid with the peers in the same run
step 210 python3 -m mango_cli bench gpu --out /tmp/g --parts step --energy-window-s 0.3 --optimizers "torch AdamW,bnb,torchao,FlashOptim,GaLore,APOLLO,MangoAdamW r,-torch-path" > $R/step.log 2>&1
cat /tmp/g/step-gpt2.md >> $L 2>/dev/null
# 4. rank 0 at 4 bits with its options combined
step 60 python3 -m mango_cli bench gpu --out /tmp/v --parts variants --optimizers "r0/b4" > $R/variants.log 2>&1
cat /tmp/v/*.md >> $L 2>/dev/null
# 5. where r0/b4 (NF4) spends its time: full ncu set on one launch
step 90 ncu --kernel-name matrix_step_kernel --launch-skip 30 --launch-count 1 --set full python3 -m benchmarks.step_probe --setting r0/b4/g0 --steps 40 > $R/ncu-r0_b4.log 2>&1
cp -r /tmp/sw /tmp/g /tmp/v $R/ 2>/dev/null
tar czf $OUT/logs.tgz -C $R .
