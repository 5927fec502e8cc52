#!/bin/bash
# GPU call 1 (session 5, 2026-12-03): compiled tests after the one-pass factored v and the projection-norm
# fusion, what each option costs (variants: projection tiles), the grid's step table.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
L=$OUT/run.log; t0=$(date +%s); END=570
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L
step 210 python3 -m pytest -q -p no:cacheprovider -rf --tb=short tests/client/test_fused.py tests/client/test_refresh.py tests/client/test_kernels.py tests/client/test_quant.py > $OUT/tests.log 2>&1
step 190 python3 -m mango_cli bench gpu --out /tmp/v --parts variants > $OUT/variants.log 2>&1
step 170 python3 -m mango_cli bench gpu --out /tmp/g --parts step --energy-window-s 0.8 --optimizers "torch AdamW (fused),MangoAdamW r,-torch-path" > $OUT/step.log 2>&1
cat /tmp/v/variants-gpt2.md /tmp/g/step-gpt2.md > $OUT/tables.md 2>/dev/null; cp /tmp/g/step-gpt2.json /tmp/v/variants-gpt2.json $OUT/ 2>/dev/null
ls -la $OUT >> $L
