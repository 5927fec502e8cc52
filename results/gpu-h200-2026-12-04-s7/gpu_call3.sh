#!/bin/bash
# GPU call 3 (session 7, the last device time): 4 bits back to one tile a program (the strip loop only at
# 2-3 bits), then the compiled fused / conversion tests and the grid's step table (Mango beside fused AdamW).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
L=$OUT/run.log; t0=$(date +%s); END=290
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L
step 80 python3 -m pytest -q -p no:cacheprovider -rf --tb=short tests/client/test_fused.py tests/client/test_convert.py > $OUT/tests.log 2>&1
tail -3 $OUT/tests.log >> $L
step 190 python3 -m mango_cli bench gpu --out /tmp/g --parts step --energy-window-s 0.3 --optimizers "torch AdamW (fused),MangoAdamW r,-torch-path" > $OUT/step.log 2>&1
cat /tmp/g/step-gpt2.md >> $L 2>/dev/null
