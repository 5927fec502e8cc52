#!/bin/bash
# GPU call 2 (session 6, 2026-12-03): the refresh's CUDA graph: compiled fused/refresh tests (the graph test
# included), the refresh probe with and without the graph, the grid's step table.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
L=$OUT/run.log; t0=$(date +%s); END=300
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L
step 40 python3 -m benchmarks.step_probe --refresh --setting r4/b8/g0 > $OUT/probe-r4.log 2>&1
step 40 python3 -m benchmarks.step_probe --refresh --setting r64/b8/g0 > $OUT/probe-r64.log 2>&1
step 90 python3 -m pytest -q -p no:cacheprovider -rf --tb=short tests/client/test_fused.py tests/client/test_refresh.py -k "refresh or projected or graph" > $OUT/tests.log 2>&1
step 130 python3 -m mango_cli bench gpu --out /tmp/g --parts step --energy-window-s 0.5 --optimizers "torch AdamW (fused),MangoAdamW r,-torch-path" > $OUT/step.log 2>&1
cat /tmp/g/step-gpt2.md > $OUT/tables.md 2>/dev/null; tail -5 $OUT/tests.log >> $L
ls -la $OUT >> $L
