#!/bin/bash
# GPU call 4 (2026-12-03): compiled fused tests after the fixes (short tracebacks), 1B rows.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
L=$OUT/run.log; t0=$(date +%s); END=230
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L
step 90 python3 -m pytest -q -p no:cacheprovider -rf --tb=line tests/client/test_fused.py tests/client/test_refresh.py > $OUT/tests.log 2>&1
step 110 python3 -m mango_cli bench gpu --out /tmp/b1 --model 1b --parts step --energy-window-s 0.8 --optimizers "torch AdamW (fused),MangoAdamW r0/b8/g0,MangoAdamW r4/b8/g0,MangoAdamW r16/b16/g0,MangoAdamW r64/b8/g0,-torch-path,-g0." > $OUT/b1.log 2>&1
cp /tmp/b1/step-1b.md $OUT/ 2>/dev/null; cp /tmp/b1/step-1b.json $OUT/ 2>/dev/null
