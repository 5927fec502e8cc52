#!/bin/bash
# GPU call 2 (session 5, 2026-12-03): compiled tests after the NF4 search and the lazy uniforms, variants
# (projection tiles, register caps, the projection norm), stochastic NF4 by the old threshold count for the
# same-run comparison, the grid's step table, apply_setting on the GPU, the 1B rows.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
L=$OUT/run.log; t0=$(date +%s); END=575
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L
step 200 python3 -m pytest -q -p no:cacheprovider -rf --tb=short tests/client/test_fused.py tests/client/test_kernels.py tests/client/test_refresh.py tests/client/test_quant.py > $OUT/tests.log 2>&1
step 80 python3 -m mango_cli bench gpu --out /tmp/v --parts variants > $OUT/variants.log 2>&1
step 30 python3 results/gpu-h200-2026-12-03-s5/nf4_count.py bench gpu --out /tmp/vc --parts variants --optimizers "r0/b4" > $OUT/variants-count.log 2>&1
step 110 python3 -m mango_cli bench gpu --out /tmp/g --parts step --energy-window-s 0.8 --optimizers "torch AdamW (fused),MangoAdamW r,-torch-path" > $OUT/step.log 2>&1
step 50 python3 -m mango_cli bench gpu --out /tmp/sw --parts switch > $OUT/switch.log 2>&1
step 100 python3 -m mango_cli bench gpu --out /tmp/b1 --model 1b --parts step --energy-window-s 0.8 --optimizers "torch AdamW (fused),MangoAdamW r0/b8/g0,MangoAdamW r0/b4/g0,MangoAdamW r4/b8/g0,MangoAdamW r64/b8/g0,-torch-path,-g0." > $OUT/b1.log 2>&1
cat /tmp/v/variants-gpt2.md /tmp/vc/variants-gpt2.md /tmp/g/step-gpt2.md /tmp/sw/*.md /tmp/b1/step-1b.md > $OUT/tables.md 2>/dev/null; cp /tmp/g/step-gpt2.json $OUT/ 2>/dev/null
ls -la $OUT >> $L
