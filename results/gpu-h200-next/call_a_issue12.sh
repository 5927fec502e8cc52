#!/bin/bash
# Prepared in session 7 for the next first GPU call (not run in session 8 either: no device time left): what session 7 changed but could not
# measure, and the data the next kernel work needs. Carry .whl (../shared/tools/gpu-wheels.sh torchao
# apollo-torch flashoptim fastapi-offline tyro uvloop httptools). Keep at most 8 files under $OUT.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; t0=$(date +%s); END=560
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L
# 1. the compiled tests that call 3 cut at 80 s (4 bits back to one tile a program)
step 150 python3 -m pytest -q -p no:cacheprovider -rf --tb=short tests/client/test_fused.py tests/client/test_convert.py tests/client/test_quant.py > $R/tests.log 2>&1
tail -4 $R/tests.log >> $L
# 2. setting changes after check_finite=False (session 7 measured 75.5 ms apply + 24.6 ms first step before it)
step 40 python3 -m benchmarks.step_probe --setting r0/b8/g0 --switch r4/b8/g0 > $R/switch-probe.log 2>&1
head -1 $R/switch-probe.log >> $L
step 40 python3 -m mango_cli bench gpu --out /tmp/sw --parts switch > $R/switch.log 2>&1
cat /tmp/sw/*.md >> $L 2>/dev/null
# 3. where r0/b4 (NF4) spends its time now that the factored v is not the cost: full ncu set on one launch
step 90 ncu --kernel-name matrix_step_kernel --launch-skip 30 --launch-count 1 --set full python3 -m benchmarks.step_probe --setting r0/b4/g0 --steps 40 > $R/ncu-r0_b4.log 2>&1
# 4. the grid with the peers in the same run (session 6's call 3 was cut at r8: give it the rest)
step 240 python3 -m mango_cli bench gpu --out /tmp/g --parts step --energy-window-s 0.3 --optimizers "torch AdamW,bnb,torchao,FlashOptim,GaLore,APOLLO,MangoAdamW r,-torch-path" > $R/step.log 2>&1
cat /tmp/g/step-gpt2.md >> $L 2>/dev/null
tar czf $OUT/logs.tgz -C $R .
