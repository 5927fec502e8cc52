#!/bin/bash
# GPU call 3 (2026-12-03): compiled fused tests after the merges, the demo with the retrained policy (issue 13),
# the step table of the grid (tf32 products at 2-8 bits, quantizer without the division correction), host profile.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
L=$OUT/run.log; t0=$(date +%s); END=575
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L
step 120 python3 -m pytest -q -p no:cacheprovider tests/client/test_fused.py tests/client/test_refresh.py > $OUT/tests.log 2>&1
step 120 python3 -m mango_cli demo --out-dir /tmp/d-bal --objective balanced --no-progress > $OUT/demo-bal.log 2>&1
step 70 python3 -m mango_cli demo --out-dir /tmp/d-lf --objective loss-first --no-progress > $OUT/demo-lf.log 2>&1
step 55 python3 -m mango_cli demo --model lm-medium --batch-size 32 --seq-len 256 --out-dir /tmp/d-lm --objective balanced --no-progress > $OUT/demo-lm.log 2>&1
{ for d in bal lf lm; do echo "=== $d"; cat /tmp/d-$d/summary.md; done; } > $OUT/demo-summaries.md 2>&1
step 110 python3 -m mango_cli bench gpu --out /tmp/g --parts step --energy-window-s 0.8 --optimizers "torch AdamW (fused),MangoAdamW r,-torch-path" > $OUT/step.log 2>&1
step 45 python3 -m mango_cli bench gpu --out /tmp/p --parts profile --step-iters 10 --optimizers "torch AdamW (fused),MangoAdamW r0/b8/g0,MangoAdamW r4/b8/g0,MangoAdamW r64/b8/g0,-torch-path,-g0." > $OUT/profile.log 2>&1
cat /tmp/g/step-gpt2.md /tmp/p/profile.md > $OUT/tables.md 2>/dev/null; cp /tmp/g/step-gpt2.json $OUT/ 2>/dev/null
ls -la $OUT >> $L
