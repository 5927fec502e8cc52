#!/bin/bash
# GPU call 1 (session 6, 2026-12-03): CholeskyQR2 refresh: compiled tests of the touched paths, the refresh
# probe (refresh vs plain step, profiler table), variants (refresh cost), the grid's step table, switch costs.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
L=$OUT/run.log; t0=$(date +%s); END=555
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L
for s in r4/b8/g0 r64/b8/g0; do
  step 45 python3 -m benchmarks.step_probe --refresh --setting $s > $OUT/probe-${s//\//_}.log 2>&1
done
step 110 python3 -m pytest -q -p no:cacheprovider -rf --tb=short tests/client/test_lowrank.py tests/client/test_refresh.py tests/client/test_fused.py -k "refresh or lowrank or projected or orth or switch or convert" > $OUT/tests.log 2>&1
step 150 python3 -m mango_cli bench gpu --out /tmp/g --parts step --energy-window-s 0.6 --optimizers "torch AdamW (fused),MangoAdamW r,-torch-path" > $OUT/step.log 2>&1
step 70 python3 -m mango_cli bench gpu --out /tmp/v --parts variants > $OUT/variants.log 2>&1
step 60 python3 -m mango_cli bench gpu --out /tmp/sw --parts switch > $OUT/switch.log 2>&1
# step 100 python3 -m mango_cli bench gpu --out /tmp/b1 --model 1b --parts step --energy-window-s 0.6 --optimizers "torch AdamW (fused),MangoAdamW r4/b8/g0,MangoAdamW r32/b4/g0,MangoAdamW r64/b8/g0,-torch-path,-g0." > $OUT/b1.log 2>&1
cat /tmp/g/step-gpt2.md /tmp/v/variants-gpt2.md /tmp/sw/*.md /tmp/b1/step-1b.md > $OUT/tables.md 2>/dev/null; cp /tmp/g/step-gpt2.json /tmp/sw/*.json $OUT/ 2>/dev/null
ls -la $OUT >> $L
